"""Workers that leave: a warm shutdown, a dead engine, and a refused message that must not kill one."""

from __future__ import annotations

import pytest

from tests.faults.stack import wait_for

pytestmark = pytest.mark.slow


def test_sigterm_warm_shutdown_loses_nothing(stack):
    leaving = stack.worker().wait_ready()
    job, expected = stack.submit(n_queries=20, docs=300, chunk_size=1500, seed=7)
    busy = wait_for(lambda: stack.running_chunk(job, leaving.proc.pid), what="a running chunk")
    assert leaving.terminate(timeout=120) == 0
    assert stack.sql("SELECT state FROM chunks WHERE id=:c", c=busy.id)[0][0] in ("done", "running")
    stack.completes_with_a_new_worker(job, expected)


def test_dead_engine_exits_the_worker_and_loses_nothing(stack):
    """A chunk that fails because the engine itself is gone is not the chunk's fault: the worker exits
    (for its supervisor to restart) without using up the chunk's retries or acknowledging it."""
    doomed = stack.worker().wait_ready()
    stack.dead_flag.touch()
    try:
        job, expected = stack.submit(n_queries=4, docs=30, chunk_size=60, seed=8)
        assert wait_for(lambda: doomed.proc.poll() is not None, 120, "the worker to exit") and doomed.proc.returncode == 3
    finally:
        stack.dead_flag.unlink()
    assert '"engine_dead"' in doomed.log()
    assert stack.state(job) in ("queued", "running")
    assert not any(c.state == "failed" for c in stack.chunks(job))
    stack.completes_with_a_new_worker(job, expected)


def test_pickled_message_is_refused(stack, tmp_path):
    from kombu import Connection

    worker = stack.worker().wait_ready()
    try:
        marker = tmp_path / "pickle-ran"
        with Connection(stack.redis.url) as conn:
            producer_ = conn.Producer(serializer="pickle")
            producer_.publish(
                {"task": "rerankq.score_chunk", "id": "evil", "args": [str(marker)], "kwargs": {}},
                routing_key="gpu",
                exchange="",
                headers={"task": "rerankq.score_chunk", "id": "evil", "lang": "py", "argsrepr": "", "kwargsrepr": ""},
            )
        wait_for(lambda: "pickle" in worker.log() and "untrusted" in worker.log().lower(), 60, "the refusal")
        assert stack.redis.client().llen("gpu") == 0
        assert not marker.exists()
        assert worker.proc.poll() is None, "the worker survives a refused message"
    finally:
        worker.terminate()
