"""The score cache in SQL: filled by workers as chunks finish, read by the producer at submission.

Filling happens inside ``Ledger.finish_chunk``'s transaction, keyed in the *scoring worker's* own
context, so an entry exists only for a score that was committed, and only under the context that
produced it. Reading is set-based: the producer streams the submission's keys into a temporary
staging table (COPY on PostgreSQL, executemany on SQLite) and joins it with the cache once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from schemas import ChunkMessage
from rerankq.logs import get_logger
from rerankq.store.ledger import Ledger, NewChunk, ScoreRow, _aware, now
from rerankq.store.models import CachedScore, ScoreContext

log = get_logger("rerankq.score_cache")
REUSED_CHUNK = 0  # scores.chunk_id of a pair copied from the cache (chunk ids start at 1)
STAGE_ROWS = 50_000


def fill_cache(s: Session, dialect: str, rows: Sequence[ScoreRow]) -> None:
    """Cache the scored pairs of a finishing chunk (in its transaction); existing keys are kept."""
    t = now()
    values = [
        {"key": r.key, "score": r.score, "created_at": t, "last_used": t}
        for r in rows
        if r.key is not None and r.score is not None and r.error is None
    ]
    if not values:
        return
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    s.execute(insert(CachedScore).on_conflict_do_nothing(index_elements=["key"]), values)


# --- scoring contexts ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecordedContext:
    digest: str
    model: str
    settings: dict
    context: dict
    last_seen: datetime


def record_context(store: Ledger, digest: str, model: str, settings: dict, context: dict) -> None:
    """A worker's context, once its engine is loaded: what producers may reuse scores under."""
    t = now()
    with store.session.begin() as s:
        row = s.get(ScoreContext, digest, with_for_update=True)
        if row is None:
            s.add(ScoreContext(digest=digest, model=model, settings=settings, context=context, created_at=t, last_seen=t))
        else:
            row.last_seen = t


def recorded_contexts(store: Ledger, settings: dict, max_age: float) -> list[RecordedContext]:
    """Contexts recorded within ``max_age`` seconds by workers configured exactly like ``settings``."""
    since = now() - timedelta(seconds=max_age)
    with store.session() as s:
        rows = s.scalars(
            select(ScoreContext).where(ScoreContext.model == settings["model"], ScoreContext.last_seen >= since)
        ).all()
        return [
            RecordedContext(r.digest, r.model, dict(r.settings), dict(r.context), _aware(r.last_seen))  # type: ignore[arg-type]
            for r in rows
            if dict(r.settings) == settings
        ]


# --- reading: the producer's staging table --------------------------------------------------------
class ReuseStage:
    """The keys of one submission in a temporary table, joined with the cache when the job is recorded.

    One connection for the whole submission (temporary tables belong to it).

    PostgreSQL: one REPEATABLE READ transaction from the first batch to the job's commit, so every
    lookup sees one snapshot even while ``producer cache prune`` deletes. The job row is written
    first (invisible until commit, gone on rollback if a later row is bad) and each batch's hits are
    copied into its scores as the batch arrives, by a helper thread: the database writes while
    Python validates and hashes the next batch (writing the job's rows is most of the cost).
    SQLite: batches go to a temporary table (no lock on the ledger); the recording transaction then
    holds the write lock while it copies the hits."""

    def __init__(self, store: Ledger, touch_interval: float = 7 * 86400.0):
        self.store = store
        self.pg = store.dialect == "postgresql"
        self.touch_interval = touch_interval
        self.job_id = str(uuid.uuid4())
        conn = store.session.kw["bind"].connect()
        self.conn = conn.execution_options(isolation_level="REPEATABLE READ") if self.pg else conn
        self.raw = self.conn.connection.dbapi_connection
        self.count = 0
        self.reused = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        cur = self.raw.cursor()
        cur.execute("DROP TABLE IF EXISTS reuse_stage")
        if self.pg:
            cur.execute("DROP TABLE IF EXISTS reuse_batch")
            cur.execute("CREATE TEMP TABLE reuse_stage (seq bigint, key bytea, query_id text, doc_id text, hit boolean)")
            cur.execute("CREATE TEMP TABLE reuse_batch (seq bigint, key bytea, query_id text, doc_id text)")
            cur.execute(
                "INSERT INTO jobs (id, kind, state, pairs_total, chunks_total, created_at, pairs_reused) "
                "VALUES (%s, 'manifest', 'queued', 0, 0, %s, 0)",
                (self.job_id, now()),
            )
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="reuse-copy")
        else:  # seq is the rowid: the misses come back in submission order without a sort
            cur.execute("CREATE TEMP TABLE reuse_stage (seq INTEGER PRIMARY KEY, key BLOB, query_id TEXT, doc_id TEXT)")
        cur.close()

    def add(self, keys: Sequence[bytes | None], query_ids: Sequence[str], doc_ids: Sequence[str]) -> None:
        """Stage one batch (seq continues from the previous batch)."""
        start = self.count
        self.count += len(keys)
        rows = list(zip(range(start, self.count), keys, query_ids, doc_ids))
        if self.pg:
            self._wait()  # at most one batch in flight: bounded memory, and errors surface here
            self._pending = self._pool.submit(self._pg_batch, rows)  # type: ignore[union-attr]
            return
        cur = self.raw.cursor()
        try:  # one transaction per batch (of the temporary database only: no lock on the ledger)
            cur.execute("BEGIN")
            cur.executemany("INSERT INTO reuse_stage (seq, key, query_id, doc_id) VALUES (?, ?, ?, ?)", rows)
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _pg_batch(self, rows: list[tuple]) -> None:
        cur = self.raw.cursor()
        try:
            cur.execute("TRUNCATE reuse_batch")
            with cur.copy("COPY reuse_batch (seq, key, query_id, doc_id) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            # One index probe into the cache per row of the batch (LIMIT keeps the planner from turning
            # it into a join that scans the whole cache for every batch); hits go to the job's scores,
            # and every row to the stage with whether it hit (the misses are then read without a join).
            cur.execute(
                "WITH j AS (SELECT b.seq, b.key, b.query_id, b.doc_id, x.score FROM reuse_batch b "
                "LEFT JOIN LATERAL (SELECT c.score FROM score_cache c WHERE c.key = b.key LIMIT 1) x ON true), "
                "copied AS (INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score, error) "
                "SELECT %s, query_id, doc_id, %s, score, NULL FROM j WHERE score IS NOT NULL RETURNING 1) "
                "INSERT INTO reuse_stage (seq, key, query_id, doc_id, hit) "
                "SELECT seq, key, query_id, doc_id, score IS NOT NULL FROM j",
                (self.job_id, REUSED_CHUNK),
            )
        finally:
            cur.close()

    def record(
        self, plan: Callable[[Iterator[tuple[int, str]]], list[NewChunk]], context: str, **job: object
    ) -> tuple[str, list[ChunkMessage], int, int]:
        """One transaction: plan chunks over the misses (``(seq, query_id)`` in order), record the job,
        copy the hits into its scores. Returns the job id, its messages, the pairs reused and staged."""
        misses = 0

        def counted(rows: Iterator) -> Iterator[tuple[int, str]]:
            nonlocal misses
            for seq, qid in rows:
                misses += 1
                yield seq, qid

        import time

        t0 = time.perf_counter()
        if self.pg:
            self._wait()
        misses_sql = (  # PostgreSQL: looked up batch by batch already, in this transaction's snapshot
            "SELECT st.seq, st.query_id FROM reuse_stage st WHERE NOT st.hit ORDER BY st.seq"
            if self.pg
            else "SELECT st.seq, st.query_id FROM reuse_stage st WHERE NOT EXISTS "
            "(SELECT 1 FROM score_cache c WHERE c.key = st.key) ORDER BY st.seq"
        )
        with Session(bind=self.conn, expire_on_commit=False) as s, s.begin():
            result = s.execute(text(misses_sql).execution_options(yield_per=STAGE_ROWS))
            chunks = plan(counted(iter(result)))
            result.close()
            reused = self.count - misses
            t1 = time.perf_counter()
            job_id, messages = self.store.create_job(
                chunks=chunks, pairs_reused=reused, score_context=context, session=s, job_id=self.job_id, **job  # type: ignore[arg-type]
            )
            copied = reused  # PostgreSQL: the same statements copied the hits and flagged them
            if not self.pg:
                copied = s.execute(
                    text(
                        "INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score, error) "
                        "SELECT :job, st.query_id, st.doc_id, :chunk, c.score, NULL "
                        "FROM reuse_stage st JOIN score_cache c ON c.key = st.key"
                    ),
                    {"job": job_id, "chunk": REUSED_CHUNK},
                ).rowcount
            if copied != reused:  # cannot happen within one snapshot; never record a job that lies
                raise RuntimeError(f"score cache changed during submission: {copied} hits copied, {reused} planned")
        log.info(
            "reuse_recorded", job_id=job_id, staged=self.count, reused=reused, chunks=len(chunks),
            plan_s=round(t1 - t0, 2), copy_s=round(time.perf_counter() - t1, 2),
        )  # fmt: skip
        self.reused = reused
        return job_id, messages, reused, self.count

    def touch(self) -> None:
        """Mark the reused entries used: one bulk UPDATE after the job is committed (best effort), of
        the entries whose last use is older than ``touch_interval`` only. Rewriting every reused entry
        every night would cost as much as copying the scores; ``prune_cache`` allows for the interval."""
        if not self.reused:
            return
        import time

        t0, t = time.perf_counter(), now()
        stale = t - timedelta(seconds=self.touch_interval)
        try:
            with self.conn.begin():
                due = self.conn.execute(
                    select(CachedScore.key).where(CachedScore.last_used < stale).limit(1)
                ).first()
                if due is None:
                    return
                self.conn.execute(
                    text(
                        "UPDATE score_cache SET last_used = :t WHERE last_used < :stale "
                        f"AND key IN (SELECT key FROM reuse_stage{' WHERE hit' if self.pg else ''})"
                    ),
                    {"t": t, "stale": stale},
                )
            log.info("reuse_touched", touch_s=round(time.perf_counter() - t0, 2))
        except Exception as exc:  # e.g. a concurrent prune on PostgreSQL: the job is recorded regardless
            log.warning("cache_refresh_failed", error=str(exc).splitlines()[0][:200])

    def close(self) -> None:
        if self._pool is not None:  # the helper may still be using the connection
            try:
                self._wait()
            except Exception:  # noqa: S110 - rolled back below
                pass
            self._pool.shutdown()
        try:
            self.raw.rollback()  # whatever a failure left open (a recorded job is already committed)
            cur = self.raw.cursor()
            cur.execute("DROP TABLE IF EXISTS reuse_stage")
            cur.execute("DROP TABLE IF EXISTS reuse_batch")
            cur.close()
            self.raw.commit()
        except Exception as exc:  # the connection is discarded below anyway
            log.warning("stage_drop_failed", error=str(exc).splitlines()[0][:200])
        finally:
            self.conn.close()

    def __enter__(self) -> ReuseStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- retention -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CachePruneReport:
    removed: int
    kept: int
    cutoff: datetime


def prune_cache(
    store: Ledger, unused_for: float, touch_interval: float = 0.0, dry_run: bool = False, batch: int = STAGE_ROWS
) -> CachePruneReport:
    """Delete entries not used (written or reused) for ``unused_for`` seconds, in short transactions so
    workers' writes are never held up for long. Safe while they run: what they write is fresh.
    A reuse refreshes ``last_used`` only once it is ``touch_interval`` old, so that much is added:
    nothing used within ``unused_for`` is ever deleted."""
    cutoff = now() - timedelta(seconds=unused_for + touch_interval)
    removed = 0
    with store.session() as s:
        if dry_run:
            removed = s.scalar(select(func.count()).select_from(CachedScore).where(CachedScore.last_used < cutoff)) or 0
    while not dry_run:
        with store.session.begin() as s:
            victims = select(CachedScore.key).where(CachedScore.last_used < cutoff).limit(batch).scalar_subquery()
            n = s.execute(delete(CachedScore).where(CachedScore.key.in_(victims))).rowcount
        removed += n
        if n < batch:
            break
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(CachedScore)) or 0
    return CachePruneReport(removed, total - (removed if dry_run else 0), cutoff)


def cache_size(store: Ledger) -> tuple[int, datetime | None]:
    with store.session() as s:
        n, oldest = s.execute(select(func.count(), func.min(CachedScore.last_used))).one()
    return n or 0, _aware(oldest)


def record_worker_context(store: Ledger, worker_id: str, settings: object, context: object) -> None:
    """Called by a worker once its engine has loaded: its context in ``score_contexts`` (what producers
    reuse under) and its digest as the worker's ``fingerprint`` in the registry."""
    from rerankq.score_key import ScoringContext, configured
    from rerankq.store.registry import Registry

    assert isinstance(context, ScoringContext)
    record_context(store, context.digest, settings.model, configured(settings), context.as_dict())  # type: ignore[attr-defined, arg-type]
    registry = Registry(settings.database, settings.connect_timeout)  # type: ignore[attr-defined]
    if not registry.heartbeat(worker_id, fingerprint=context.digest):
        log.info("fingerprint_not_in_registry", worker=worker_id, reason="worker not registered")
