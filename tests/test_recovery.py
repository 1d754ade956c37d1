"""Self-healing at the ledger and broker level, on SQLite and PostgreSQL with a real Redis: which chunks
the sweeper takes back, and every race between it, a slow-but-alive worker and a second delivery."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import redis
from sqlalchemy import update

from rerankq.broker import chunks_in_broker, publish
from rerankq.settings import Settings
from rerankq.store.clock import now
from rerankq.store.ledger import Ledger
from rerankq.store.models import Chunk, Job, Worker
from rerankq.store.records import NewChunk, ScoreRow
from rerankq.store.registry import Registry, WorkerInfo
from schemas import InlinePair, InlineSpec
from tests.conftest import migrate
from tests.services import redis_client
from worker.celery_app import make_app
from worker.sweeper import Sweeper

DEAD_AFTER = 60.0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    migrate(url)
    return url


@pytest.fixture()
def store(url) -> Ledger:
    return Ledger(url, dead_after=DEAD_AFTER)


@pytest.fixture()
def registry(url) -> Registry:
    return Registry(url)


def new_job(store: Ledger, n: int = 2, per: int = 3) -> tuple[str, list]:
    chunks = []
    for c in range(n):
        pairs = [InlinePair(query_id=f"q{c}", doc_id=f"d{i}", query="q", document="d") for i in range(per)]
        chunks.append(NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), per))
    return store.create_job(kind="inline", chunks=chunks)


def rows_for(message) -> list[ScoreRow]:
    return [ScoreRow(p.query_id, p.doc_id, 0.5, None) for p in message.spec.pairs]


@pytest.fixture()
def w() -> dict[str, str]:
    """Worker ids of this test's own (the PostgreSQL database is shared by the module's tests)."""
    token = uuid.uuid4().hex[:8]
    return {name: f"{name}:{token}" for name in ("A", "B", "C", "ghost")}


def register(registry: Registry, worker_id: str) -> None:
    registry.register(WorkerInfo(worker_id, "host", 1, "model"))


def silence(store: Ledger, worker_id: str, seconds: float) -> None:
    """The worker's last heartbeat was ``seconds`` ago (what a killed or frozen worker leaves)."""
    with store.session.begin() as s:
        s.execute(update(Worker).where(Worker.id == worker_id).values(last_seen=now() - timedelta(seconds=seconds)))


def test_live_holder_keeps_its_chunk_however_long(store, registry, w):
    job, (m, _) = new_job(store)
    register(registry, w["A"])
    assert store.begin_chunk(job, m.chunk_id, w["A"], "model") is None
    with store.session.begin() as s:  # a chunk running for hours on a worker that still heartbeats
        s.execute(update(Chunk).where(Chunk.id == m.chunk_id).values(started_at=now() - timedelta(hours=5)))
    assert store.reclaim_from_dead(DEAD_AFTER) == []
    assert store.status(job).holders[0].alive is True


def test_dead_holder_chunk_is_taken_back_once(store, registry, w):
    job, (m, _) = new_job(store)
    register(registry, w["A"])
    store.begin_chunk(job, m.chunk_id, w["A"], "model")
    silence(store, w["A"], DEAD_AFTER + 1)
    holder = store.status(job).holders[0]
    assert (holder.worker_id, holder.alive) == (w["A"], False)
    assert [x.chunk_id for x in store.reclaim_from_dead(DEAD_AFTER)] == [m.chunk_id]
    assert store.reclaim_from_dead(DEAD_AFTER) == []  # nobody holds it now: not taken back twice
    assert {x.worker_id: x.state for x in registry.workers(DEAD_AFTER)}[w["A"]] == "dead"


def test_unregistered_and_stopped_holders(store, registry, w):
    job, (m0, m1) = new_job(store)
    store.begin_chunk(job, m0.chunk_id, w["ghost"], "model")  # e.g. a worker of an older rerankq
    register(registry, w["B"])
    store.begin_chunk(job, m1.chunk_id, w["B"], "model")
    assert store.reclaim_from_dead(DEAD_AFTER) == []  # the ghost's chunk only just started
    with store.session.begin() as s:
        s.execute(update(Chunk).where(Chunk.id == m0.chunk_id).values(started_at=now() - timedelta(seconds=DEAD_AFTER + 1)))
    registry.heartbeat(w["B"], state="stopped")  # a clean exit while (somehow) holding a chunk
    assert sorted(x.chunk_id for x in store.reclaim_from_dead(DEAD_AFTER)) == [m0.chunk_id, m1.chunk_id]


def test_slow_worker_finishes_after_its_chunk_was_taken_back(store, registry, w):
    """A (frozen, presumed dead) and B (its successor) both score the chunk: counted once."""
    job, (m,) = new_job(store, n=1)
    register(registry, w["A"])
    register(registry, w["B"])
    store.begin_chunk(job, m.chunk_id, w["A"], "model")
    silence(store, w["A"], DEAD_AFTER + 1)
    assert len(store.reclaim_from_dead(DEAD_AFTER)) == 1
    assert store.begin_chunk(job, m.chunk_id, w["B"], "model") is None
    assert store.finish_chunk(job, m.chunk_id, rows_for(m)) is True  # A wakes up and writes first
    assert store.finish_chunk(job, m.chunk_id, rows_for(m)) is False  # B's write changes nothing
    assert store.begin_chunk(job, m.chunk_id, w["C"], "model") == "chunk already done"  # the broker's own redelivery
    st = store.status(job)
    assert (st.state, st.pairs_scored, store.score_count(job)) == ("completed", 3, 3)


def test_finish_wins_over_a_late_reclaim(store, registry, w):
    job, (m,) = new_job(store, n=1)
    register(registry, w["A"])
    store.begin_chunk(job, m.chunk_id, w["A"], "model")
    silence(store, w["A"], DEAD_AFTER + 1)
    assert store.finish_chunk(job, m.chunk_id, rows_for(m)) is True
    assert store.reclaim_from_dead(DEAD_AFTER) == []
    assert store.status(job).pairs_scored == 3


def test_reclaim_and_finish_racing_in_threads(store, registry, w):
    """Many rounds of a sweeper and a slow worker hitting the same chunk at once: never two counts."""
    for _ in range(10):
        job, (m,) = new_job(store, n=1)
        register(registry, w["A"])
        store.begin_chunk(job, m.chunk_id, w["A"], "model")
        silence(store, w["A"], DEAD_AFTER + 1)
        barrier = threading.Barrier(2)
        out: dict[str, object] = {}

        def sweep():
            barrier.wait()
            out["reclaimed"] = store.reclaim_from_dead(DEAD_AFTER)

        def finish():
            barrier.wait()
            out["finished"] = store.finish_chunk(job, m.chunk_id, rows_for(m))

        threads = [threading.Thread(target=sweep), threading.Thread(target=finish)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert out["finished"] is True
        st = store.status(job)
        assert (st.state, st.pairs_scored, store.score_count(job)) == ("completed", 3, 3)


def test_one_sweeper_at_a_time(registry, w):
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def take(holder: str):
        barrier.wait()
        results.append(registry.acquire_lease(f"test-{w['A']}", holder, 30))

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == [False, False, False, True]


@pytest.fixture()
def broker(redis_url) -> tuple[str, redis.Redis]:
    client = redis_client(redis_url)
    client.flushdb()
    return redis_url, client


def test_sweeper_resends_what_the_broker_lost(store, registry, broker):
    url, client = broker
    settings = Settings(broker_url=url, heartbeat_interval=1, worker_dead_after=DEAD_AFTER)
    app = make_app(settings)
    job, (m0, m1) = new_job(store)
    publish(app, [m0], settings.queue)  # m1 never reached the broker (say the producer died)
    store.mark_enqueued([m0.chunk_id])
    with store.session.begin() as s:
        s.execute(update(Job).where(Job.id == job).values(created_at=now() - timedelta(seconds=30)))
        s.execute(update(Chunk).where(Chunk.job_id == job).values(enqueued_at=now() - timedelta(seconds=30)))
    sweeper = Sweeper(store, registry, app, settings, "sweeper-1")
    assert chunks_in_broker(app, [settings.queue], DEAD_AFTER) == {m0.chunk_id}
    mine = {m0.chunk_id, m1.chunk_id}  # (other tests' jobs share the PostgreSQL database)
    result = sweeper.run_once(recheck_delay=0.1)
    assert result.swept and mine & set(result.lost) == {m1.chunk_id}
    assert chunks_in_broker(app, [settings.queue], DEAD_AFTER) >= mine
    assert not mine & set(sweeper.run_once(recheck_delay=0.1).lost)  # just re-sent: not again

    client.flushdb()  # Redis restarted without persistence: the queue is gone
    with store.session.begin() as s:
        s.execute(update(Chunk).where(Chunk.job_id == job).values(enqueued_at=now() - timedelta(seconds=30)))
    assert mine <= set(sweeper.run_once(recheck_delay=0.1).lost)
    other = Sweeper(store, registry, app, settings, "sweeper-2")
    assert other.run_once().swept is False  # the lease is held


def test_delivered_unacked_chunk_counts_as_present_until_dead_after(store, registry, broker):
    url, _ = broker
    settings = Settings(broker_url=url)
    app = make_app(settings)
    _, (m0, _) = new_job(store)
    publish(app, [m0], settings.queue)
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(settings.queue, no_ack=False)
        message = queue.get(timeout=5)  # delivered, not acknowledged: kombu keeps it in `unacked`
        assert chunks_in_broker(app, [settings.queue], delivered_within=60) == {m0.chunk_id}
        # delivered long ago and never begun: its consumer died before begin_chunk
        assert chunks_in_broker(app, [settings.queue], delivered_within=0.0) == set()
        message.ack()
        queue.close()


def test_a_dead_worker_holds_nothing_once_swept(store, registry, w):
    """Issue 19: the registry listed a crashed worker as still holding chunks finished by others."""
    register(registry, w["A"])
    register(registry, w["B"])
    job, (m, _) = new_job(store)
    store.begin_chunk(job, m.chunk_id, w["A"], "model")
    registry.heartbeat(w["A"], holding=[m.chunk_id], state="ready")
    registry.heartbeat(w["B"], holding=[99], state="ready")
    silence(store, w["A"], DEAD_AFTER + 5)
    assert registry.release_dead(DEAD_AFTER) >= 1
    by_id = {x.worker_id: x for x in registry.workers(DEAD_AFTER)}
    assert (by_id[w["A"]].state, by_id[w["A"]].holding) == ("dead", [])
    assert by_id[w["B"]].holding == [99], "a live worker keeps what it holds"


def test_sweeper_resends_lost_chunks_to_their_models_queue(store, registry, broker):
    """Self-healing per model: a lost chunk of a model's job goes back to that model's queue (or its
    pinned context's), at its own priority, never to another model's."""
    from rerankq.broker import priority_lists
    from rerankq.routing import context_queue, model_queue

    url, client = broker
    settings = Settings(broker_url=url, heartbeat_interval=1, worker_dead_after=DEAD_AFTER)
    app = make_app(settings)
    pairs = [InlinePair(query_id="q", doc_id="d", query="q", document="d")]
    spec = InlineSpec(pairs=pairs).model_dump(mode="json")
    batch, (b,) = store.create_job(kind="inline", chunks=[NewChunk(spec, 1)], model="org/a")
    pinned, (p,) = store.create_job(kind="inline", chunks=[NewChunk(spec, 1)], model="org/b", score_context="c" * 64)
    rerank, (r,) = store.create_job(kind="inline", chunks=[NewChunk(spec, 1)], model="org/a", name="rerank")
    with store.session.begin() as s:
        for job in (batch, pinned, rerank):
            s.execute(update(Job).where(Job.id == job).values(created_at=now() - timedelta(seconds=30)))
    sweeper = Sweeper(store, registry, app, settings, "sweeper-1")  # the module's sweeper: the lease is its own
    assert {b.chunk_id, p.chunk_id, r.chunk_id} <= set(sweeper.run_once(0.1).lost)
    a_lists, b_lists = priority_lists(model_queue("gpu", "org/a")), priority_lists(context_queue("gpu", "org/b", "c" * 64))
    assert client.llen(a_lists["batch"]) == 1 and client.llen(a_lists["interactive"]) == 1
    assert client.llen(b_lists["batch"]) == 1
    assert client.llen(priority_lists(model_queue("gpu", "org/b"))["batch"]) == 0, "a pinned job goes to its context's queue"


def test_a_worker_reports_its_gpu_memory_once_loaded(registry, w):
    """The engine reserves GPU memory at load and holds it: the ready beat records it for the workers page."""
    register(registry, w["A"])
    registry.heartbeat(w["A"], state="ready", engine={"engine": "vllm", "gpu_memory_bytes": 7 * 2**30})
    (mine,) = [x for x in registry.workers(DEAD_AFTER) if x.worker_id == w["A"]]
    assert mine.state == "ready" and mine.engine["gpu_memory_bytes"] == 7 * 2**30


def test_workers_of_one_context_starting_together_all_record_it(store):
    """Two workers of one context inserted the same row at once: the loser's context was lost with the error."""
    from rerankq.store.contexts import record_context

    digest = uuid.uuid4().hex * 2
    barrier, errors = threading.Barrier(6), []

    def start() -> None:
        barrier.wait()
        try:
            record_context(store, digest, "model", {"model": "model"}, {})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
