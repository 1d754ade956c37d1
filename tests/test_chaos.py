"""Chaos: one 20,000-pair job on PostgreSQL with two workers while a driver kills a random worker with -9
every ~20 s (and starts a new one), flushes Redis once mid-job and restarts PostgreSQL once. Default
settings but the heartbeat interval and RERANKQ_WORKER_DEAD_AFTER (shortened for a short test); nobody
runs `producer resume`. The job must complete with every pair exactly once and every score equal to a
clean run's, and the test prints how much longer it took."""

from __future__ import annotations

import random
import time

import pytest

from tests.conftest import producer
from tests.corpus import rows, write_manifest
from tests.faults.stack import Stack, wait_for
from tests.workers import WorkerProcess, is_ready_line

pytestmark = pytest.mark.slow
PAIRS = (40, 500)  # queries x documents = 20,000 pairs
CHUNK = 500
MAX_KILLS = 4  # a replacement takes ~40 s to load its engine here: more kills would only stall the job


class Chaos:
    def __init__(self, stack: Stack):
        self.stack = stack
        self.workers: list[WorkerProcess] = []
        self.faults: list[str] = []

    def start_worker(self) -> WorkerProcess:
        w = self.stack.worker()
        self.workers.append(w)
        return w

    def ready(self) -> list[WorkerProcess]:
        return [
            w for w in self.workers if w.proc.poll() is None and any(map(is_ready_line, w.log()[w._offset :].splitlines()))
        ]

    def kill_one(self, rng: random.Random) -> None:
        ready = self.ready()
        if not ready or sum(f.startswith("kill") for f in self.faults) >= MAX_KILLS:
            return
        victim = rng.choice(ready)
        victim.kill9()
        self.workers.remove(victim)
        self.faults.append(f"kill -9 worker pid {victim.proc.pid}")
        self.start_worker()


def run_job(stack: Stack, manifest, chaos: Chaos | None, timeout: float = 1200) -> tuple[str, float]:
    t0 = time.monotonic()
    job = producer("submit", str(manifest), "--chunk-size", str(CHUNK), "--no-reuse", env=stack.env, check=True).stdout.split()[-1]
    rng = random.Random(7)
    flushed = restarted = False
    next_kill = t0 + 20
    while (state := stack.state(job)) not in ("completed", "completed_with_errors", "failed", "cancelled"):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"job {job} still {state}; faults so far: {chaos.faults if chaos else []}")
        if chaos is not None:
            done = stack.sql("SELECT coalesce(sum(scored), 0) FROM chunks WHERE job_id=:j", j=job)[0][0]
            total = PAIRS[0] * PAIRS[1]
            if not flushed and done >= total * 0.25:
                stack.redis.client().flushall()  # the queue and every unacked message are gone
                chaos.faults.append(f"FLUSHALL at {done} pairs")
                flushed = True
            elif flushed and not restarted and done >= total * 0.55:
                stack.pg.stop("immediate")
                time.sleep(5)
                stack.pg.start()
                chaos.faults.append(f"PostgreSQL restart at {done} pairs")
                restarted = True
            if time.monotonic() >= next_kill:
                chaos.kill_one(rng)
                next_kill = time.monotonic() + 20
        time.sleep(0.5)
    return job, time.monotonic() - t0


def scores(stack: Stack, job: str) -> dict[tuple[str, str], float]:
    return {(q, d): s for q, d, s in stack.sql("SELECT query_id, doc_id, score FROM scores WHERE job_id=:j", j=job)}


def test_chaos_job_completes_exactly_once_with_reference_scores(tiny_model, tmp_path):
    stack = Stack(tiny_model, tmp_path)
    stack.env.pop("RERANKQ_ENGINE")  # the real vLLM engine, no injected faults
    stack.env.pop("RERANKQ_MAX_LENGTH")
    stack.env.pop("RERANKQ_PIPELINE_PAIRS")
    chaos = Chaos(stack)
    try:
        columns = rows(*PAIRS, seed=42, long_every=10**9)
        manifest = write_manifest(tmp_path / "nightly.parquet", columns)
        expected = set(zip(columns["query_id"], columns["doc_id"]))
        for _ in range(2):
            chaos.start_worker()
        wait_for(lambda: len(chaos.ready()) == 2, 400, "two workers ready")

        clean_job, clean_seconds = run_job(stack, manifest, None)
        assert stack.state(clean_job) == "completed"
        reference = scores(stack, clean_job)

        chaos_job, chaos_seconds = run_job(stack, manifest, chaos)
        assert stack.state(chaos_job) == "completed", chaos.faults
        stack.assert_exactly_once(chaos_job, expected)
        got = scores(stack, chaos_job)
        assert got.keys() == reference.keys() == expected
        drift = max(abs(got[k] - reference[k]) for k in expected)
        assert drift <= 1e-5, drift
        kills = sum(f.startswith("kill") for f in chaos.faults)
        assert kills >= 2 and any("FLUSHALL" in f for f in chaos.faults) and any("PostgreSQL" in f for f in chaos.faults)
        attempts = stack.sql("SELECT max(attempts), sum(attempts) FROM chunks WHERE job_id=:j", j=chaos_job)[0]
        print(
            f"\nchaos: {len(expected):,} pairs, faults: {'; '.join(chaos.faults)}\n"
            f"chaos: clean run {clean_seconds:.1f} s, chaos run {chaos_seconds:.1f} s "
            f"({chaos_seconds / clean_seconds:.2f}x); pairs lost 0, duplicated 0; max |score - clean| {drift:.2e}; "
            f"chunk deliveries {attempts[1]} for {len(expected) // CHUNK} chunks (max {attempts[0]})"
        )
    finally:
        for w in chaos.workers:
            w.terminate(timeout=60)
        stack.close()
