"""Two nights on PostgreSQL, end to end with real workers (issue 17): night 1 scores everything, night 2
(the same manifest with a share of the documents edited) reuses the rest; then the exports, the
changes export, `diff`, `prune` and `cache prune`. Every step is the `producer` command a user runs,
timed, with its peak RSS (/usr/bin/time). Workers are real `celery -A worker worker -Q gpu` processes
with the instant engine (bench/fleet_engine.py): they read and tokenize for real, so on a small host
night 1 is bound by the workers' CPU.

    PYTHONPATH=. python bench/nights_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --pairs 2000000 --workers 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PRODUCER = str(Path(sys.executable).with_name("producer"))
sys.path.insert(0, str(REPO))

from bench.common import fleet_env, libpq, start_worker, stop_process_groups, wait_workers_ready  # noqa: E402
from bench.reuse_bench import write_nights  # noqa: E402
from bench.write_bench import scratch  # noqa: E402
from tests.services import PrivateRedis  # noqa: E402


def step(name: str, args: list[str], env: dict, out: list) -> str:
    """One producer command, timed, with its peak RSS; returns its stdout."""
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", PRODUCER, *args], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if p.returncode not in (0, 1):  # wait/diff exit 1 for some outcomes
        raise RuntimeError(f"producer {' '.join(args)} exited {p.returncode}: {p.stderr[-2000:]}")
    rss_kb = int(p.stderr.strip().splitlines()[-1])
    row = {"step": name, "seconds": round(seconds, 1), "peak_rss_mb": round(rss_kb / 1024)}
    out.append(row)
    print(json.dumps(row), flush=True)
    return p.stdout


def sizes(db: str) -> dict:
    with psycopg.connect(libpq(db), autocommit=True) as conn:
        scores = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relname ~ '^scores_[0-9a-f]{32}$'"
        ).fetchone()[0]
        cache = conn.execute("SELECT pg_total_relation_size('score_cache')").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM scores").fetchone()[0]
        entries = conn.execute("SELECT count(*) FROM score_cache").fetchone()[0]
    return {"score_rows": rows, "scores_mb": round(scores / 2**20), "cache_entries": entries, "cache_mb": round(cache / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--unchanged", type=float, default=0.95)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--model", default=str(Path.home() / ".cache/rerankq/tiny-qwen3-reranker"))
    args = ap.parse_args()

    from rerankq.store.db import get_engine, upgrade

    work = Path(tempfile.mkdtemp(prefix="nights-bench-"))
    t = time.perf_counter()
    night1, night2 = write_nights(work, args.pairs, args.unchanged)
    print(json.dumps({"manifests_s": round(time.perf_counter() - t, 1), "pairs": args.pairs}), flush=True)
    db, drop = scratch(args.url)
    redis = PrivateRedis()
    redis.start()
    env = fleet_env(REPO, db, redis.url, args.model, args.chunk_size)
    procs: list[subprocess.Popen] = []
    steps: list[dict] = []
    try:
        upgrade(db)
        logs = [work / f"worker{i}.log" for i in range(args.workers)]
        procs += [start_worker(i, REPO, env, log) for i, log in enumerate(logs)]
        wait_workers_ready(logs)
        job1 = step("night 1: submit", ["submit", str(night1), "--name", "night-1"], env, steps).strip().split()[-1]
        step("night 1: wait (workers score)", ["wait", job1, "--timeout", "7200"], env, steps)
        print(json.dumps({"after": "night 1", **sizes(db)}), flush=True)
        step("night 1: export", ["export", job1, "--out", str(work / "n1.parquet")], env, steps)
        job2 = step("night 2: submit (reuse)", ["submit", str(night2), "--name", "night-2"], env, steps).strip().split()[-1]
        step("night 2: wait", ["wait", job2, "--timeout", "7200"], env, steps)
        print(json.dumps({"after": "night 2", **sizes(db)}), flush=True)
        step("night 2: export", ["export", job2, "--out", str(work / "n2.parquet")], env, steps)
        step("night 2: export --changes-since", ["export", job2, "--changes-since", job1, "--out", str(work / "ch.parquet")], env, steps)
        step("diff", ["diff", job1, job2], env, steps)
        import pyarrow.parquet as pq

        rows = {n: pq.ParquetFile(work / f"{n}.parquet").metadata.num_rows for n in ("n1", "n2", "ch")}
        print(json.dumps({"export_rows": rows}), flush=True)
        with psycopg.connect(libpq(db), autocommit=True) as conn:  # night 1 is 40 days old
            conn.execute("UPDATE jobs SET finished_at = now() - interval '40 days' WHERE id = %s", (job1,))
        step("prune --jobs-older-than 30d (night 1)", ["prune", "--jobs-older-than", "30d"], env, steps)
        step("cache prune --unused-for 30d", ["cache", "prune", "--unused-for", "30d"], env, steps)
        print(json.dumps({"after": "prune", **sizes(db)}), flush=True)
    finally:
        stop_process_groups(procs)
        redis.stop()
        get_engine(db).dispose()
        drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
