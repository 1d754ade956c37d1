"""Redis and PostgreSQL restarted under a running job, and a worker frozen past its lease."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.conftest import producer
from tests.faults.stack import wait_for

pytestmark = pytest.mark.slow


def test_redis_restart_then_resume(stack, steady):
    job, expected = stack.submit(n_queries=20, docs=250, chunk_size=1000, seed=3)
    wait_for(lambda: stack.running_chunk(job), what="a running chunk")
    stack.redis.restart()  # nothing on disk: the queue and unacked chunks are gone
    assert stack.redis.client().llen("gpu") == 0
    time.sleep(3)
    assert stack.state(job) == "running"
    out = producer("resume", job, env=stack.env, check=True)
    healed = "lost by the broker" in steady.log()  # the worker's sweeper may have sent them again first
    assert "chunk(s) enqueued" in out.stdout and (healed or not out.stdout.startswith("0 ")), out.stdout
    assert stack.wait_state(job, ("completed",)) == "completed"
    stack.assert_exactly_once(job, expected)


def test_redis_loses_its_queue_and_the_workers_heal_it(stack, steady):
    """No `producer resume`: the sweeper finds the pending chunks the broker no longer holds."""
    job, expected = stack.submit(n_queries=20, docs=250, chunk_size=1000, seed=9)
    wait_for(lambda: stack.running_chunk(job), what="a running chunk")
    stack.redis.restart()
    assert stack.redis.client().llen("gpu") == 0
    assert stack.wait_state(job, ("completed",)) == "completed"
    stack.assert_exactly_once(job, expected)
    assert "lost by the broker" in steady.log()


def test_postgres_restart_while_worker_writes(stack, steady):
    job, expected = stack.submit(n_queries=20, docs=250, chunk_size=1500, seed=4)
    wait_for(lambda: stack.running_chunk(job), what="a running chunk")
    stack.pg.stop("immediate")
    # Down until the worker has tried the ledger and is waiting (the chunk finished scoring, or the next one
    # began): a fixed pause let a slow machine restart the database before any write had to wait.
    wait_for(lambda: '"database_retry"' in steady.log(), 100, "the worker to wait for the database")
    stack.pg.start()
    checks = 0
    while stack.state(job) not in ("completed", "completed_with_errors", "failed"):
        stack.assert_chunks_atomic(job)
        checks += 1
        time.sleep(0.3)
    assert stack.state(job) == "completed" and checks > 0
    stack.assert_exactly_once(job, expected)
    assert '"database_retry"' in steady.log()


def test_frozen_worker_races_its_successor(stack, steady):
    """A worker that stops heartbeating (SIGSTOP) but is alive: its chunk goes to another worker after
    RERANKQ_WORKER_DEAD_AFTER; when it wakes up and finishes too, nothing is counted twice."""
    frozen = stack.worker().wait_ready()
    job, expected = stack.submit(n_queries=24, docs=250, chunk_size=1000, seed=10)
    victim = wait_for(lambda: stack.running_chunk(job, frozen.proc.pid), what="the frozen worker busy")
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: stack.sql("SELECT attempts FROM chunks WHERE id=:c", c=victim.id)[0][0] >= 2, 120, "re-delivery")
        workers = json.loads(producer("workers", "--json", env=stack.env, check=True).stdout)
        assert {w["pid"]: w["state"] for w in workers}[frozen.proc.pid] == "dead"
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    try:
        assert stack.wait_state(job, ("completed",)) == "completed"
        stack.assert_exactly_once(job, expected)
        alive = lambda: any(w["pid"] == frozen.proc.pid and w["alive"] for w in json.loads(producer("workers", "--json", env=stack.env).stdout))  # noqa: E731
        wait_for(alive, 60, "the woken worker to be seen alive again")
    finally:
        frozen.terminate()
