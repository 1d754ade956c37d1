"""The SQL ledger on SQLite and PostgreSQL: idempotent chunk writes, true states under concurrency, ranks."""

from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

from producer.export import export_parquet, iter_ranked
from rerankq.store.db import DatabaseError, check_revision
from rerankq.store.errors import UnknownJob
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from schemas import InlinePair, InlineSpec, JobState
from tests.conftest import migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Ledger:
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    migrate(url)
    return Ledger(url)


def chunks(n: int, per: int = 3) -> list[NewChunk]:
    out = []
    for c in range(n):
        pairs = [InlinePair(query_id=f"q{c}", doc_id=f"d{i}", query="q", document="d") for i in range(per)]
        out.append(NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), per))
    return out


def rows_for(message, score: float = 0.5) -> list[ScoreRow]:
    return [ScoreRow(p.query_id, p.doc_id, score, None) for p in message.spec.pairs]


def test_redelivered_chunk_never_duplicates(store):
    job, messages = store.create_job(kind="inline", chunks=chunks(2))
    m = messages[0]
    assert store.begin_chunk(job, m.chunk_id, "w1", "model") is None
    assert store.finish_chunk(job, m.chunk_id, rows_for(m)) is True
    assert store.begin_chunk(job, m.chunk_id, "w2", "model") == "chunk already done"
    assert store.finish_chunk(job, m.chunk_id, rows_for(m, 0.9)) is False
    status = store.status(job)
    assert (status.pairs_scored, status.state, store.score_count(job)) == (3, JobState.running, 3)
    assert [r["score"] for r in iter_ranked(store, job)] == [0.5, 0.5, 0.5]


def test_concurrent_chunk_finishes_finalize_once(store):
    job, messages = store.create_job(kind="inline", chunks=chunks(8))
    for m in messages:
        store.begin_chunk(job, m.chunk_id, "w", "model")
    barrier = threading.Barrier(len(messages))

    def finish(m):
        barrier.wait()
        store.finish_chunk(job, m.chunk_id, rows_for(m))
        store.finish_chunk(job, m.chunk_id, rows_for(m))  # and a redelivery racing it

    threads = [threading.Thread(target=finish, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = store.status(job)
    assert status.state == JobState.completed and status.finished_at is not None
    assert (status.pairs_scored, status.chunks.done, store.score_count(job)) == (24, 8, 24)


def test_pair_errors_and_failed_chunks_give_completed_with_errors(store):
    job, (a, b, c) = store.create_job(kind="inline", chunks=chunks(3))
    for m in (a, b, c):
        store.begin_chunk(job, m.chunk_id, "w", "model")
    store.finish_chunk(job, a.chunk_id, rows_for(a))
    bad = rows_for(b)
    bad[1] = ScoreRow(bad[1].query_id, bad[1].doc_id, None, "document is empty")
    store.finish_chunk(job, b.chunk_id, bad)
    store.chunk_attempt_failed(job, c.chunk_id, "boom", final=False)
    assert store.status(job).state == JobState.running
    store.chunk_attempt_failed(job, c.chunk_id, "boom", final=True)
    status = store.status(job)
    assert status.state == JobState.completed_with_errors
    assert (status.pairs_scored, status.pairs_failed, status.chunks.failed) == (5, 4, 1)
    assert any("boom" in e for e in status.errors)
    assert "pair ('q1', 'd1'): document is empty" in status.errors
    assert [m.chunk_id for m in store.reopen_failed(job)] == [c.chunk_id]
    assert store.status(job).state == JobState.running
    store.begin_chunk(job, c.chunk_id, "w", "model")
    store.finish_chunk(job, c.chunk_id, rows_for(c))
    assert store.status(job).state == JobState.completed_with_errors  # the pair error stays counted


def test_all_chunks_failed_is_failed(store):
    job, (a,) = store.create_job(kind="inline", chunks=chunks(1))
    store.begin_chunk(job, a.chunk_id, "w", "model")
    store.chunk_attempt_failed(job, a.chunk_id, "boom", final=True)
    assert store.status(job).state == JobState.failed


def test_cancel_stops_new_chunks_and_keeps_scores(store):
    job, (a, b, c) = store.create_job(kind="inline", chunks=chunks(3))
    store.begin_chunk(job, a.chunk_id, "w", "model")
    store.finish_chunk(job, a.chunk_id, rows_for(a))
    store.begin_chunk(job, b.chunk_id, "w", "model")
    assert store.cancel(job) == JobState.cancelled
    assert store.begin_chunk(job, c.chunk_id, "w", "model") == "chunk already cancelled"
    store.finish_chunk(job, b.chunk_id, rows_for(b))  # the chunk in flight may still land
    status = store.status(job)
    assert status.state == JobState.cancelled
    assert (status.chunks.done, status.chunks.cancelled, store.score_count(job)) == (2, 1, 6)
    assert store.resumable(job) == [] and store.cancel(job) == JobState.cancelled


def test_resumable_is_what_is_not_finished(store):
    job, (a, b, c) = store.create_job(kind="inline", chunks=chunks(3))
    store.begin_chunk(job, a.chunk_id, "w", "model")
    store.finish_chunk(job, a.chunk_id, rows_for(a))
    store.begin_chunk(job, b.chunk_id, "w", "model")
    assert [m.chunk_id for m in store.resumable(job)] == [b.chunk_id, c.chunk_id]
    assert store.resumable(job)[1].spec == c.spec


def test_export_ranks_ties_by_doc_id_and_failed_last(store, tmp_path):
    pairs = [InlinePair(query_id=q, doc_id=d, query="q", document="x") for q in ("é-q", "a-q") for d in ("b", "a", "ü", "c", "Z")]
    job, (m,) = store.create_job(kind="inline", chunks=[NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), 10)])
    store.begin_chunk(job, m.chunk_id, "w", "model")
    scores = {"b": 0.7, "a": 0.7, "ü": 0.9, "c": None, "Z": 0.7}
    store.finish_chunk(job, m.chunk_id, [ScoreRow(p.query_id, p.doc_id, scores[p.doc_id], None if scores[p.doc_id] is not None else "err") for p in pairs])
    out = tmp_path / "x.parquet"
    assert export_parquet(store, job, out) == 10
    table = pq.read_table(out).to_pylist()
    assert [r["query_id"] for r in table] == ["a-q"] * 5 + ["é-q"] * 5  # byte order on both databases
    assert [(r["doc_id"], r["rank"]) for r in table[:5]] == [("ü", 1), ("Z", 2), ("a", 3), ("b", 4), ("c", None)]
    assert table[4]["error"] == "err" and table[4]["score"] is None


def test_unknown_job_and_unmigrated_database(store, tmp_path):
    with pytest.raises(UnknownJob):
        store.status("nope")
    with pytest.raises(DatabaseError, match="producer db upgrade"):
        check_revision(f"sqlite:///{tmp_path / 'empty.db'}")


def test_head_revision_is_alembics_head(tmp_path):
    """``HEAD_REVISION`` is written out (commands skip alembic): it must be the migrations' head, and
    the plain-SQL revision read must agree with alembic's after an upgrade."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from rerankq.store.db import HEAD_REVISION, MIGRATIONS_DIR, current_revision, get_engine, upgrade

    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == HEAD_REVISION
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert current_revision(get_engine(url)) is None
    assert upgrade(url) == HEAD_REVISION
    with get_engine(url).connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD_REVISION
    assert current_revision(get_engine(url)) == HEAD_REVISION
    check_revision(url)
