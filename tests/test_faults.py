"""Nothing lost: real worker processes, a Redis and a PostgreSQL of this module's own, real faults.

Every scenario ends with the same proof: the ledger holds each pair of the manifest exactly once,
each finished chunk holds all its scores and no other chunk holds any (checked while jobs run too).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.services import PrivatePostgres, PrivateRedis, create_database
from tests.workers import WorkerProcess

pytestmark = pytest.mark.slow
COUNTS = {"scenarios": 0, "pairs_lost": 0, "pairs_duplicated": 0}
DEAD_AFTER = 8  # seconds; the default is 60, shortened so the suite runs in minutes


def wait_for(predicate: Callable[[], object], timeout: float = 300, what: str = "condition", every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the database may be restarting
            value = None
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


class Stack:
    """The module's services, its manifest factory and ledger probes."""

    def __init__(self, tiny_model: Path, tmp: Path):
        self.tmp = tmp
        self.redis = PrivateRedis()
        self.redis.start()
        self.pg = PrivatePostgres()
        self.pg.start()
        self.db_url = create_database(self.pg.admin_url)
        migrate(self.db_url)
        self.poison_flag = tmp / "poison.on"
        self.dead_flag = tmp / "dead.on"
        self.env = base_env(
            tiny_model,
            self.db_url,
            self.redis.url,
            RERANKQ_ENGINE="tests.fault_engines:poisonable",
            RERANKQ_TEST_POISON_FILE=str(self.poison_flag),
            RERANKQ_TEST_DEAD_FILE=str(self.dead_flag),
            # Default visibility timeout (3 h): recovery must come from the worker registry's sweeper.
            RERANKQ_WORKER_DEAD_AFTER=DEAD_AFTER,
            RERANKQ_HEARTBEAT_INTERVAL=1,
            RERANKQ_MAX_RETRIES=2,
            RERANKQ_RETRY_BACKOFF=1,
            RERANKQ_MAX_LENGTH=256,
            RERANKQ_WRITE_RETRY_SECONDS=120,
            RERANKQ_PIPELINE_PAIRS=500,  # chunks of 1000+ pairs go through the tokenizer helper process
        )
        self.engine = create_engine(self.db_url, pool_pre_ping=True)
        self._n = 0

    def worker(self) -> WorkerProcess:
        self._n += 1
        return WorkerProcess(self.env, self.tmp / f"worker-{self._n}.log").start()

    def submit(self, n_queries: int, docs: int, chunk_size: int, seed: int, poison_query: int | None = None) -> tuple[str, set]:
        columns = rows(n_queries, docs, seed=seed, long_every=10**9)
        if poison_query is not None:
            for i, qid in enumerate(columns["query_id"]):
                if qid == f"q{poison_query:04d}":
                    columns["document"][i] += " POISONPILL"
        path = write_manifest(self.tmp / f"manifest-{seed}.parquet", columns)
        out = producer("submit", str(path), "--chunk-size", str(chunk_size), env=self.env, check=True)
        return out.stdout.strip().splitlines()[-1], set(zip(columns["query_id"], columns["doc_id"]))

    def sql(self, query: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).all()

    def chunks(self, job_id: str) -> list:
        return self.sql("SELECT id, seq, state, attempts, worker, pairs, started_at FROM chunks WHERE job_id=:j ORDER BY seq", j=job_id)

    def state(self, job_id: str) -> str:
        return self.sql("SELECT state FROM jobs WHERE id=:j", j=job_id)[0][0]

    def running_chunk(self, job_id: str, worker_pid: int | None = None):
        for c in self.chunks(job_id):
            if c.state == "running" and (worker_pid is None or f":{worker_pid}:" in c.worker):
                return c
        return None

    def assert_chunks_atomic(self, job_id: str) -> None:
        """A finished chunk holds all its scores; any other chunk holds none: no partial chunk is visible."""
        for cid, state, pairs, written in self.sql(
            "SELECT c.id, c.state, c.pairs, (SELECT count(*) FROM scores s WHERE s.chunk_id = c.id) "
            "FROM chunks c WHERE c.job_id=:j",
            j=job_id,
        ):
            assert written == (pairs if state == "done" else 0), (cid, state, pairs, written)

    def assert_exactly_once(self, job_id: str, expected: set) -> None:
        got = self.sql("SELECT query_id, doc_id FROM scores WHERE job_id=:j", j=job_id)
        keys = [tuple(r) for r in got]
        lost, duplicated = len(expected - set(keys)), len(keys) - len(set(keys))
        COUNTS["pairs_lost"] += lost
        COUNTS["pairs_duplicated"] += duplicated
        assert (lost, duplicated) == (0, 0)
        assert set(keys) == expected
        self.assert_chunks_atomic(job_id)
        status = json.loads(producer("status", job_id, "--json", env=self.env, check=True).stdout)
        assert status["pairs_scored"] == len(expected) == status["pairs_total"]
        COUNTS["scenarios"] += 1

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 400) -> str:
        return wait_for(lambda: (s := self.state(job_id)) in states and s, timeout, f"job {job_id} in {states}")

    def close(self) -> None:
        self.engine.dispose()
        self.redis.stop()
        self.pg.destroy()


@pytest.fixture(scope="module")
def stack(tiny_model, tmp_path_factory):
    s = Stack(tiny_model, tmp_path_factory.mktemp("faults"))
    yield s
    s.close()
    print(f"\nfault suite: {COUNTS}")


@pytest.fixture(scope="module")
def steady(stack):
    """A worker that stays up across scenarios."""
    w = stack.worker().wait_ready()
    yield w
    w.terminate()


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
    second = stack.worker().wait_ready()
    try:
        assert stack.wait_state(job, ("completed",)) == "completed"
        stack.assert_exactly_once(job, expected)
        redelivered = stack.sql("SELECT attempts, state FROM chunks WHERE id=:c", c=victim.id)[0]
        assert tuple(redelivered) == (2, "done")
    finally:
        second.terminate()


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


def test_redis_restart_then_resume(stack, steady):
    job, expected = stack.submit(n_queries=20, docs=250, chunk_size=1000, seed=3)
    wait_for(lambda: stack.running_chunk(job), what="a running chunk")
    stack.redis.restart()  # nothing on disk: the queue and unacked chunks are gone
    assert stack.redis.client().llen("gpu") == 0
    time.sleep(3)
    assert stack.state(job) == "running"
    out = producer("resume", job, env=stack.env, check=True)
    assert "chunk(s) enqueued" in out.stdout and not out.stdout.startswith("0 ")
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


def test_postgres_restart_while_worker_writes(stack, steady):
    job, expected = stack.submit(n_queries=20, docs=250, chunk_size=1500, seed=4)
    wait_for(lambda: stack.running_chunk(job), what="a running chunk")
    stack.pg.stop("immediate")
    time.sleep(8)  # the chunk finishes scoring while the database is down: its write must wait
    stack.pg.start()
    checks = 0
    while stack.state(job) not in ("completed", "completed_with_errors", "failed"):
        stack.assert_chunks_atomic(job)
        checks += 1
        time.sleep(0.3)
    assert stack.state(job) == "completed" and checks > 0
    stack.assert_exactly_once(job, expected)
    assert '"database_retry"' in steady.log()


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


def test_sigterm_warm_shutdown_loses_nothing(stack, steady):
    steady.terminate()  # the shared worker leaves first (idle): only `leaving` consumes below
    leaving = stack.worker().wait_ready()
    job, expected = stack.submit(n_queries=20, docs=300, chunk_size=1500, seed=7)
    busy = wait_for(lambda: stack.running_chunk(job, leaving.proc.pid), what="a running chunk")
    assert leaving.terminate(timeout=120) == 0
    assert stack.sql("SELECT state FROM chunks WHERE id=:c", c=busy.id)[0][0] in ("done", "running")
    successor = stack.worker().wait_ready()
    try:
        assert stack.wait_state(job, ("completed",)) == "completed"
        stack.assert_exactly_once(job, expected)
    finally:
        successor.terminate()


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
    fresh = stack.worker().wait_ready()
    try:
        assert stack.wait_state(job, ("completed",)) == "completed"
        stack.assert_exactly_once(job, expected)
    finally:
        fresh.terminate()


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
