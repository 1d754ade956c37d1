"""The score cache in SQL: filled by workers as chunks finish, read by the producer at submission.

Filling happens inside ``Ledger.finish_chunk``'s transaction, keyed in the *scoring worker's* own
context, so an entry exists only for a score that was committed, and only under the context that
produced it. Reading is set-based: the producer streams the submission's keys into a temporary
staging table (COPY on PostgreSQL, executemany on SQLite) and joins it with the cache once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from schemas import ChunkMessage
from worker.logs import get_logger
from worker.store.ledger import Ledger, NewChunk, ScoreRow, _aware, now
from worker.store.models import CachedScore, ScoreContext

log = get_logger("rerankq.score_cache")
REUSED_CHUNK = 0  # scores.chunk_id of a pair copied from the cache (chunk ids start at 1)
STAGE_ROWS = 50_000
REFRESH_AFTER = timedelta(hours=1)  # last_used is rewritten at most this often per entry


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

    One connection for the whole submission (temporary tables belong to it). On PostgreSQL it runs
    at REPEATABLE READ, so the misses planned and the hits copied come from one snapshot even while
    ``producer cache prune`` deletes; on SQLite the recording transaction holds the write lock."""

    def __init__(self, store: Ledger):
        self.store = store
        self.pg = store.dialect == "postgresql"
        conn = store.session.kw["bind"].connect()
        self.conn = conn.execution_options(isolation_level="REPEATABLE READ") if self.pg else conn
        self.raw = self.conn.connection.dbapi_connection
        self.count = 0
        cur = self.raw.cursor()
        cur.execute("DROP TABLE IF EXISTS reuse_stage")
        if self.pg:
            cur.execute("CREATE TEMP TABLE reuse_stage (seq bigint, key bytea, query_id text, doc_id text)")
        else:  # seq is the rowid: the misses come back in submission order without a sort
            cur.execute("CREATE TEMP TABLE reuse_stage (seq INTEGER PRIMARY KEY, key BLOB, query_id TEXT, doc_id TEXT)")
        cur.close()

    def add(self, keys: Sequence[bytes | None], query_ids: Sequence[str], doc_ids: Sequence[str]) -> None:
        """Stage one batch (seq continues from the previous batch)."""
        start = self.count
        self.count += len(keys)
        rows = zip(range(start, self.count), keys, query_ids, doc_ids)
        cur = self.raw.cursor()
        try:
            if self.pg:
                with cur.copy("COPY reuse_stage (seq, key, query_id, doc_id) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.executemany("INSERT INTO reuse_stage (seq, key, query_id, doc_id) VALUES (?, ?, ?, ?)", rows)
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

        with Session(bind=self.conn, expire_on_commit=False) as s, s.begin():
            result = s.execute(
                text(
                    "SELECT st.seq, st.query_id FROM reuse_stage st WHERE NOT EXISTS "
                    "(SELECT 1 FROM score_cache c WHERE c.key = st.key) ORDER BY st.seq"
                ).execution_options(yield_per=STAGE_ROWS)
            )
            chunks = plan(counted(iter(result)))
            result.close()
            reused = self.count - misses
            job_id, messages = self.store.create_job(
                chunks=chunks, pairs_reused=reused, score_context=context, session=s, **job  # type: ignore[arg-type]
            )
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
        if reused:
            self._refresh()
        return job_id, messages, reused, self.count

    def _refresh(self) -> None:
        """Mark the reused entries used (one bulk UPDATE, after the job is committed: best effort)."""
        t = now()
        try:
            with self.conn.begin():
                self.conn.execute(
                    text(
                        "UPDATE score_cache SET last_used = :t WHERE last_used < :stale "
                        "AND key IN (SELECT key FROM reuse_stage)"
                    ),
                    {"t": t, "stale": t - REFRESH_AFTER},
                )
        except Exception as exc:  # e.g. a concurrent prune on PostgreSQL: the job is recorded regardless
            log.warning("cache_refresh_failed", error=str(exc).splitlines()[0][:200])

    def close(self) -> None:
        try:
            self.raw.rollback()  # whatever a failure left open (a recorded job is already committed)
            cur = self.raw.cursor()
            cur.execute("DROP TABLE IF EXISTS reuse_stage")
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


def prune_cache(store: Ledger, unused_for: float, dry_run: bool = False, batch: int = STAGE_ROWS) -> CachePruneReport:
    """Delete entries not used (written or reused) for ``unused_for`` seconds, in short transactions so
    workers' writes are never held up for long. Safe while they run: what they write is fresh."""
    cutoff = now() - timedelta(seconds=unused_for)
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
    from worker.score_key import ScoringContext, configured
    from worker.store.registry import Registry

    assert isinstance(context, ScoringContext)
    record_context(store, context.digest, settings.model, configured(settings), context.as_dict())  # type: ignore[attr-defined, arg-type]
    registry = Registry(settings.database, settings.connect_timeout)  # type: ignore[attr-defined]
    if not registry.heartbeat(worker_id, fingerprint=context.digest):
        log.info("fingerprint_not_in_registry", worker=worker_id, reason="worker not registered")
