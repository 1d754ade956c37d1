"""The live lane (issue 28): /v1/rerank latency idle and while a batch job runs on the same worker, what the
live traffic costs the batch's pairs/s, and (``--soak-seconds``) a soak: live traffic at a bounded rate over
a running night, with the RSS of the service and the worker and the ledger's job and partition counts sampled.

Starts what a deployment runs: one `celery -A worker worker -Q gpu` and `producer serve` against the Redis of
--broker (flushed) and the ledger of --database (default: a fresh SQLite file; a PostgreSQL URL also counts
its ``scores`` partitions and catalogue). Every load loop is bounded in count and time, and sends to loopback only.

Phases: idle (``--requests`` at ``--rate``/s); then a batch job through POST /v1/jobs and, while it runs,
windows of ``--window`` seconds alternating without and with live traffic (``--windows`` of each): the batch's
pairs/s per window comes from its chunks' finish times in the ledger; the live latency from the client.

    PYTHONPATH=. python bench/live_bench.py --broker redis://127.0.0.1:6379/7 --json /tmp/live.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.service_bench import percentile  # noqa: E402
from tests.corpus import rows, write_manifest  # noqa: E402
from tests.services import free_port, wait_port  # noqa: E402

MAX_REQUESTS = 100_000  # no loop sends more, whatever the arguments


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values), "p50_s": round(percentile(values, 0.5), 4), "p95_s": round(percentile(values, 0.95), 4),
        "p99_s": round(percentile(values, 0.99), 4), "max_s": round(max(values), 4),
    }  # fmt: skip


class Load:
    """Open-loop rerank requests at ``rate`` per second (each on its own thread), for at most ``count``
    requests and ``seconds`` seconds; latencies of the answered ones, and the other statuses counted."""

    def __init__(self, url: str, docs: int, tag: str):
        self.url, self.docs, self.tag = url, docs, tag
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self._lock = threading.Lock()

    def _one(self, i: int) -> None:
        body = {
            "query": f"{self.tag} {i}: what does a reranker do with this passage?",
            "documents": [f"passage {i}.{d} ({self.tag}): rerankers order candidate passages by relevance 排序 🚀" for d in range(self.docs)],
        }  # fmt: skip
        start = time.perf_counter()
        try:
            r = requests.post(self.url + "/v1/rerank", json=body, timeout=120)
            status = str(r.status_code)
        except requests.RequestException as exc:
            status = type(exc).__name__
        elapsed = time.perf_counter() - start
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == "200":
                self.latencies.append(elapsed)

    def run(self, rate: float, count: int, seconds: float) -> Load:
        count = min(count, MAX_REQUESTS)
        threads: list[threading.Thread] = []
        start = time.monotonic()
        for i in range(count):
            at = start + i / rate
            if at - start > seconds:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            t = threading.Thread(target=self._one, args=(i,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(150)
        return self


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the vLLM engine core, tokenizer helpers), MiB."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


def ledger_counts(db: str) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    with engine.connect() as conn:
        one = lambda sql: conn.execute(text(sql)).scalar()  # noqa: E731
        out = {"jobs": one("SELECT count(*) FROM jobs"), "chunks": one("SELECT count(*) FROM chunks")}
        if db.startswith("postgresql"):
            out["scores_partitions"] = one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'scores'::regclass")
            out["pg_class"] = one("SELECT count(*) FROM pg_class")
            out["database_bytes"] = one("SELECT pg_database_size(current_database())")
    engine.dispose()
    return out


def batch_rate(db: str, job: str, t0: float, t1: float) -> float:
    """The job's pairs/s over [t0, t1] (epoch seconds): pairs of its chunks finished in that window."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    with engine.connect() as conn:
        done = conn.execute(
            text("SELECT finished_at, pairs FROM chunks WHERE job_id = :j AND finished_at IS NOT NULL"), {"j": job}
        ).all()
    engine.dispose()
    pairs = 0
    for finished, n in done:
        if isinstance(finished, str):  # SQLite without type information
            finished = datetime.fromisoformat(finished)
        at = (finished if finished.tzinfo else finished.replace(tzinfo=UTC)).timestamp()
        pairs += n if t0 <= at < t1 else 0
    return round(pairs / (t1 - t0), 1)


def submit_night(url: str, tmp: Path, queries: int, docs: int, chunk_size: int, seed: int) -> str:
    manifest = write_manifest(tmp / f"night-{seed}.parquet", rows(n_queries=queries, docs_per_query=docs, seed=seed))
    r = requests.post(url + "/v1/jobs", json={"manifest": str(manifest), "chunk_size": chunk_size, "name": f"night-{seed}"}, timeout=600)
    r.raise_for_status()
    job = r.json()["job_id"]
    deadline = time.monotonic() + 600
    while requests.get(f"{url}/v1/jobs/{job}", timeout=30).json()["state"] != "running":
        if time.monotonic() > deadline:
            raise SystemExit("the batch job did not start")
        time.sleep(0.2)
    return job


def main() -> None:  # noqa: PLR0915
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True, help="a Redis URL of its own (it is flushed)")
    ap.add_argument("--database", help="the ledger (default: a fresh SQLite file); it is migrated")
    ap.add_argument("--model", default=str(Path.home() / ".cache/rerankq/tiny-qwen3-reranker"))
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--queries", type=int, default=3000, help="batch job: queries (x --docs-per-query pairs)")
    ap.add_argument("--docs-per-query", type=int, default=20)
    ap.add_argument("--chunk-size", type=int, default=400)
    ap.add_argument("--rate", type=float, default=2.0, help="live requests per second")
    ap.add_argument("--requests", type=int, default=40, help="live requests in the idle phase")
    ap.add_argument("--request-docs", type=int, default=16)
    ap.add_argument("--window", type=float, default=30.0, help="seconds per batch window, with or without live traffic")
    ap.add_argument("--windows", type=int, default=2, help="windows of each kind, alternating")
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="then live traffic over a running night this long")
    ap.add_argument("--sample-every", type=float, default=30.0, help="soak: seconds between samples")
    ap.add_argument("--worker-env", action="append", default=[], help="KEY=VALUE for the worker (repeatable)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below stops the worker and the service

    import redis

    redis.Redis.from_url(args.broker).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="rerankq-live-bench-"))
    db = args.database or f"sqlite:///{tmp / 'ledger.db'}"
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "RERANKQ_DATABASE_URL": db, "RERANKQ_BROKER_URL": args.broker,
        "RERANKQ_MODEL": args.model, "RERANKQ_MAX_LENGTH": str(args.max_length), "RERANKQ_ENFORCE_EAGER": "true",
        "RERANKQ_DTYPE": "float32", "VLLM_CPU_KVCACHE_SPACE": "1", "RERANKQ_LOG_LEVEL": "WARNING",
        "RERANKQ_MANIFEST_ROOTS": json.dumps([str(tmp)]),
    }  # fmt: skip
    worker_env = {**env, **dict(kv.split("=", 1) for kv in args.worker_env)}
    subprocess.run([sys.executable, "-m", "producer.cli", "db", "upgrade"], env=env, check=True, cwd=REPO, capture_output=True)
    worker_log = open(tmp / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "gpu", "--loglevel", "INFO"],
                              env=worker_env, cwd=REPO, stdout=worker_log, stderr=subprocess.STDOUT)  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen([sys.executable, "-m", "producer.cli", "serve", "--port", str(port)], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "ledger": db.split(":", 1)[0],
        "args": {k: str(v) for k, v in vars(args).items()},
    }  # fmt: skip
    try:
        wait_port(port, 120)
        deadline = time.monotonic() + 900
        while not any(w["state"] == "ready" for w in requests.get(f"{url}/v1/workers", timeout=30).json()):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("worker did not start:\n" + (tmp / "worker.log").read_text()[-3000:])
            time.sleep(1.0)
        Load(url, args.request_docs, "warm").run(args.rate, 3, 60)
        before = ledger_counts(db)
        idle = Load(url, args.request_docs, "idle").run(args.rate, args.requests, args.requests / args.rate + 5)
        result["idle"] = {**summary(idle.latencies), "statuses": idle.statuses}
        result["ledger_after_idle"] = {"before": before, "after": ledger_counts(db)}
        print("idle:", result["idle"], flush=True)

        job = submit_night(url, tmp, args.queries, args.docs_per_query, args.chunk_size, seed=11)
        time.sleep(min(10.0, args.window / 3))  # both chunk slots under way
        quiet_rates, live_rates, during = [], [], Load(url, args.request_docs, "night")
        for w in range(args.windows):
            t0 = time.time()
            time.sleep(args.window)
            quiet_rates.append(batch_rate(db, job, t0, time.time()))
            t0 = time.time()
            during.run(args.rate, int(args.rate * args.window), args.window)
            time.sleep(max(0.0, t0 + args.window - time.time()))
            live_rates.append(batch_rate(db, job, t0, time.time()))
            print(f"window {w}: batch {quiet_rates[-1]} pairs/s without, {live_rates[-1]} with live traffic", flush=True)
        status = requests.get(f"{url}/v1/jobs/{job}", timeout=30).json()
        live_pairs_per_s = args.rate * args.request_docs
        result["during_night"] = {**summary(during.latencies), "statuses": during.statuses}
        result["night"] = {
            "job_state_after": status["state"], "pairs_total": status["pairs_total"], "chunk_size": args.chunk_size,
            "pairs_per_s_without_live": quiet_rates, "pairs_per_s_with_live": live_rates,
            "live_pairs_per_s_offered": live_pairs_per_s,
        }  # fmt: skip
        print("during the night:", result["during_night"], result["night"], flush=True)
        requests.post(f"{url}/v1/jobs/{job}/cancel", timeout=30)

        if args.soak_seconds > 0:
            result["soak"] = soak(url, db, tmp, args, service.pid, worker.pid)
        result["machine"] = f"{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end"
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        service.terminate()
        worker.terminate()
        service.wait(30)
        worker.wait(120)


def soak(url: str, db: str, tmp: Path, args: argparse.Namespace, service_pid: int, worker_pid: int) -> dict:
    """Live traffic at ``--rate`` over a running night for ``--soak-seconds``: a new night whenever one ends."""
    samples: list[dict] = []
    start = time.monotonic()
    seed = 100
    job = submit_night(url, tmp, args.queries, args.docs_per_query, args.chunk_size, seed=seed)
    first = ledger_counts(db)
    while time.monotonic() - start < args.soak_seconds:
        span = min(args.sample_every, args.soak_seconds - (time.monotonic() - start))
        load = Load(url, args.request_docs, f"soak{len(samples)}").run(args.rate, int(args.rate * span) + 1, span)
        state = requests.get(f"{url}/v1/jobs/{job}", timeout=30).json()["state"]
        if state in ("completed", "failed", "completed_with_errors", "cancelled"):
            seed += 1
            job = submit_night(url, tmp, args.queries, args.docs_per_query, args.chunk_size, seed=seed)
        sample = {
            "t_s": round(time.monotonic() - start), **summary(load.latencies), "statuses": load.statuses,
            "service_rss_mb": rss_mb(service_pid), "worker_rss_mb": rss_mb(worker_pid), "night": state,
            "ledger": ledger_counts(db),
        }  # fmt: skip
        samples.append(sample)
        print("soak:", sample, flush=True)
    requests.post(f"{url}/v1/jobs/{job}/cancel", timeout=30)
    return {"seconds": args.soak_seconds, "rate": args.rate, "nights_submitted": seed - 99, "ledger_at_start": first, "samples": samples}


if __name__ == "__main__":
    main()
