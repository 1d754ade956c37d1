"""A chunk delivered twice, a poisoned chunk retried then failed, a job cancelled mid-way."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import producer
from tests.faults.stack import wait_for

pytestmark = pytest.mark.slow


def test_second_delivery_of_a_finished_chunk_changes_nothing(stack, steady):
    from rerankq.broker import publish
    from rerankq.settings import Settings
    from schemas import ChunkMessage
    from worker.celery_app import make_app

    job, expected = stack.submit(n_queries=4, docs=50, chunk_size=100, seed=11)
    assert stack.wait_state(job, ("completed",)) == "completed"
    before = stack.sql("SELECT query_id, doc_id, score FROM scores WHERE job_id=:j ORDER BY 1, 2", j=job)
    cid, spec = stack.sql("SELECT id, spec FROM chunks WHERE job_id=:j ORDER BY seq LIMIT 1", j=job)[0]
    spec = json.loads(spec) if isinstance(spec, str) else spec
    publish(make_app(Settings(broker_url=stack.redis.url)), [ChunkMessage(job_id=job, chunk_id=cid, spec=spec)], "gpu")
    skipped = lambda: any("chunk already done" in line and f'"chunk_id": {cid},' in line for line in steady.log().splitlines())  # noqa: E731
    wait_for(skipped, 60, "the second delivery to be skipped")
    assert stack.sql("SELECT query_id, doc_id, score FROM scores WHERE job_id=:j ORDER BY 1, 2", j=job) == before
    stack.assert_exactly_once(job, expected)


def test_poison_chunk_retried_then_failed_then_retry_command(stack, steady):
    stack.poison_flag.touch()
    try:
        job, expected = stack.submit(n_queries=6, docs=20, chunk_size=40, seed=5, poison_query=2)
        assert stack.wait_state(job, ("completed_with_errors",)) == "completed_with_errors"
    finally:
        stack.poison_flag.unlink()
    chunks = stack.chunks(job)
    failed = [c for c in chunks if c.state == "failed"]
    assert len(failed) == 1 and failed[0].attempts == 3  # first try + RERANKQ_MAX_RETRIES=2
    error = stack.sql("SELECT error FROM chunks WHERE id=:c", c=failed[0].id)[0][0]
    assert "poisoned chunk" in error
    waited = producer("wait", job, "--timeout", "5", env=stack.env)
    assert waited.returncode == 1
    stack.assert_chunks_atomic(job)
    others = {c.id: c.attempts for c in chunks if c.state == "done"}

    out = producer("retry", job, env=stack.env, check=True)
    assert out.stdout.startswith("1 failed chunk")
    assert stack.wait_state(job, ("completed",)) == "completed"
    stack.assert_exactly_once(job, expected)
    after = {c.id: c.attempts for c in stack.chunks(job)}
    assert {c: after[c] for c in others} == others, "only the failed chunk ran again"


def test_cancel_mid_job(stack, steady):
    job, expected = stack.submit(n_queries=30, docs=200, chunk_size=600, seed=6)
    wait_for(lambda: any(c.state == "done" for c in stack.chunks(job)), what="a finished chunk")
    out = producer("cancel", job, env=stack.env, check=True)
    assert out.stdout.strip() == "cancelled"
    cancelled_at = time.time()
    wait_for(lambda: not stack.running_chunk(job), 120, "the running chunk to end")
    time.sleep(3)
    chunks = stack.chunks(job)
    assert stack.state(job) == "cancelled"
    assert {c.state for c in chunks} <= {"done", "cancelled"} and any(c.state == "cancelled" for c in chunks)
    done = [c for c in chunks if c.state == "done"]
    assert all(c.started_at.timestamp() <= cancelled_at for c in done), "no chunk started after the cancel"
    scores = stack.sql("SELECT count(*) FROM scores WHERE job_id=:j", j=job)[0][0]
    assert scores == sum(c.pairs for c in done) > 0, "scores already written stay"
    stack.assert_chunks_atomic(job)
