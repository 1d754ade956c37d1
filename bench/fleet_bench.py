"""A real fleet on one ledger (issue 17): N `celery -A worker worker -Q gpu` processes with an instant
stand-in engine (bench/fleet_engine.py) on one PostgreSQL and a Redis of their own; workers are killed
(-9) during the job; then every pair must be in the ledger exactly once.

    PYTHONPATH=. python bench/fleet_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --workers 16 --pairs 200000 --chunk-size 1000 --kill 3

Workers tokenize for real (the tiny model's Qwen3 tokenizer), so on a small host the fleet is bound
by CPU, not by the ledger: this run checks correctness and the ledger's responsiveness under a fleet
(heartbeats, sweeps, `producer status`), bench/ledger_load.py measures the ledger's ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PRODUCER = str(Path(sys.executable).with_name("producer"))
sys.path.insert(0, str(REPO))

from bench.common import libpq, start_worker, stop_process_groups  # noqa: E402
from bench.reuse_bench import write_nights  # noqa: E402
from bench.write_bench import scratch  # noqa: E402
from tests.services import PrivateRedis  # noqa: E402


def _engine_pairs(folder: Path) -> int:
    return sum(int(line) for f in folder.iterdir() for line in f.read_text().split())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--kill", type=int, default=3, help="workers killed with -9 while the job runs")
    ap.add_argument("--model", default=str(Path.home() / ".cache/rerankq/tiny-qwen3-reranker"))
    ap.add_argument("--timeout", type=float, default=1200)
    args = ap.parse_args()

    from rerankq.store.db import get_engine, upgrade
    from rerankq.store.ledger import Ledger

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    counts = work / "counts"
    counts.mkdir()
    night1, _ = write_nights(work, args.pairs, 1.0)
    db, drop = scratch(args.url)
    redis = PrivateRedis()
    redis.start()
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "RERANKQ_DATABASE_URL": db, "RERANKQ_BROKER_URL": redis.url,
        "RERANKQ_MODEL": args.model, "RERANKQ_ENGINE": "bench.fleet_engine:factory", "RERANKQ_DTYPE": "float32",
        "RERANKQ_MAX_LENGTH": "512", "RERANKQ_LOG_JSON": "true", "RERANKQ_FLEET_COUNT_DIR": str(counts),
        "RERANKQ_HEARTBEAT_INTERVAL": "5", "RERANKQ_WORKER_DEAD_AFTER": "20", "RERANKQ_WARM_UP": "false",
    }  # fmt: skip
    procs: list[subprocess.Popen] = []
    result: dict = {"workers": args.workers, "pairs": args.pairs, "chunk_size": args.chunk_size, "killed": args.kill}
    try:
        upgrade(db)
        store = Ledger(db)
        t0 = time.perf_counter()
        procs += [start_worker(i, REPO, env, work / f"worker{i}.log") for i in range(args.workers)]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ready = sum(" ready." in (work / f"worker{i}.log").read_text(errors="replace") for i in range(args.workers))
            if ready == args.workers:
                break
            time.sleep(1)
        result["workers_ready_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        sub = subprocess.run(
            [PRODUCER, "submit", str(night1), "--chunk-size", str(args.chunk_size), "--no-reuse"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        job = sub.stdout.strip().splitlines()[-1].split()[-1]
        result["submit_s"] = round(time.perf_counter() - t0, 1)
        t_job = time.perf_counter()
        killed: list[int] = []
        status_lat, heartbeat_age, state = [], [], None
        while time.perf_counter() - t_job < args.timeout:
            t = time.perf_counter()
            st = store.status(job)
            status_lat.append(time.perf_counter() - t)
            done = st.chunks.done
            if len(killed) < args.kill and done >= (len(killed) + 1) * st.chunks_total / (args.kill + 2):
                victim = procs[len(killed)]
                os.killpg(victim.pid, signal.SIGKILL)  # the worker and its tokenizer helper
                killed.append(victim.pid)
            with psycopg.connect(libpq(db), autocommit=True) as conn:
                age = conn.execute("SELECT extract(epoch from now() - min(last_seen)) FROM workers WHERE state <> 'stopped'"
                                   " AND pid <> ALL(%s)", (killed,)).fetchone()[0]  # fmt: skip
            heartbeat_age.append(float(age or 0))
            state = st.state.value
            if st.state.terminal:
                break
            time.sleep(1.0)
        result["job_s"] = round(time.perf_counter() - t_job, 1)
        result["state"] = state
        result["pairs_per_s"] = round(args.pairs / result["job_s"])
        t = time.perf_counter()
        cli = subprocess.run([PRODUCER, "status", job], cwd=REPO, env=env, capture_output=True, text=True)
        result["producer_status_cli_s"] = round(time.perf_counter() - t, 2)
        assert cli.returncode == 0, cli.stderr
        result["status_ms_p50"] = round(statistics.median(status_lat) * 1000, 1)
        result["status_ms_max"] = round(max(status_lat) * 1000, 1)
        result["oldest_live_heartbeat_s_max"] = round(max(heartbeat_age), 1)
        with psycopg.connect(libpq(db), autocommit=True) as conn:
            rows, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (query_id, doc_id)) FROM scores WHERE job_id = %s", (job,)
            ).fetchone()
            chunk_states = dict(conn.execute("SELECT state, count(*) FROM chunks WHERE job_id = %s GROUP BY state", (job,)).fetchall())
            scored = conn.execute("SELECT sum(scored) FROM chunks WHERE job_id = %s", (job,)).fetchone()[0]
            reattempted = conn.execute("SELECT count(*) FROM chunks WHERE job_id = %s AND attempts > 1", (job,)).fetchone()[0]
        result.update({
            "score_rows": rows, "distinct_pairs": distinct, "chunks": chunk_states, "sum_chunk_scored": int(scored or 0),
            "chunks_attempted_twice": reattempted, "engine_pairs": _engine_pairs(counts),
        })  # fmt: skip
        result["exactly_once"] = rows == distinct == args.pairs == result["sum_chunk_scored"] and state == "completed"
        print(json.dumps(result), flush=True)
    finally:
        stop_process_groups(procs)
        redis.stop()
        get_engine(db).dispose()
        drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
