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
import redis

from schemas import ChunkCounts, ChunkHolder, JobState, JobStatus, WorkerStatus
from tests.conftest import migrate, producer
from tests.services import REDIS_URL

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


# --- the CLI, on a real ledger and broker, with no worker --------------------------------------------------
@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    broker = f"{REDIS_URL}/12"
    redis.Redis.from_url(broker).flushdb()
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


def test_rerank_while_a_worker_loads_says_so(env):
    from rerankq.store.registry import Registry, WorkerInfo

    Registry(env["RERANKQ_DATABASE_URL"]).register(WorkerInfo("gpu-host:7:abc", "gpu-host", 7, "m"))  # state: loading
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
