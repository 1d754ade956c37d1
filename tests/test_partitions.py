"""PostgreSQL's scores, one partition per job (rerankq/store/partitions.py): the migration converts a
ledger, a job's partition comes with it without blocking writers of other jobs, and `producer prune`
retires a job without deleting rows (PostgreSQL's own counters say so), finishing a half-done detach
and dropping what an interrupted prune left behind."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from alembic import command
from sqlalchemy import text, update

from rerankq.store.clock import now
from rerankq.store.db import alembic_config, get_engine
from rerankq.store.ledger import Ledger
from rerankq.store.models import Job
from rerankq.store.partitions import job_id_of, partition_name, retire_partition
from rerankq.store.records import NewChunk, ScoreRow
from rerankq.store.retention import parse_age, prune_jobs
from schemas import InlinePair, InlineSpec, JobState
from tests.conftest import migrate
from tests.services import POSTGRES_URL, create_database, drop_database


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture()
def pg(pg_url):
    """The module's private database at the head revision, emptied of jobs before each test."""
    migrate(pg_url)
    store = Ledger(pg_url)
    with store.session.begin() as s:  # earlier tests' jobs; their partitions are then orphans, pruned
        s.execute(text("DELETE FROM chunks"))
        s.execute(text("DELETE FROM jobs"))
    prune_jobs(store, 0)
    assert _partitions(store) == {}
    return store


def _job(store: Ledger, pairs: int, chunks: int = 1, finish: bool = True) -> str:
    """A finished job of ``pairs`` scores over ``chunks`` chunks, written as workers write them (COPY)."""
    per = pairs // chunks
    specs = [
        NewChunk(InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json"), per)
        for _ in range(chunks)
    ]
    job, messages = store.create_job(kind="inline", chunks=specs)
    if finish:
        for i, m in enumerate(messages):
            assert store.begin_chunk(job, m.chunk_id, "w", "m") is None
            rows = [ScoreRow(f"q{i}-{k // 100}", f"d{k}", k / pairs, None) for k in range(per)]
            assert store.finish_chunk(job, m.chunk_id, rows)
    return job


def _age(store: Ledger, *jobs: str) -> None:
    old = now() - timedelta(days=40)
    with store.session.begin() as s:
        s.execute(update(Job).where(Job.id.in_(jobs)).values(created_at=old, finished_at=old))


def _partitions(store: Ledger) -> dict[str, bool]:
    """Tables named like a job partition: whether each is attached to scores."""
    with store.session() as s:
        rows = s.execute(
            text(
                "SELECT c.relname, EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid) FROM pg_class c "
                "WHERE c.relkind = 'r' AND c.relname ~ '^scores_[0-9a-f]{32}$'"
            )
        ).all()
    return {job_id_of(name): attached for name, attached in rows}  # type: ignore[misc]


def _tup_deleted(url: str, settle_at_least: int) -> int:
    """PostgreSQL's count of rows deleted in this database (pg_stat_database), once the deletes we know
    of (``settle_at_least``) have been reported: backends report their counters lazily."""
    get_engine(url).dispose()  # our connections exit, and flush their counters
    deadline = time.monotonic() + 15
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            n = conn.execute("SELECT tup_deleted FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
            if n >= settle_at_least or time.monotonic() > deadline:
                time.sleep(0.6)  # anything later still in flight
                conn.execute("SELECT pg_stat_clear_snapshot()")
                return conn.execute("SELECT tup_deleted FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
            time.sleep(0.2)


def test_partition_names_come_only_from_job_ids():
    job = str(uuid.uuid4())
    assert partition_name(job) == "scores_" + job.replace("-", "") and job_id_of(partition_name(job)) == job
    for bad in ("x'); DROP TABLE jobs; --", job.upper(), job + " ", job.replace("-", ""), "", None):
        with pytest.raises(ValueError):
            partition_name(bad)  # type: ignore[arg-type]
    assert job_id_of("scores_cache") is None


def test_each_job_gets_its_partition(pg):
    a, b = _job(pg, 300, chunks=3), _job(pg, 50)
    assert _partitions(pg) == {a: True, b: True}
    with pg.session() as s:
        assert s.scalar(text(f"SELECT count(*) FROM {partition_name(a)}")) == 300
        assert s.scalar(text("SELECT count(*) FROM scores WHERE job_id = :j"), {"j": b}) == 50
        kind = s.scalar(text("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'scores'::regclass"))
    assert kind == "l"
    assert pg.score_count(a) == 300 and pg.status(a).state == JobState.completed


def test_prune_retires_a_job_without_deleting_rows(pg, pg_url):
    """The acceptance test of issue 17: PostgreSQL's own delete counter moves by the job's few chunk and
    job rows only, not by its 5,000 score rows; the same counter does see per-row deletes."""
    big, other = _job(pg, 5000, chunks=5), _job(pg, 5000, chunks=5)
    _age(pg, big)
    before = _tup_deleted(pg_url, 0)
    report = prune_jobs(pg, parse_age("30d"))
    assert report.jobs == [big] and (report.scores, report.chunks) == (5000, 5)
    after = _tup_deleted(pg_url, before + 6)  # 5 chunk rows + 1 job row
    assert after - before < 100, f"{after - before} rows deleted to prune a job of 5,000 scores"
    assert _partitions(pg) == {other: True}
    assert pg.score_count(other) == 5000
    # the control: the counter does count deletes of scores
    with pg.session.begin() as s:
        s.execute(text("DELETE FROM scores WHERE job_id = :j"), {"j": other})
    assert _tup_deleted(pg_url, after + 5000) - after >= 5000


def test_prune_keeps_jobs_that_are_not_finished_and_counts_dry_runs(pg):
    done, running = _job(pg, 200, chunks=2), _job(pg, 10, finish=False)
    _age(pg, done, running)
    dry = prune_jobs(pg, parse_age("30d"), dry_run=True)
    assert dry.jobs == [done] and (dry.scores, dry.chunks) == (200, 2)
    assert set(_partitions(pg)) == {done, running}, "a dry run drops nothing"
    assert prune_jobs(pg, parse_age("30d")).jobs == [done]
    assert _partitions(pg) == {running: True}


def test_creating_a_job_never_blocks_writers_of_other_jobs(pg, pg_url):
    """A job's creating transaction holds its ATTACH (SHARE UPDATE EXCLUSIVE on scores) until it commits;
    meanwhile a worker finishes a chunk of another job, with a lock timeout that would fail it."""
    spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
    other, (msg,) = pg.create_job(kind="inline", chunks=[NewChunk(spec, 1)])
    assert pg.begin_chunk(other, msg.chunk_id, "w", "m") is None
    with pg.session.begin() as s:  # the creating transaction, left open while the worker writes
        pg.create_job(kind="inline", chunks=[NewChunk(spec, 1)], session=s)
        with psycopg.connect(_libpq(pg_url), autocommit=True) as worker:
            worker.execute("SET lock_timeout = '2s'")
            worker.execute(
                "INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score) VALUES (%s, 'q', 'd', %s, 0.5)",
                (other, msg.chunk_id),
            )
    assert pg.score_count(other) == 1


def test_prune_waits_for_no_writer_and_no_writer_waits_for_it(pg, pg_url):
    """DETACH … CONCURRENTLY waits for transactions already using scores (an open worker write here);
    while it waits, a write to another job goes through at once."""
    gone, busy, third = _job(pg, 100), _job(pg, 10, finish=False), _job(pg, 10, finish=False)
    _age(pg, gone)
    writer = psycopg.connect(_libpq(pg_url))
    writer.execute("INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score) VALUES (%s, 'a', 'b', 1, 0.1)", (busy,))
    result: dict = {}
    pruner = threading.Thread(target=lambda: result.setdefault("r", prune_jobs(pg, parse_age("30d"))))
    pruner.start()
    try:
        time.sleep(1.0)
        assert pruner.is_alive(), "the detach waits for the open transaction on scores"
        with psycopg.connect(_libpq(pg_url), autocommit=True) as other:
            other.execute("SET lock_timeout = '2s'")
            other.execute("INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score) VALUES (%s, 'a', 'b', 1, 0.2)", (third,))
    finally:
        writer.commit()
        writer.close()
        pruner.join(30)
    assert result["r"].jobs == [gone] and gone not in _partitions(pg)
    assert pg.score_count(busy) == pg.score_count(third) == 1


def test_half_done_detach_and_orphans_are_finished_by_the_next_prune(pg, pg_url):
    pending, orphan, kept = _job(pg, 20), _job(pg, 20), _job(pg, 20)
    # a detach interrupted after its first transaction: the partition stays, marked pending
    holder = psycopg.connect(_libpq(pg_url))
    holder.execute("SELECT count(*) FROM scores")  # a transaction using scores: the detach must wait for it
    with psycopg.connect(_libpq(pg_url), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '500ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f"ALTER TABLE scores DETACH PARTITION {partition_name(pending)} CONCURRENTLY")
        assert conn.execute(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = %s::regclass", (partition_name(pending),)
        ).fetchone() == (True,)
    holder.rollback()
    holder.close()
    _age(pg, pending)
    # a prune interrupted after deleting a job's row, before dropping its partition
    with pg.session.begin() as s:
        s.execute(text("DELETE FROM chunks WHERE job_id = :j"), {"j": orphan})
        s.execute(text("DELETE FROM jobs WHERE id = :j"), {"j": orphan})
    report = prune_jobs(pg, parse_age("30d"))
    assert report.jobs == [pending] and report.orphans == 1
    assert _partitions(pg) == {kept: True}
    assert retire_partition(pg.session.kw["bind"], pending) is False, "nothing left to drop"


def test_migration_converts_a_ledger_and_back():
    url = create_database(POSTGRES_URL)
    try:
        cfg = alembic_config(url)
        command.upgrade(cfg, "0004_job_model")
        jobs = [str(uuid.uuid4()) for _ in range(3)]
        with psycopg.connect(_libpq(url)) as conn:
            for i, j in enumerate(jobs):
                conn.execute(
                    "INSERT INTO jobs (id, kind, state, pairs_total, chunks_total, created_at, pairs_reused) "
                    "VALUES (%s, 'inline', 'completed', %s, 1, now(), 0)",
                    (j, 100 * i),
                )
                with conn.cursor().copy("COPY scores (job_id, query_id, doc_id, chunk_id, score, error) FROM STDIN") as cp:
                    for k in range(100 * i):
                        cp.write_row((j, f"q{k % 7}", f"d{k}", 1, k / 7, None if k % 9 else "too long"))
            conn.execute("INSERT INTO scores (job_id, query_id, doc_id, chunk_id) VALUES (%s, 'q', 'd', 1)", (str(uuid.uuid4()),))
            before = sorted(conn.execute("SELECT * FROM scores WHERE job_id = ANY(%s)", (jobs,)).fetchall())
        command.upgrade(cfg, "0005_partitioned_scores")  # later revisions add columns
        with psycopg.connect(_libpq(url)) as conn:
            assert conn.execute("SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'scores'::regclass").fetchone() == (1,)
            assert sorted(conn.execute("SELECT * FROM scores").fetchall()) == before, "the job-less row is not kept"
            for i, j in enumerate(jobs):
                assert conn.execute(f"SELECT count(*) FROM {partition_name(j)}").fetchone() == (100 * i,)
        command.downgrade(cfg, "0004_job_model")
        with psycopg.connect(_libpq(url)) as conn:
            assert conn.execute("SELECT count(*) FROM pg_partitioned_table").fetchone() == (0,)
            assert sorted(conn.execute("SELECT * FROM scores").fetchall()) == before
        command.upgrade(cfg, "head")
    finally:
        get_engine(url).dispose()
        drop_database(POSTGRES_URL, url)


def test_a_chunk_finished_twice_at_once_counts_once(pg):
    """finish_chunk writes its rows before it locks the job row (chunks of a job write in parallel): two
    deliveries of one chunk finishing together still count it once and leave each row once."""
    spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
    job, (msg,) = pg.create_job(kind="inline", chunks=[NewChunk(spec, 3000)])
    assert pg.begin_chunk(job, msg.chunk_id, "w", "m") is None
    rows = [ScoreRow(f"q{k // 100}", f"d{k}", k / 3000, None, k.to_bytes(32, "big")) for k in range(3000)]
    barrier, results = threading.Barrier(2), []

    def deliver() -> None:
        barrier.wait()
        results.append(pg.finish_chunk(job, msg.chunk_id, rows))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [False, True]
    st = pg.status(job)
    assert st.state == JobState.completed and st.pairs_scored == 3000 and pg.score_count(job) == 3000
