"""/v1/rerank latency with an idle worker, then while a large batch job runs on the same worker.

Starts what a deployment runs: one `celery -A worker worker -Q gpu` and `producer serve`, against the
Redis given by --broker and a fresh SQLite ledger; submits a manifest job through POST /v1/jobs; sends
rerank requests one after another (each a fresh query, so nothing is cached) and reports p50/p95/max
latency, the batch job's chunk durations (an interactive request waits at most for the chunk being
scored, then is taken first), and whether the job was still running when each request was answered.

    PYTHONPATH=. python bench/service_bench.py --broker redis://127.0.0.1:6393/5 --json /tmp/service.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.corpus import rows, write_manifest  # noqa: E402 - varied multilingual corpus
from tests.services import free_port, wait_port  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_s": round(percentile(values, 0.5), 4),
        "p95_s": round(percentile(values, 0.95), 4),
        "max_s": round(max(values), 4),
        "mean_s": round(statistics.fmean(values), 4),
    }


def rerank_once(url: str, i: int, docs: int) -> float:
    body = {
        "query": f"what does a reranker do with passage {i}?",
        "documents": [f"passage {i}.{d}: rerankers order candidate passages by relevance 排序 🚀" for d in range(docs)],
    }
    start = time.perf_counter()
    r = requests.post(url + "/v1/rerank", json=body, timeout=600)
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    assert len(r.json()["results"]) == docs
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True, help="a Redis URL of its own (it is flushed)")
    ap.add_argument("--model", default=str(Path.home() / ".cache/rerankq/tiny-qwen3-reranker"))
    ap.add_argument("--queries", type=int, default=600, help="batch job: queries (x --docs-per-query pairs)")
    ap.add_argument("--docs-per-query", type=int, default=20)
    ap.add_argument("--chunk-size", type=int, default=400)
    ap.add_argument("--requests", type=int, default=40, help="rerank requests per phase")
    ap.add_argument("--request-docs", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import redis

    redis.Redis.from_url(args.broker).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="rerankq-service-bench-"))
    db = f"sqlite:///{tmp / 'ledger.db'}"
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "RERANKQ_DATABASE_URL": db, "RERANKQ_BROKER_URL": args.broker,
        "RERANKQ_MODEL": args.model, "RERANKQ_MAX_LENGTH": str(args.max_length), "RERANKQ_ENFORCE_EAGER": "true",
        "RERANKQ_DTYPE": "float32", "VLLM_CPU_KVCACHE_SPACE": "1", "RERANKQ_LOG_LEVEL": "WARNING",
        "RERANKQ_MANIFEST_ROOTS": json.dumps([str(tmp)]),  # where the service may read the manifest it is sent
    }  # fmt: skip
    subprocess.run([sys.executable, "-m", "producer.cli", "db", "upgrade"], env=env, check=True, cwd=REPO, capture_output=True)
    worker_log = open(tmp / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "gpu", "--loglevel", "INFO"],
                              env=env, cwd=REPO, stdout=worker_log, stderr=subprocess.STDOUT)  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen([sys.executable, "-m", "producer.cli", "serve", "--port", str(port)], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port, 120)
        deadline = time.monotonic() + 600
        while " ready." not in (tmp / "worker.log").read_text(errors="replace"):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("worker did not start:\n" + (tmp / "worker.log").read_text()[-3000:])
            time.sleep(0.5)
        for i in range(3):  # warm-up
            rerank_once(url, -1 - i, args.request_docs)
        idle = [rerank_once(url, i, args.request_docs) for i in range(args.requests)]
        print(f"idle worker: {summary(idle)}", flush=True)

        manifest = write_manifest(tmp / "job.parquet", rows(n_queries=args.queries, docs_per_query=args.docs_per_query, seed=11))
        r = requests.post(url + "/v1/jobs", json={"manifest": str(manifest), "chunk_size": args.chunk_size, "name": "bench-batch"}, timeout=600)
        r.raise_for_status()
        job = r.json()["job_id"]
        while requests.get(f"{url}/v1/jobs/{job}", timeout=30).json()["state"] != "running":
            time.sleep(0.1)
        time.sleep(1.0)  # the first chunk is under way
        loaded: list[float] = []
        while_running = 0
        for i in range(args.requests):
            loaded.append(rerank_once(url, 1000 + i, args.request_docs))
            status = requests.get(f"{url}/v1/jobs/{job}", timeout=30).json()
            while_running += status["state"] == "running"
        print(f"during the batch job: {summary(loaded)}; answered while the job ran: {while_running}/{args.requests}", flush=True)
        progress = requests.get(f"{url}/v1/jobs/{job}", timeout=30).json()
        requests.post(f"{url}/v1/jobs/{job}/cancel", timeout=30)

        from sqlalchemy import select

        from rerankq.store.db import session_factory
        from rerankq.store.models import Chunk

        with session_factory(db)() as session:
            spans = session.execute(
                select(Chunk.started_at, Chunk.finished_at).where(Chunk.job_id == job, Chunk.state == "done")
            ).all()
        durations = [(f - s).total_seconds() for s, f in spans if s and f]
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            "model": args.model,
            "request": {"documents": args.request_docs, "requests_per_phase": args.requests},
            "batch_job": {"pairs": args.queries * args.docs_per_query, "chunk_size": args.chunk_size,
                          "pairs_per_second": progress["pairs_per_second"], "chunks_done_during_phase": progress["chunks"]["done"]},  # fmt: skip
            "chunk_seconds": summary(durations) if durations else None,
            "idle": summary(idle),
            "during_batch_job": summary(loaded),
            "answered_while_job_running": while_running,
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        service.terminate()
        worker.terminate()
        service.wait(30)
        worker.wait(120)


if __name__ == "__main__":
    main()
