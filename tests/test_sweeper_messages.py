"""Issue 25: the sweeper looks for a chunk's message on every queue it may sit on, so a fault-free
job gets exactly one broker message per chunk and no reclaim, and a lost queue exactly one more.

Messages are counted at the broker itself: Redis MONITOR sees every LPUSH, and each publication has a
task id of its own (``rerankq/broker.py``), so the distinct task ids per chunk are the messages sent
for it. A redelivery of the same message (kombu putting an unacked message back) is not a new one."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import update

from producer.queueing import enqueue
from rerankq.broker import priority_lists
from rerankq.routing import context_queue, model_queue
from rerankq.settings import Settings
from rerankq.store.clock import now
from rerankq.store.ledger import Ledger
from rerankq.store.models import Chunk, Job
from rerankq.store.records import NewChunk, ScoreRow
from rerankq.store.registry import Registry, WorkerInfo
from schemas import InlinePair, InlineSpec
from tests.conftest import migrate
from tests.services import redis_client
from worker.celery_app import make_app
from worker.sweeper import Sweeper

DEAD_AFTER = 60.0
MODEL = "org/tiny"
CONTEXT = "c0ffee" * 10 + "abcd"
_TASK = re.compile(r"rerankq-chunk-(\d+)-([0-9a-f]{12})")


class BrokerMessages:
    """Every message pushed onto a Redis list of this test's database, by chunk (Redis MONITOR)."""

    def __init__(self, url: str):
        self.client = redis_client(url, socket_timeout=None)  # quiet for minutes while a worker starts
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.by_chunk: dict[int, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._monitor = self.client.monitor().__enter__()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._monitor.next_command()
            except Exception as exc:  # noqa: BLE001 - the connection closed at stop()
                self.error = None if self._stop.is_set() else exc
                return
            command = event["command"]
            if event.get("db") != self.db or not command.upper().startswith("LPUSH"):
                continue
            with self._lock:
                for chunk, tag in _TASK.findall(command):
                    self.by_chunk[int(chunk)].add(tag)

    def counts(self, chunks: list[int], settle: float = 0.3) -> dict[int, int]:
        self.client.ping()  # MONITOR reports commands in order: once this ping's echo is seen, all before it were
        time.sleep(settle)
        assert self._thread.is_alive(), f"MONITOR stopped: {self.error!r}"
        with self._lock:
            return {c: len(self.by_chunk.get(c, ())) for c in chunks}

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._monitor.connection.disconnect()


@pytest.fixture(scope="module")
def url(pg_url) -> str:
    migrate(pg_url)
    return pg_url


@pytest.fixture()
def store(url) -> Ledger:
    return Ledger(url, dead_after=DEAD_AFTER)


@pytest.fixture()
def settings(redis_url) -> Settings:
    redis_client(redis_url).flushdb()
    return Settings(broker_url=redis_url, heartbeat_interval=1, worker_dead_after=DEAD_AFTER, model=MODEL)


@pytest.fixture()
def messages(redis_url):
    seen = BrokerMessages(redis_url)
    yield seen
    seen.stop()


@pytest.fixture()
def sweeper(store, url, settings) -> Sweeper:
    registry = Registry(url)
    registry.forget(older_than=0)
    return Sweeper(store, registry, make_app(settings), settings, "sweeper-test")


def submit(store: Ledger, settings: Settings, n: int = 4, context: str | None = None) -> tuple[str, list]:
    """A job of ``n`` one-pair chunks of MODEL, enqueued exactly as ``producer submit`` does."""
    specs = [InlineSpec(pairs=[InlinePair(query_id="q", doc_id=f"d{i}", query="q", document="d")]) for i in range(n)]
    chunks = [NewChunk(spec.model_dump(mode="json"), 1) for spec in specs]
    job, msgs = store.create_job(kind="inline", chunks=chunks, model=MODEL, score_context=context)
    assert enqueue(msgs, store, settings) == n
    return job, msgs


def age(store: Ledger, job: str, seconds: float = 30) -> None:
    """The job's chunks went out ``seconds`` ago: old enough for the sweeper to look for them."""
    with store.session.begin() as s:
        s.execute(update(Job).where(Job.id == job).values(created_at=now() - timedelta(seconds=seconds)))
        s.execute(update(Chunk).where(Chunk.job_id == job).values(enqueued_at=now() - timedelta(seconds=seconds)))


class Consumer:
    """A worker of MODEL in CONTEXT, reduced to its broker and ledger steps: take a message from its
    queues (kombu, unacknowledged until done), begin the chunk (which pins the job's context), finish it."""

    def __init__(self, store: Ledger, registry: Registry, settings: Settings, worker_id: str = "worker-1:1:a"):
        self.store, self.worker_id = store, worker_id
        registry.register(WorkerInfo(worker_id, "host", 1, MODEL))
        self.app = make_app(settings)
        self.conn = self.app.connection_for_read()
        names = [settings.queue, model_queue(settings.queue, MODEL), context_queue(settings.queue, MODEL, CONTEXT)]
        self.queues = [self.conn.SimpleQueue(name, no_ack=False) for name in names]

    def take(self):
        for _ in range(50):
            for queue in self.queues:
                try:
                    return queue.get(block=False)
                except queue.Empty:
                    continue
            time.sleep(0.1)
        raise AssertionError("no message on the worker's queues")

    @staticmethod
    def chunk(message) -> dict:
        args, _kwargs, _embed = message.payload  # Celery's message protocol 2: the body is [args, kwargs, embed]
        return args[0]

    def begin(self, message) -> dict:
        chunk = self.chunk(message)
        assert self.store.begin_chunk(chunk["job_id"], chunk["chunk_id"], self.worker_id, MODEL, CONTEXT) is None
        return chunk

    def finish(self, message, chunk: dict) -> None:
        rows = [ScoreRow(p["query_id"], p["doc_id"], 0.5, None) for p in chunk["spec"]["pairs"]]
        assert self.store.finish_chunk(chunk["job_id"], chunk["chunk_id"], rows) is True
        message.ack()

    def close(self) -> None:
        for queue in self.queues:
            queue.close()
        self.conn.release()


def test_a_fault_free_job_has_one_message_per_chunk_and_no_reclaim(store, settings, sweeper, messages, caplog):
    """The issue's fault: once the first chunk pinned the job's context, the sweeper looked only on the
    context's queue, missed the rest on the model's queue, and sent every one of them again."""
    job, msgs = submit(store, settings)
    ids = [m.chunk_id for m in msgs]
    consumer = Consumer(store, sweeper.registry, settings)
    try:
        first = consumer.take()
        held = consumer.begin(first)  # pins the job's context: its other chunks now route to the context's queue
        with store.session() as s:
            assert s.get(Job, job).score_context == CONTEXT
        age(store, job)
        for _ in range(3):  # several sweeps, as the workers' heartbeats run them
            result = sweeper.run_once(recheck_delay=0.1)
            assert result.swept and not set(ids) & set(result.lost), "reclaimed chunks that sit on the model's queue"
        consumer.finish(first, held)
        for _ in ids[1:]:
            message = consumer.take()
            consumer.finish(message, consumer.begin(message))
            assert not set(ids) & set(sweeper.run_once(recheck_delay=0.1).lost)
    finally:
        consumer.close()
    assert store.status(job).state == "completed"
    assert messages.counts(ids) == dict.fromkeys(ids, 1)
    assert "chunks_reclaimed" not in caplog.text


def test_a_lost_queue_costs_exactly_one_more_message(store, settings, sweeper, messages):
    """Redis lost the queue (its key deleted): each chunk on it is sent exactly once more; a chunk a
    live worker holds unacknowledged (delivered, not yet begun) is left alone, and so is a chunk a
    worker is scoring; nothing is sent a third time however often the sweeper runs."""
    job, msgs = submit(store, settings, n=5)
    ids = [m.chunk_id for m in msgs]
    consumer = Consumer(store, sweeper.registry, settings)
    try:
        scoring = consumer.take()
        scoring_chunk = consumer.begin(scoring)  # begun: held in the ledger by a live worker
        reserved = consumer.take()  # delivered to the worker, not begun yet: in kombu's `unacked` hash
        reserved_id = consumer.chunk(reserved)["chunk_id"]
        client = redis_client(settings.broker)
        lost = set(ids) - {scoring_chunk["chunk_id"], reserved_id}
        for queue in (
            settings.queue,
            model_queue(settings.queue, MODEL),
            context_queue(settings.queue, MODEL, CONTEXT),
        ):
            client.delete(*priority_lists(queue).values())
        age(store, job)
        assert set(sweeper.run_once(recheck_delay=0.1).lost) == lost
        age(store, job)
        assert not set(ids) & set(sweeper.run_once(recheck_delay=0.1).lost), "re-sent chunks are queued: not again"
        consumer.finish(reserved, consumer.begin(reserved))
        consumer.finish(scoring, scoring_chunk)
        for _ in lost:
            message = consumer.take()
            consumer.finish(message, consumer.begin(message))
    finally:
        consumer.close()
    assert store.status(job).state == "completed"
    assert messages.counts(ids) == {c: 2 if c in lost else 1 for c in ids}
    assert store.score_count(job) == len(ids)


@pytest.mark.slow
def test_a_real_worker_sends_nothing_twice_and_heals_a_lost_queue(tiny_model, url, redis_url, tmp_path, messages):
    """The issue's observation, end to end: a real worker (whose heartbeat runs the sweeper every half
    second) scores a job submitted without reuse, so its first chunk pins the context while the rest
    wait on the model's queue. Then a second job's queued messages are deleted from Redis."""
    import json

    from sqlalchemy import create_engine, text

    from tests.conftest import base_env, producer
    from tests.corpus import rows, write_manifest
    from tests.polling import wait_for
    from tests.workers import WorkerProcess

    client = redis_client(redis_url)
    client.flushdb()
    env = base_env(  # the sweeper is the subject: the transformers engine loads in a third of vLLM's CPU time
        tiny_model, url, redis_url, RERANKQ_ENGINE="hf", RERANKQ_HEARTBEAT_INTERVAL=0.5, RERANKQ_WORKER_DEAD_AFTER=10,
        RERANKQ_MAX_LENGTH=128,
    )
    engine = create_engine(url)

    def chunk_ids(job: str) -> list[int]:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT id FROM chunks WHERE job_id=:j ORDER BY seq"), {"j": job})]

    def submit(seed: int) -> str:
        path = write_manifest(tmp_path / f"m{seed}.parquet", rows(24, 20, seed=seed, long_every=10**9))
        out = producer("submit", str(path), "--chunk-size", "10", "--no-reuse", env=env, check=True)
        return out.stdout.strip().splitlines()[-1]

    def completed(job: str) -> bool:
        return json.loads(producer("status", job, "--json", env=env, check=True).stdout)["state"] == "completed"

    worker = WorkerProcess(env, tmp_path / "worker.log").start().wait_ready()
    try:
        job = submit(1)
        wait_for(lambda: completed(job), 300, "the fault-free job")
        ids = chunk_ids(job)
        assert len(ids) == 24 and messages.counts(ids) == dict.fromkeys(ids, 1)
        assert "chunks_reclaimed" not in worker.log()

        # The worker holds nothing now; paused (SIGSTOP) while the second job is queued and its queue lost, so
        # that it cannot take every message first (tiny chunks score in milliseconds): at most what its pending
        # BRPOP already asked for reaches it.
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            job = submit(2)
            queue = priority_lists(model_queue("gpu", str(tiny_model)))["batch"]
            pipe = client.pipeline(transaction=True)
            pipe.lrange(queue, 0, -1)
            pipe.delete(queue)
            deleted, _ = pipe.execute()  # the queue as Redis lost it: exactly these messages are gone
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        lost = {int(_TASK.search(raw.decode()).group(1)) for raw in deleted}
        assert len(lost) >= 20, "the worker, paused, took at most a few of the 24 messages"
        wait_for(lambda: completed(job), 300, "the job with a lost queue")
        ids = chunk_ids(job)
        assert messages.counts(ids) == {c: 2 if c in lost else 1 for c in ids}
        assert "lost by the broker" in worker.log()
    finally:
        worker.terminate()
        engine.dispose()
