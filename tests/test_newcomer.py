"""A newcomer's first hour, without a worker: install guard, no silent waits, job id prefixes,
copyable ids, tidy help and timestamps, and the JSON log plumbing (rerankq/logs.py, worker/stdio_json.py)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import ChunkCounts, ChunkHolder, JobState, JobStatus, WorkerStatus
from tests.conftest import migrate, producer
from tests.services import REDIS_URL, redis_client

REPO = Path(__file__).resolve().parents[1]
START_HINT = "no worker alive: start one with `celery -A worker worker -Q gpu`"


# --- the install guard (rerankq/torch_compat.py) --------------------------------------------------------
class Dist:
    """Package metadata as importlib.metadata gives it: a version and Requires-Dist lines."""

    def __init__(self, version: str, *requires: str):
        self.version, self.requires = version, list(requires)


@pytest.mark.parametrize(
    ("torch", "name", "dist", "hidden"),
    [
        ("2.13.0+cpu", "torchvision", Dist("0.28.0", "torch (==2.13.0)"), True),  # PyPI's CUDA build
        ("2.13.0+cpu", "torchcodec", Dist("0.17.0"), True),
        ("2.13.0+cpu", "torchaudio", Dist("2.11.0"), True),  # another torch's release, and CUDA
        ("2.13.0+cpu", "torchvision", Dist("0.28.0+cpu", "torch (==2.13.0)"), False),
        ("2.13.0+cpu", "torchaudio", Dist("2.13.0+cpu", "torch==2.13.0"), False),
        ("2.13.0", "torchvision", Dist("0.28.0", "torch (==2.13.0)"), False),  # a CUDA host
        ("2.13.0", "torchvision", Dist("0.27.0", "torch (==2.12.0)"), True),
        ("2.13.0+cu130", "torchvision", Dist("0.28.0+cu130", "torch==2.13.0"), False),
    ],
)
def test_companion_builds_that_cannot_load_are_recognised(torch: str, name: str, dist: Dist, hidden: bool):
    from rerankq.torch_compat import mismatch

    assert (mismatch(torch, name, dist) is not None) is hidden  # type: ignore[arg-type]


def test_a_mismatched_torchvision_is_invisible_to_transformers(tmp_path: Path):
    """A torchvision built for CUDA next to this CPU torch (metadata as PyPI's wheel has it, and a module
    that breaks on import as the real one does): importing rerankq hides it, transformers loads models."""
    from importlib.metadata import version

    assert version("torch").endswith("+cpu"), "this check needs the CPU torch of the test venv"
    site = tmp_path / "site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    info = site / "torchvision-0.28.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\nRequires-Dist: torch (==2.13.0)\n")
    code = (
        "import importlib.util, producer, rerankq.torch_compat as tc\n"
        "assert importlib.util.find_spec('torchvision') is None\n"
        "from transformers.utils import is_torchvision_available\n"
        "assert not is_torchvision_available()\n"
        "from transformers import Qwen3ForCausalLM\n"
        "print(tc.hidden['torchvision'])\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{site}:{REPO}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchvision 0.28.0 is not a CPU build, torch is 2.13.0+cpu" in done.stdout


# --- what a waiting job waits for (producer/waiting.py) ------------------------------------------------
def job(state: JobState, holders: list[ChunkHolder] | None = None, done: int = 0) -> JobStatus:
    now = datetime.now(UTC)
    return JobStatus(
        job_id="j", name=None, kind="inline", state=state, manifest=None, pairs_total=10, pairs_scored=0,
        pairs_failed=0, chunks_total=3, chunks=ChunkCounts(done=done), created_at=now, started_at=None,
        finished_at=None, elapsed_seconds=None, pairs_per_second=None, holders=holders or [],
    )  # fmt: skip


def worker(state: str, alive: bool = True) -> WorkerStatus:
    now = datetime.now(UTC)
    return WorkerStatus(
        worker_id=f"h:{state}", host="h", pid=1, model="m", engine={}, fingerprint=None, state=state, alive=alive,
        holding=[], pairs_scored=0, pairs_per_second=None, started_at=now, last_seen=now, seconds_since_seen=0,
    )  # fmt: skip


def test_waiting_wording():
    from producer.waiting import waiting_for

    assert waiting_for(job(JobState.queued), []) == f"queued: {START_HINT}"
    assert waiting_for(job(JobState.queued), [worker("dead", alive=False)]) == f"queued: {START_HINT}"
    assert waiting_for(job(JobState.queued), [worker("loading")]) == "queued, 1 worker loading its engine"
    two = [worker("loading"), worker("loading")]
    assert waiting_for(job(JobState.queued), two) == "queued, 2 workers loading their engines"
    assert waiting_for(job(JobState.queued), [worker("busy"), worker("loading")]) == (
        "queued, waiting for a worker (1 worker loading its engine, 1 worker busy)"
    )
    lost = [ChunkHolder(chunk=0, worker_id="gone", alive=False, last_seen=None)]
    assert waiting_for(job(JobState.running, lost, done=1), [worker("ready")]) == (
        "running: 1 of 3 chunks done, 1 held by a worker presumed dead (a live worker re-enqueues it) (1 worker ready)"
    )
    assert waiting_for(job(JobState.running), []) == f"running: {START_HINT}"
    assert waiting_for(job(JobState.completed), []) == "completed"


def test_status_of_a_job_every_pair_of_which_was_reused_says_so():
    """Issue 27: `producer status` said `chunks (of 0)` for a job whose every pair came from the cache."""
    from rich.console import Console

    from producer.commands.tables import status_table

    reused = job(JobState.completed).model_copy(update={"chunks_total": 0, "chunks": ChunkCounts(), "pairs_reused": 10})
    console = Console(width=120, record=True)
    console.print(status_table(reused))
    text = console.export_text()
    assert re.search(r"^ chunks +none: every pair came from the score cache *$", text, re.M), text
    assert "(of 0)" not in text
    console.print(status_table(job(JobState.running, done=1)))
    assert re.search(r"^ chunks +done 1 \(of 3\) *$", console.export_text(), re.M)


# --- the CLI, on a real ledger and broker, with no worker --------------------------------------------------
@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    broker = f"{REDIS_URL}/12"
    redis_client(broker).flushdb()
    return {"RERANKQ_DATABASE_URL": url, "RERANKQ_BROKER_URL": broker, "COLUMNS": "80"}


def state_of(job_id: str, env: dict[str, str]) -> str:
    return json.loads(producer("status", job_id, "--json", env=env, check=True).stdout)["state"]


def test_rerank_with_no_worker_says_so_and_cancels_its_job(env):
    result = producer("rerank", "-q", "capital of China?", "-d", "Beijing", "--timeout", "2", env=env)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"queued: {START_HINT}", "it says what it waits for while it waits"
    assert re.fullmatch(rf"error: job ([0-9a-f-]{{36}}) still queued after 2 s, so it was cancelled; {re.escape(START_HINT)}", lines[-1])
    job_id = lines[-1].split()[2]
    assert state_of(job_id, env) == "cancelled"


def test_rerank_whose_job_no_worker_takes_is_cancelled_at_its_timeout(env):
    from rerankq.store.registry import Registry, WorkerInfo

    registry = Registry(env["RERANKQ_DATABASE_URL"])
    registry.register(WorkerInfo("gpu-host:7:abc", "gpu-host", 7, "Qwen/Qwen3-Reranker-0.6B"))
    registry.heartbeat("gpu-host:7:abc", state="ready")  # alive and ready, but it never takes a chunk
    result = producer("rerank", "-q", "capital of China?", "-d", "Beijing", "--timeout", "2", env=env)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "queued, waiting for a worker (1 worker ready)", "it says what it waits for while it waits"
    assert re.fullmatch(r"error: job ([0-9a-f-]{36}) still queued after 2 s, so it was cancelled; 1 worker ready", lines[-1])
    assert state_of(lines[-1].split()[2], env) == "cancelled"


def test_rerank_while_a_worker_loads_says_so(env):
    from rerankq.store.registry import Registry, WorkerInfo

    Registry(env["RERANKQ_DATABASE_URL"]).register(WorkerInfo("gpu-host:7:abc", "gpu-host", 7, "Qwen/Qwen3-Reranker-0.6B"))  # loading
    result = producer("rerank", "-q", "q", "-d", "d", "--timeout", "2", env=env)
    assert result.returncode == 3
    assert result.stderr.startswith("queued, 1 worker loading its engine\n"), result.stderr
    assert result.stderr.rstrip().endswith("so it was cancelled; 1 worker loading its engine"), result.stderr


def test_wait_says_what_it_waits_for(env):
    from producer.submission import submit_pairs
    from rerankq.settings import Settings

    job_id = submit_pairs(
        [{"query_id": "q", "doc_id": "d", "query": "q", "document": "d"}],
        settings=Settings(database_url=env["RERANKQ_DATABASE_URL"], broker_url=env["RERANKQ_BROKER_URL"]),
    )
    result = producer("wait", job_id[:8], "--timeout", "1", env=env)
    assert result.returncode == 2
    assert f"queued: {START_HINT}" in result.stderr
    assert f"timeout: job {job_id} is still queued: {START_HINT}" in result.stderr


def test_hints_name_the_model_when_it_is_not_the_default():
    """Issue 27: a worker of a model directory needs RERANKQ_MODEL set: the hint says so."""
    from producer.waiting import no_worker, start_a_worker, waiting_for

    assert start_a_worker("Qwen/Qwen3-Reranker-0.6B") == "start one with `celery -A worker worker -Q gpu`"
    assert start_a_worker("/data/my model") == "start one with `RERANKQ_MODEL='/data/my model' celery -A worker worker -Q gpu`"
    tiny = job(JobState.queued).model_copy(update={"model": "/home/me/tiny"})
    assert waiting_for(tiny, []) == "queued: no worker alive: start one with `RERANKQ_MODEL=/home/me/tiny celery -A worker worker -Q gpu`"
    assert no_worker("/home/me/tiny", [worker("dead", alive=False)]).endswith("`RERANKQ_MODEL=/home/me/tiny celery -A worker worker -Q gpu`")


def test_a_worker_whose_engine_cannot_load_reads_failed_at_once_and_says_what_to_do(env, tmp_path: Path):
    """Issue 27: offline, without the model's files, `celery -A worker worker -Q gpu` exits at once; the
    registry says `failed` (not `loading` for a minute, then `dead`), with the error and what to do, and
    every command that waits says it instead of waiting."""
    from producer.submission import submit_pairs
    from rerankq.settings import Settings

    home = tmp_path / "home"  # no Hugging Face cache: the default model's files are not here
    home.mkdir()
    worker_env = {**os.environ, **env, "HOME": str(home), "HF_HUB_OFFLINE": "1", "RERANKQ_WORKER_DEAD_AFTER": "600",
                  "PYTHONPATH": str(REPO)}  # fmt: skip
    worker_env.pop("RERANKQ_MODEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "gpu"], env=worker_env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    tiny_dir = home / ".cache" / "rerankq" / "tiny-qwen3-reranker"
    hint = (
        "the files of Qwen/Qwen3-Reranker-0.6B are not on this machine and could not be downloaded: download them "
        "once with network access (`hf download Qwen/Qwen3-Reranker-0.6B`), or point RERANKQ_MODEL at a model "
        f"directory, e.g. the tiny random-weight model that `producer dev tiny-model DIR` writes (the demo's is {tiny_dir}): "
        "`RERANKQ_MODEL=DIR celery -A worker worker -Q gpu`"
    )
    assert hint in done.stderr
    listed = json.loads(producer("workers", "--json", env={**env, "RERANKQ_WORKER_DEAD_AFTER": "600"}, check=True).stdout)
    assert [(w["state"], w["alive"]) for w in listed] == [("failed", False)], "failed at once, though its last beat is fresh"
    assert listed[0]["error"].startswith("Cannot find an appropriate cached snapshot folder") and listed[0]["error"].endswith(hint)
    table = producer("workers", env={**env, "RERANKQ_WORKER_DEAD_AFTER": "600", "COLUMNS": "200"})
    assert re.search(r"^│ failed │", table.stdout, re.M), table.stdout
    said = f"no worker alive (the last worker to start failed to load its engine: {listed[0]['error']}): " \
        "start one with `celery -A worker worker -Q gpu`"  # fmt: skip
    assert " ".join(table.stderr.split()) == " ".join(said.split())
    job_id = submit_pairs(
        [{"query_id": "q", "doc_id": "d", "query": "q", "document": "d"}],
        settings=Settings(database_url=env["RERANKQ_DATABASE_URL"], broker_url=env["RERANKQ_BROKER_URL"]),
    )
    status = json.loads(producer("status", job_id, "--json", env=env, check=True).stdout)
    assert status["waiting"] == f"queued: {said}"


def test_manifest_problems_are_listed_in_row_order(env, tmp_path: Path):
    """Issue 27: a batch's column checks ran before its query checks, so the problems came out of row order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "query_id": ["q1", "q1", "q1", "q2", "q1", None, "q3"],
        "query": ["a", "a", "a", "b", "a", "c", ""],
        "doc_id": ["d1", "d1", "d2", "d1", "d3", "d1", "d1"],
        "document": ["x", "x", "", "y", "z", "w", "v"],
    }
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(columns), path)
    result = producer("submit", str(path), env=env)
    assert result.returncode == 3, result.stderr
    rows = [int(m.group(1)) for m in re.finditer(r" row (\d+) field", result.stderr)]
    assert rows == [1, 2, 4, 5, 6], result.stderr  # duplicate, empty document, q1 again, null query_id, empty query
    assert "duplicate pair (query_id='q1', doc_id='d1')" in result.stderr.splitlines()[1]


def test_job_id_prefixes_like_git(env, tmp_path: Path):
    from producer.job_control import ledger
    from rerankq.settings import Settings

    settings = Settings(database_url=env["RERANKQ_DATABASE_URL"], broker_url=env["RERANKQ_BROKER_URL"])
    store = ledger(settings)
    from rerankq.store.records import NewChunk

    ids = [store.create_job(kind="inline", chunks=[NewChunk({"kind": "inline", "pairs": []}, 0)])[0] for _ in range(17)]
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)  # 17 ids, 16 digits
    clashing = sorted(i for i in ids if i.startswith(shared))

    ambiguous = producer("status", shared, env=env)
    assert ambiguous.returncode == 3 and ambiguous.stderr.count("\n") == 1, ambiguous.stderr
    assert ambiguous.stderr.startswith(f"error: job id prefix '{shared}' is ambiguous: it matches ")
    assert all(i in ambiguous.stderr for i in clashing)

    unknown = producer("status", "zz", env=env)
    assert (unknown.returncode, unknown.stderr) == (3, "error: no job 'zz' in the ledger (see `producer list`)\n")

    target = ids[0]
    prefix = next(target[:n] for n in range(1, 37) if sum(i.startswith(target[:n]) for i in ids) == 1)
    assert target in producer("status", prefix, env=env, check=True).stdout
    assert producer("cancel", prefix, env=env, check=True).stdout.strip() == "cancelled"
    assert producer("resume", prefix, env=env, check=True).stdout.strip() == "0 chunk(s) enqueued"
    assert producer("retry", prefix, env=env, check=True).stdout.strip() == "0 failed chunk(s) enqueued"
    assert producer("wait", prefix, env=env).returncode == 1  # cancelled
    out = tmp_path / "scores.parquet"
    producer("export", prefix, "--out", str(out), env=env, check=True)
    assert out.exists()


def test_list_shows_whole_ids_and_status_times_to_the_second(env):
    from producer.submission import submit_pairs
    from rerankq.settings import Settings

    settings = Settings(database_url=env["RERANKQ_DATABASE_URL"], broker_url=env["RERANKQ_BROKER_URL"])
    ids = [submit_pairs([{"query_id": "q", "doc_id": "d", "query": "q", "document": "d"}], name=f"n{i}", settings=settings) for i in range(2)]
    listed = producer("list", env=env, check=True).stdout  # COLUMNS=80, as in the report
    assert all(i in listed.split() for i in ids), listed
    status = producer("status", ids[0], env=env, check=True).stdout
    assert re.search(r"created\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s*$", status, re.M), status
    assert f"waiting queued: {START_HINT}" in " ".join(status.split()), status


def test_help_has_no_type_after_flags(env):
    for command in ("submit", "status", "list", "rerank"):
        shown = producer(command, "--help", env=env, check=True).stdout
        assert "<bool>" not in shown, shown


# --- JSON logs ----------------------------------------------------------------------------------------------
def test_stdlib_records_are_json_misleading_warning_dropped_noise_once():
    import structlog

    from rerankq.logs import configure_logging, get_logger

    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging("INFO", True, stream)
        vllm = logging.getLogger("vllm.entrypoints.pooling.scoring.io_processor")
        vllm.warning("Serving an original Qwen3 reranker (%s) without a --chat-template. ...", "/m")
        for _ in range(4):
            logging.getLogger("vllm.v1.worker.cpu_worker").warning(
                "CPU backend doesn't allow to use `torch.set_num_threads` after the thread binding, skip it."
            )
        logging.getLogger("celery.apps.worker").info("%s ready.", "celery@h")
        get_logger("rerankq.worker").info("engine_ready", model="m")
    finally:
        import rerankq.logs as logs

        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])
        logs._handler = logs._stream = None
        logging.captureWarnings(False)
        structlog.reset_defaults()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    texts = [e["event"] for e in events]
    assert not any("Qwen3 reranker" in t for t in texts)
    assert sum("set_num_threads" in t for t in texts) == 1
    assert {"event": "celery@h ready.", "logger": "celery.apps.worker", "level": "info"}.items() <= events[1].items()
    assert {"event": "engine_ready", "model": "m", "logger": "rerankq.worker"}.items() <= events[2].items()


def test_output_outside_logging_is_wrapped_even_from_a_dying_process():
    code = (
        "import os, sys\n"
        "from worker.stdio_json import install\n"
        "stream = install()\n"
        "stream.write('{\"event\": \"already json\"}\\n'); stream.flush()\n"
        "print('plain print'); sys.stdout.flush()\n"
        "os.write(2, b'[W C++ warning]\\nprogress 10%\\rprogress 100%\\n\\x1b[31mred\\x1b[0m\\n')\n"
        "os.write(2, b'last words without a newline')\n"
        "os._exit(2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).decode().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    by_text = {e["event"]: e for e in events}
    assert set(by_text) == {"already json", "plain print", "[W C++ warning]", "progress 10%", "progress 100%", "red", "last words without a newline"}
    assert by_text["plain print"]["logger"] == "stdout" and by_text["[W C++ warning]"]["level"] == "warning"
    # (run() returned: the relay drained everything and exited by itself once the writer was gone)


# --- the second hour (issue 19): the CLI's items ------------------------------------------------------------
def scored_job(env: dict[str, str], scores: dict[tuple[str, str], float | None], name: str | None = None) -> str:
    """A job whose one chunk a worker scored as given (None: a per-pair error), written as a worker writes it."""
    from producer.job_control import ledger
    from rerankq.settings import Settings
    from rerankq.store.records import NewChunk, ScoreRow
    from schemas import InlinePair, InlineSpec

    store = ledger(Settings(database_url=env["RERANKQ_DATABASE_URL"], broker_url=env["RERANKQ_BROKER_URL"]))
    pairs = [InlinePair(query_id=q, doc_id=d, query="q", document="d") for q, d in scores]
    spec = InlineSpec(pairs=pairs).model_dump(mode="json")
    job, (msg,) = store.create_job(kind="inline", name=name, chunks=[NewChunk(spec, len(pairs))])
    store.begin_chunk(job, msg.chunk_id, "w", "m")
    store.finish_chunk(job, msg.chunk_id, [ScoreRow(q, d, s, None if s is not None else "bad") for (q, d), s in scores.items()])
    return job


def unique_prefix(job_id: str, others: list[str]) -> str:
    return next(job_id[:n] for n in range(4, 37) if not any(o.startswith(job_id[:n]) for o in others if o != job_id))


# Night 1 and night 2 of test_reuse.py's changes test: (a, 2) changed; (a, 3), (b, 1), (b, 2) only moved.
OLD = {("a", "1"): 0.9, ("a", "2"): 0.5, ("a", "3"): 0.1, ("b", "1"): 0.3, ("b", "2"): 0.2, ("c", "1"): 0.4}
NEW = {("a", "1"): 0.9, ("a", "2"): 0.05, ("a", "3"): 0.1, ("b", "1"): 0.3, ("b", "2"): 0.2, ("b", "9"): 0.8, ("d", "1"): None}


def test_diff_takes_job_id_prefixes(env):
    """Item 2: `producer diff 9b79 8a9a` works as `status 9b79` does."""
    old, new = scored_job(env, OLD), scored_job(env, NEW)
    result = producer("diff", unique_prefix(old, [new]), unique_prefix(new, [old]), "--json", env=env)
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    assert (d["old_job"], d["job"]) == (old, new)
    assert (d["unchanged"], d["changed"], d["moved"], d["new"], d["removed"]) == (1, 1, 3, 2, 1)
    unknown = producer("diff", "zz", new[:8], env=env)
    assert (unknown.returncode, unknown.stderr) == (3, "error: no job 'zz' in the ledger (see `producer list`)\n")


@pytest.mark.parametrize(
    ("args", "option"), [(("prune", "--jobs-older-than"), "--jobs-older-than"), (("cache", "prune", "--unused-for"), "--unused-for")]
)
def test_retention_refuses_an_age_without_a_unit(env, args: tuple[str, ...], option: str):
    """Item 3: a bare number (which the age parser reads as seconds) never reaches a destructive command."""
    for bare in ("30", "1.5"):
        result = producer(*args, bare, "--dry-run", env=env)
        assert result.returncode == 3, result.stderr
        assert result.stderr == f"error: {option} {bare}: a bare number is refused, give a unit: e.g. {bare}d (s, m, h, d or w)\n"
    assert producer(*args, "30d", "--dry-run", env=env).returncode == 0


def test_cache_prune_says_its_granularity_under_a_day(env):
    """Issue 27: `cache prune --unused-for 1s` deleted nothing and said nothing of why (use is kept by day)."""
    short = producer("cache", "prune", "--unused-for", "1s", "--dry-run", env={**env, "COLUMNS": "400"})
    assert short.returncode == 0, short.stderr
    assert short.stderr.startswith("note: --unused-for 1s is under a day, the cache's granularity: use is recorded by the UTC day"), short.stderr
    assert "nothing written today is deleted; give days, e.g. --unused-for 30d" in short.stderr
    assert short.stdout.startswith("would delete 0 cache entries unused since ")
    day = producer("cache", "prune", "--unused-for", "1d", "--dry-run", env=env)
    assert day.returncode == 0 and day.stderr == "", day.stderr
    assert "so an age under 1d deletes nothing written today" in producer("cache", "prune", "--help", env={**env, "COLUMNS": "400"}).stdout


def test_list_hides_interactive_jobs_and_counts_reused_pairs_as_done(env):
    """Items 7 and 1: rerank requests' jobs are listed only with --interactive, and a nightly job whose
    pairs were mostly reused reads as done: 2,001 / 2,001 (1,794 reused)."""
    from sqlalchemy import create_engine, update

    from rerankq.store.jobs import INTERACTIVE_JOB_NAME
    from rerankq.store.models import Job

    nightly = scored_job(env, {("q", str(i)): i / 207 for i in range(207)}, name="nightly")
    engine = create_engine(env["RERANKQ_DATABASE_URL"])
    with engine.begin() as conn:  # as a submission that found 1,794 of its 2,001 pairs in the score cache records it
        conn.execute(update(Job).where(Job.id == nightly).values(pairs_reused=1794, pairs_total=2001))
    engine.dispose()
    interactive = scored_job(env, {("q", "0"): 0.5}, name=INTERACTIVE_JOB_NAME)
    wide = {**env, "COLUMNS": "200"}

    listed = producer("list", env=wide, check=True).stdout
    assert nightly in listed and interactive not in listed
    assert "2,001 / 2,001 (1,794 reused)" in listed
    assert [j["job_id"] for j in json.loads(producer("list", "--json", env=env, check=True).stdout)] == [nightly]
    everything = producer("list", "--interactive", env=wide, check=True).stdout
    assert nightly in everything and interactive in everything
    assert [j["job_id"] for j in json.loads(producer("list", "--interactive", "--json", env=env, check=True).stdout)] == [interactive, nightly]


def test_list_and_status_break_no_word_at_80_columns(env):
    """Item 11: at 80 columns every line fits, ids stay whole, and what wraps wraps at spaces: each word
    printed at 80 columns is a word of the same output at 200 (a folded word would be two pieces)."""
    names = ["nightly-2026-11-30", "weekly rebuild of the legal corpus", "x"]
    jobs = [scored_job(env, {("q", "1"): 0.5, ("q", "2"): None}, name=n) for n in names]
    for args in (("list",), ("status", jobs[1])):
        narrow = producer(*args, env={**env, "COLUMNS": "80"}, check=True).stdout
        wide = producer(*args, env={**env, "COLUMNS": "200"}, check=True).stdout
        assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
        headings = {"job", "/", "created", "(UTC),", "name"}  # the narrow list's first heading
        words = {w for w in narrow.split() if set(w) != {"─"}}  # the heading's rule has the table's width
        assert words <= set(wide.split()) | headings, narrow
    narrow_list = producer("list", env={**env, "COLUMNS": "80"}, check=True).stdout
    assert all(j in narrow_list.split() for j in jobs) and "completed_with_errors" in narrow_list.split()
    assert "weekly rebuild of the legal corpus" in " ".join(narrow_list.split())


def test_json_output_ends_with_a_newline(env):
    """Item 11: `--json` is one JSON document and a newline, as shells and `jq` expect."""
    old, new = scored_job(env, OLD), scored_job(env, NEW)
    for args in (("list", "--json"), ("status", new, "--json"), ("workers", "--json"), ("diff", old, new, "--json")):
        shown = producer(*args, env=env, check=True).stdout
        assert shown.endswith("}\n") or shown.endswith("]\n"), (args, shown[-20:])
        json.loads(shown)


def test_submit_wait_prints_the_job_id_before_it_waits(env, tmp_path: Path):
    """Item 8: the id is on stdout as soon as the job is recorded, so Ctrl-C never leaves a job without one."""
    import select

    from tests.corpus import rows, write_manifest

    manifest = write_manifest(tmp_path / "m.parquet", rows(n_queries=2, docs_per_query=3, seed=1))
    exe = Path(sys.executable).with_name("producer")
    proc = subprocess.Popen([str(exe), "submit", str(manifest), "--wait"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no job id within 60 s"
        job_id = proc.stdout.readline().strip()
        assert proc.poll() is None, "submit --wait was still waiting (no worker) when the id came"
    finally:
        proc.terminate()
        proc.wait(30)
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id), job_id
    assert state_of(job_id, env) == "queued"


def test_changes_export_leaves_moves_out_or_keeps_those_across_the_top_k(env, tmp_path: Path):
    """Item 10: most changes are rank-only moves; --no-moves drops them, --top-k K keeps only the moves
    into or out of a query's top K. Changed, new and removed pairs always stay."""
    import pyarrow.parquet as pq

    old, new = scored_job(env, OLD), scored_job(env, NEW)

    def changes(*args: str) -> dict[tuple[str, str], tuple[str, int | None, int | None]]:
        out = tmp_path / "changes.parquet"
        producer("export", new, "--changes-since", old, "--out", str(out), *args, env=env, check=True)
        return {(r["query_id"], r["doc_id"]): (r["change"], r["old_rank"], r["new_rank"]) for r in pq.read_table(out).to_pylist()}

    always = {("a", "2"): ("changed", 2, 3), ("b", "9"): ("new", None, 1), ("c", "1"): ("removed", 1, None), ("d", "1"): ("new", None, None)}
    moves = {("a", "3"): ("moved", 3, 2), ("b", "1"): ("moved", 1, 2), ("b", "2"): ("moved", 2, 3)}
    assert changes() == always | moves
    assert changes("--no-moves") == always
    assert changes("--top-k", "1") == always | {("b", "1"): moves[("b", "1")]}  # leaves the top 1
    assert changes("--top-k", "2") == always | {k: moves[k] for k in (("a", "3"), ("b", "2"))}  # enters, leaves
    both = producer("export", new, "--changes-since", old, "--out", str(tmp_path / "c.parquet"), "--no-moves", "--top-k", "2", env=env)
    assert both.returncode == 3 and both.stderr.startswith("error: --no-moves leaves out every rank-only move")


def test_export_writes_csv_or_refuses_a_suffix_it_does_not_write(env, tmp_path: Path):
    """Item 15: `--out scores.csv` is CSV; a suffix that is neither Parquet nor CSV is refused, no file made."""
    import csv

    import pyarrow.parquet as pq

    old, new = scored_job(env, OLD), scored_job(env, NEW)
    producer("export", new, "--out", str(tmp_path / "scores.csv"), env=env, check=True)
    with open(tmp_path / "scores.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["query_id"], r["doc_id"], r["rank"]) for r in table[:3]] == [("a", "1", "1"), ("a", "3", "2"), ("a", "2", "3")]
    assert len(table) == len(NEW) and table[0]["score"] == "0.9"
    producer("export", new, "--changes-since", old, "--out", str(tmp_path / "changes.csv"), env=env, check=True)
    assert (tmp_path / "changes.csv").read_text().startswith('"query_id","doc_id","change","old_score"')
    producer("export", new, "--out", str(tmp_path / "scores.parquet"), env=env, check=True)
    assert pq.read_table(tmp_path / "scores.parquet").num_rows == len(NEW)
    refused = producer("export", new, "--out", str(tmp_path / "scores.txt"), env=env)
    assert refused.returncode == 3 and "Parquet (FILE.parquet) or CSV (FILE.csv)" in refused.stderr
    # No suffix asks for no single file: a Parquet dataset directory (issue 30), complete once _SUCCESS is there.
    producer("export", new, "--out", str(tmp_path / "scores"), env=env, check=True)
    assert (tmp_path / "scores" / "_SUCCESS").is_file()
    assert pq.read_table(tmp_path / "scores").num_rows == len(NEW)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("scores")) == [
        "scores",
        "scores.csv",
        "scores.parquet",
    ]


def test_every_option_and_argument_has_help_and_docstrings_are_not_hard_wrapped():
    """Item 14: diff's arguments and every --json had no help; a docstring wrapped at 100 columns printed
    as ragged lines (typer keeps a paragraph's line breaks), so each paragraph is one line."""
    import typer.main

    from producer.cli import app

    def commands(cmd, path):  # noqa: ANN001, ANN202
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from commands(sub, [*path, name])
        if not hasattr(cmd, "commands"):
            yield " ".join(path), cmd

    found = dict(commands(typer.main.get_command(app), []))
    assert {"diff", "list", "status", "workers", "export", "cache prune"} <= set(found)
    missing = [f"{path} {p.name}" for path, cmd in found.items() for p in cmd.params if p.name != "help" and not p.help]
    assert missing == []
    ragged = [path for path, cmd in found.items() if any("\n" in para.strip() for para in (cmd.help or "").split("\n\n"))]
    assert ragged == []


def test_the_python_api_does_not_log_to_the_users_console():
    """Item 15: rerankq's records go through the stdlib logger tree; nothing shows until the application
    configures logging (structlog's default would print every event on stdout)."""
    emit = "from rerankq.logs import get_logger; log = get_logger('rerankq.reuse'); log.info('reuse_staged', pairs=3); log.warning('careful')"
    silent = subprocess.run([sys.executable, "-c", f"import producer; {emit}"], capture_output=True, text=True, timeout=120)
    assert (silent.returncode, silent.stdout, silent.stderr) == (0, "", "")
    configured = subprocess.run(
        [sys.executable, "-c", f"import logging; logging.basicConfig(level=logging.INFO); import producer; {emit}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "reuse_staged" in configured.stderr and "careful" in configured.stderr and configured.stdout == ""
