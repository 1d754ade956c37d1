"""Workers killed with -9 mid-chunk, alone or beside another: the chunk goes to a live worker, nothing lost."""

from __future__ import annotations

import json

import pytest

from tests.conftest import producer
from tests.faults.stack import wait_for

pytestmark = pytest.mark.slow


def test_kill9_mid_chunk_is_redelivered_to_a_new_worker(stack):
    first = stack.worker().wait_ready()
    job, expected = stack.submit(n_queries=20, docs=300, chunk_size=1500, seed=1)
    victim = wait_for(lambda: stack.running_chunk(job, first.proc.pid), what="a running chunk")
    first.kill9()
    wait_for(lambda: not first.group_alive(), 30, "the killed worker's processes to be gone")
    assert stack.sql("SELECT state FROM chunks WHERE id=:c", c=victim.id)[0][0] == "running"
    held = lambda: json.loads(producer("status", job, "--json", env=stack.env, check=True).stdout)["holders"]  # noqa: E731
    wait_for(lambda: any(not h["alive"] and f":{first.proc.pid}:" in h["worker_id"] for h in held()), 60, "presumed dead")
    text = producer("status", job, env=stack.env, check=True).stdout
    assert "presumed dead" in text and f":{first.proc.pid}:" in text
    stack.completes_with_a_new_worker(job, expected)
    redelivered = stack.sql("SELECT attempts, state FROM chunks WHERE id=:c", c=victim.id)[0]
    assert tuple(redelivered) == (2, "done")


def test_two_workers_one_killed_mid_chunk(stack, steady):
    other = stack.worker().wait_ready()
    job, expected = stack.submit(n_queries=24, docs=250, chunk_size=1000, seed=2)
    wait_for(lambda: stack.running_chunk(job, steady.proc.pid), what="the steady worker busy")
    victim = wait_for(lambda: stack.running_chunk(job, other.proc.pid), what="the other worker busy")
    done_before = [c.id for c in stack.chunks(job) if c.state == "done"]
    other.kill9()
    assert stack.wait_state(job, ("completed",)) == "completed"
    stack.assert_exactly_once(job, expected)
    chunks = {c.id: c for c in stack.chunks(job)}
    assert chunks[victim.id].attempts == 2 and f":{steady.proc.pid}:" in chunks[victim.id].worker
    assert all(chunks[c].attempts == 1 for c in done_before)
