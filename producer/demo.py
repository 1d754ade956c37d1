"""`producer demo`: the whole pipeline on one machine with embedded defaults.

SQLite for the ledger; Redis when one answers, else Kombu's SQLite-backed transport; the
configured model when its weights are here, else the tiny offline model (its scores are random).
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from rerankq.redact import mask_broker_url

TOPICS = {
    "How do solar panels generate electricity?": ("photovoltaic cells convert sunlight into electric current", "solar"),
    "What causes ocean tides?": ("the gravitational pull of the moon and sun raises tides", "tides"),
    "How do vaccines train the immune system?": ("vaccines expose the immune system to a harmless antigen", "vaccines"),
    "Why is the sky blue?": ("Rayleigh scattering of sunlight by air molecules makes the sky blue", "sky"),
    "How does a refrigerator keep food cold?": ("a refrigerant absorbs heat as it evaporates inside the fridge", "fridge"),
    "What is the capital of Japan?": ("Tokyo is the capital and largest city of Japan", "japan"),
    "How do bees make honey?": ("bees collect nectar and evaporate it into honey in the hive", "bees"),
    "什么是量子计算？": ("量子计算利用量子比特的叠加和纠缠进行计算。", "quantum"),
}
FILLER = [
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Stock markets closed higher after the central bank announcement.",
    "The football match ended in a draw after extra time.",
    "Remember to water the tomato plants every morning in summer.",
    "The museum opens a new exhibition on medieval armour next week.",
]


def sample_corpus(path: Path, queries: int, docs_per_query: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    rows: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "document": []}
    topics = list(TOPICS.items())
    for q in range(queries):
        query, (answer, tag) = topics[q % len(topics)]
        for d in range(docs_per_query):
            if d == 0:
                text = answer.capitalize() + "."
            elif d == 1:
                text = f"Background on {tag}: {answer}, as textbooks explain in detail."
            elif d == 2:
                text = f"A short note on {tag} for students."
            else:
                text = " ".join(rng.sample(FILLER, 2))
            rows["query_id"].append(f"q{q:03d}")
            rows["query"].append(query)
            rows["doc_id"].append(f"q{q:03d}-d{d:03d}")
            rows["document"].append(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path, row_group_size=64)
    return len(rows["query_id"])


def default_workdir() -> Path:
    """Outside the checkout: the demo's corpus, broker, export and worker log are scratch files."""
    return Path.home() / ".cache" / "rerankq" / "demo"


def say(console: Console, text: str) -> None:
    """One message, never wrapped inside a path or URL (a terminal folds long lines by itself)."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _broker_answers(url: str, timeout: float) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout, transport_options={"socket_connect_timeout": timeout}) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False


def choose_environment(workdir: Path, console: Console) -> dict[str, str]:
    """RERANKQ_* for this demo: what the user set, else embedded defaults that need no server."""
    from producer.tiny_model import ensure_tiny_model
    from rerankq.model_files import local_model_path
    from rerankq.settings import Settings

    settings = Settings()
    env: dict[str, str] = {}
    if not _broker_answers(settings.broker, 2):
        env["RERANKQ_BROKER_URL"] = f"sqla+sqlite:///{(workdir / 'broker.db').resolve()}"
        say(console, f"no broker answers at {mask_broker_url(settings.broker)}: using the embedded SQLite broker")
    if "RERANKQ_DATABASE_URL" not in os.environ:  # with the demo's other files, not in the current directory
        env["RERANKQ_DATABASE_URL"] = f"sqlite:///{(workdir / 'rerankq.db').resolve()}"
    if local_model_path(settings.model) is None:
        tiny = ensure_tiny_model(settings.tiny_model_dir)
        env["RERANKQ_MODEL"] = str(tiny)
        say(console, f"no local weights for {settings.model}: using the tiny offline model at {tiny} (random scores)")
    if "RERANKQ_ENFORCE_EAGER" not in os.environ and env.get("RERANKQ_MODEL"):
        env["RERANKQ_ENFORCE_EAGER"] = "true"  # starts in 40 s instead of 70 s on a CPU
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`celery -A worker worker -Q gpu`, exactly as users run it."""
    log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "gpu", "--loglevel", "INFO"],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_demo(workdir: Path, queries: int, docs_per_query: int, out: Console, err: Console) -> int:
    from rerankq.settings import get_settings

    workdir.mkdir(parents=True, exist_ok=True)
    env = choose_environment(workdir, err)
    os.environ.update(env)
    get_settings.cache_clear()  # the producer publishes on the broker chosen above (rerankq.celery_app.publisher)
    from producer.export import export_parquet, iter_ranked
    from producer.job_control import ledger
    from producer.submission import submit_manifest
    from producer.waiting import wait, waiting_note
    from rerankq.store.db import safe_url, upgrade

    settings = get_settings()
    upgrade(settings.database)
    corpus = workdir / "corpus.parquet"
    n = sample_corpus(corpus, queries, docs_per_query)
    say(err, f"ledger {safe_url(settings.database)}; corpus {corpus} ({n} pairs); starting a worker (log: {workdir / 'worker.log'}) …")
    worker = start_worker(env, workdir / "worker.log")
    try:
        job_id = submit_manifest(str(corpus), name="demo", chunk_size=max(docs_per_query * 2, 1))
        say(err, f"job {job_id} submitted; the worker loads its engine (about a minute on a CPU) …")
        t0 = time.monotonic()
        while True:
            st = wait(job_id, timeout=5)
            if st.state.terminal:
                break
            if worker.poll() is not None:
                say(err, f"the worker exited (code {worker.returncode}); see {workdir / 'worker.log'}")
                return 1
            note = waiting_note(st)
            note = f"{st.state.value}, the worker is starting" if "no worker alive" in note else note  # it is ours
            say(err, f"  {note}: {st.pairs_scored}/{st.pairs_total} pairs, {time.monotonic() - t0:.0f} s")
        rows = export_parquet(ledger(), job_id, workdir / "scores.parquet")
        say(err, f"job {job_id} {st.state.value}: {rows} rows exported to {workdir / 'scores.parquet'}")
        documents = dict(zip(*pq.read_table(corpus, columns=["doc_id", "document"]).to_pydict().values()))
        queries_text = dict(zip(*pq.read_table(corpus, columns=["query_id", "query"]).to_pydict().values()))
        table = Table("query", "rank", "score", "document", title="top documents")
        for row in iter_ranked(ledger(), job_id):
            if row["rank"] is not None and row["rank"] <= 3:
                table.add_row(queries_text[row["query_id"]], str(row["rank"]), f"{row['score']:.4f}", documents[row["doc_id"]])
        out.print(table)
        said = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        say(err, f"to go on by hand with the demo's ledger, broker and model: export {said}; then `celery -A worker worker -Q gpu` and `producer submit …`")
        return 0 if st.state.value == "completed" else 1
    finally:
        stop_worker(worker)
