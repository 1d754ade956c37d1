"""How soon the GPUs get work (issue 30): the time from `producer submit` starting to the first chunk
queued (its ``enqueued_at`` in the ledger) and to the first chunk scored (its ``finished_at``), the
submit's wall time and per-pair cost, on PostgreSQL, for two nights of the same corpus (night 1 scores
everything, night 2 reuses the unchanged 95 %). Run for this checkout ("after": streaming submission)
and, in the same run, for an earlier commit ("before", checked out in a git worktree with its own
database, workers and producer), so both see the same machine and manifests.

Workers are real `celery -A worker worker -Q gpu` processes with the instant engine
(bench/fleet_engine.py): they read and tokenize for real. Times in the ledger are the producer's and
workers' clocks, on this same host. ``producer_cpu_s``: the submit process's user + system CPU
(/usr/bin/time), its per-pair cost on a shared host where wall times say little.

    PYTHONPATH=. python bench/first_chunk_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --pairs 2000000 --before 59a61dd [--no-night2 | --cached-night1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PRODUCER = str(Path(sys.executable).with_name("producer"))
sys.path.insert(0, str(REPO))

from bench.common import fleet_env, libpq, start_worker, stop_process_groups, wait_workers_ready  # noqa: E402
from bench.reuse_bench import write_nights  # noqa: E402
from bench.write_bench import scratch  # noqa: E402
from tests.services import PrivateRedis  # noqa: E402


def first_times(db: str, job: str, t0: float, scored_timeout: float) -> dict:
    """Seconds from ``t0`` (the submit's start, epoch) to the job's first chunk queued and first scored."""
    deadline = time.monotonic() + scored_timeout
    with psycopg.connect(libpq(db), autocommit=True) as conn:
        while True:
            queued, scored, chunks = conn.execute(
                "SELECT min(enqueued_at), min(finished_at), count(*) FROM chunks WHERE job_id = %s", (job,)
            ).fetchone()
            if scored is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    at = datetime.fromtimestamp(t0, UTC)
    return {
        "first_chunk_queued_s": round((queued - at).total_seconds(), 2) if queued else None,
        "first_chunk_scored_s": round((scored - at).total_seconds(), 2) if scored else None,
        "chunks": chunks,
    }


def submit(
    variant: str, night: str, manifest: Path, env: dict, db: str, pairs: int, rows: list, scored_timeout: float = 600
) -> str:
    """`producer submit`, timed, with its peak RSS and the first-chunk times; returns the job id."""
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", PRODUCER, "submit", str(manifest), "--name", night], cwd=REPO,
                       env=env, capture_output=True, text=True)  # fmt: skip
    seconds = time.time() - t0
    if p.returncode:
        raise RuntimeError(f"{variant} submit exited {p.returncode}: {p.stderr[-2000:]}")
    job = p.stdout.strip().split()[-1]
    rss_kb, user, system = p.stderr.strip().splitlines()[-1].split()
    cpu = float(user) + float(system)  # the producer's own CPU: its per-pair cost whatever else runs on the host
    row = {
        "variant": variant, "night": night, "pairs": pairs, "submit_s": round(seconds, 1),
        "us_per_pair": round(seconds / pairs * 1e6, 2), "producer_cpu_s": round(cpu, 1),
        "cpu_us_per_pair": round(cpu / pairs * 1e6, 2), "peak_rss_mb": round(int(rss_kb) / 1024),
        **first_times(db, job, t0, scored_timeout),
    }  # fmt: skip
    rows.append(row)
    print(json.dumps(row), flush=True)
    return job


def wait(job: str, env: dict) -> None:
    p = subprocess.run([PRODUCER, "wait", job, "--timeout", "7200"], cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"wait {job} exited {p.returncode}: {p.stderr[-2000:]}")


def run_variant(variant: str, code: Path, nights: tuple[Path, Path], args: argparse.Namespace, work: Path, rows: list) -> None:
    db, drop = scratch(args.url)
    redis = PrivateRedis()
    redis.start()
    env = fleet_env(code, db, redis.url, args.model, args.chunk_size)
    procs: list[subprocess.Popen] = []
    try:
        subprocess.run([sys.executable, "-c", "import sys; from rerankq.store.db import upgrade; upgrade(sys.argv[1])", db],
                       cwd=code, env=env, check=True)  # fmt: skip
        if args.cached_night1:  # night 1 as if scored: its context and every key cached (bench/reuse_bench.py), no worker
            fill = "import sys; from pathlib import Path; from bench.reuse_bench import fill_cache; fill_cache(sys.argv[1], sys.argv[2], Path(sys.argv[3]))"
            subprocess.run([sys.executable, "-c", fill, db, args.model, str(nights[0])], cwd=code, env=env, check=True)
            submit(variant, "night-2 (reuse; night 1 cached, no worker)", nights[1], env, db, args.pairs, rows, scored_timeout=0)
            return
        logs = [work / f"{variant}-worker{i}.log" for i in range(args.workers)]
        procs += [start_worker(i, code, env, log) for i, log in enumerate(logs)]
        wait_workers_ready(logs)
        job1 = submit(variant, "night-1", nights[0], env, db, args.pairs, rows)
        if args.night2:
            wait(job1, env)
            submit(variant, "night-2 (reuse)", nights[1], env, db, args.pairs, rows)
    finally:
        stop_process_groups(procs)
        redis.stop()
        drop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--unchanged", type=float, default=0.95)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--before", help="an earlier commit to measure in the same run (a git worktree)")
    ap.add_argument("--no-night2", dest="night2", action="store_false", help="night 1 only (no wait, no reuse night)")
    ap.add_argument("--cached-night1", action="store_true", help="no workers: night 1's keys put in the cache, night 2 submitted with reuse")
    ap.add_argument("--model", default=str(Path.home() / ".cache/rerankq/tiny-qwen3-reranker"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="first-chunk-bench-"))
    rows: list[dict] = []
    t = time.perf_counter()
    nights = write_nights(work, args.pairs, args.unchanged)
    print(json.dumps({"manifests_s": round(time.perf_counter() - t, 1), "pairs": args.pairs}), flush=True)
    variants: list[tuple[str, Path]] = [("after", REPO)]
    tree = work / "before"
    try:
        if args.before:
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], cwd=REPO, check=True, capture_output=True)
            variants.insert(0, (f"before ({args.before})", tree))
        for variant, code in variants:
            run_variant(variant, code, nights, args, work, rows)
        print(json.dumps({"summary": rows}), flush=True)
    finally:
        if args.before:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
