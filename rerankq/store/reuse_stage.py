"""Reuse at submission: the producer streams the submission's keys into a temporary staging table
(COPY on PostgreSQL, executemany on SQLite), joins it with the score cache once, and records the
job with the hits copied into its scores and chunks planned over the misses, in one transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import text
from sqlalchemy.orm import Session

from rerankq.logs import get_logger
from rerankq.store.cache_gens import DAY, day_of, jittered_gen_sql, mark_used
from rerankq.store.clock import now
from rerankq.store.ledger import Ledger
from rerankq.store.partitions import create_table_sql, partition_name
from rerankq.store.records import NewChunk
from schemas import ChunkMessage

log = get_logger("rerankq.reuse_stage")
REUSED_CHUNK = 0  # scores.chunk_id of a pair copied from the cache (chunk ids start at 1)
STAGE_ROWS = 50_000


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
        self.gens: set[int] = set()  # generations of the hits (PostgreSQL: gathered batch by batch)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        cur = self.raw.cursor()
        cur.execute("DROP TABLE IF EXISTS reuse_stage")
        if self.pg:
            cur.execute("DROP TABLE IF EXISTS reuse_batch")
            cur.execute("CREATE TEMP TABLE reuse_stage (seq bigint, key bytea, query_id text, doc_id text, hit boolean, gen int)")
            cur.execute("CREATE TEMP TABLE reuse_batch (seq bigint, key bytea, query_id text, doc_id text)")
            cur.execute(
                "INSERT INTO jobs (id, kind, state, pairs_total, chunks_total, created_at, pairs_reused) "
                "VALUES (%s, 'manifest', 'queued', 0, 0, %s, 0)",
                (self.job_id, now()),
            )
            # The job's partition of scores, as a table of its own until create_job keys and attaches it
            # (rerankq/store/partitions.py): the hits load with no index to maintain and no lock on
            # scores for the whole submission; a rollback drops it with the rest.
            cur.execute(create_table_sql(self.job_id))
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
                "WITH j AS (SELECT b.seq, b.key, b.query_id, b.doc_id, x.score, x.logit, x.gen FROM reuse_batch b "
                "LEFT JOIN LATERAL (SELECT c.score, c.logit, c.gen FROM score_cache c WHERE c.key = b.key LIMIT 1) x ON true), "
                f"copied AS (INSERT INTO {partition_name(self.job_id)} (job_id, query_id, doc_id, chunk_id, score, logit, error) "
                "SELECT %s, query_id, doc_id, %s, score, logit, NULL FROM j WHERE score IS NOT NULL RETURNING 1), "
                "staged AS (INSERT INTO reuse_stage (seq, key, query_id, doc_id, hit, gen) "
                "SELECT seq, key, query_id, doc_id, score IS NOT NULL, gen FROM j RETURNING 1) "
                "SELECT DISTINCT gen FROM j WHERE score IS NOT NULL",
                (self.job_id, REUSED_CHUNK),
            )
            self.gens.update(g for (g,) in cur.fetchall())
        finally:
            cur.close()

    def record(
        self, plan: Callable[[Iterator[tuple[int, str, bytes]]], Iterable[NewChunk]], context: str, **job: object
    ) -> tuple[str, list[ChunkMessage], int, int]:
        """One transaction: plan chunks over the misses (``(seq, query_id, key)`` in order), record the
        job, copy the hits into its scores. Returns the job id, its messages, the pairs reused and staged.
        ``plan`` reads every miss before it returns; it may return a generator, whose chunks are then
        built while the job is written (``create_job``'s ``messages=False`` keeps none of them)."""
        misses = 0

        def counted(rows: Iterator) -> Iterator[tuple[int, str, bytes]]:
            nonlocal misses
            for seq, qid, key in rows:
                misses += 1
                yield seq, qid, key

        t0 = time.perf_counter()
        if self.pg:
            self._wait()
            # The hits' generations marked used first, in a short transaction of its own: in the stage's
            # REPEATABLE READ transaction, a generation another submission marked meanwhile would be a
            # serialization failure. Marked before the job commits, so a failure after it only keeps
            # entries longer, never shorter.
            with self.store.session.begin() as marks:
                mark_used(marks, self.gens, now())
        misses_sql = (  # PostgreSQL: looked up batch by batch already, in this transaction's snapshot
            "SELECT st.seq, st.query_id, st.key FROM reuse_stage st WHERE NOT st.hit ORDER BY st.seq"
            if self.pg
            else "SELECT st.seq, st.query_id, st.key FROM reuse_stage st WHERE NOT EXISTS "
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
                        "INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score, logit, error) "
                        "SELECT :job, st.query_id, st.doc_id, :chunk, c.score, c.logit, NULL "
                        "FROM reuse_stage st JOIN score_cache c ON c.key = st.key"
                    ),
                    {"job": job_id, "chunk": REUSED_CHUNK},
                ).rowcount
            if copied != reused:  # cannot happen within one snapshot; never record a job that lies
                raise RuntimeError(f"score cache changed during submission: {copied} hits copied, {reused} planned")
            if reused and not self.pg:  # SQLite: the write lock is held, so in the job's own transaction
                self.gens.update(
                    s.scalars(text("SELECT DISTINCT c.gen FROM reuse_stage st JOIN score_cache c ON c.key = st.key"))
                )
                mark_used(s, self.gens, now())
        log.info(
            "reuse_recorded", job_id=job_id, staged=self.count, reused=reused, chunks=len(chunks) if isinstance(chunks, Sized) else None,
            plan_s=round(t1 - t0, 2), copy_s=round(time.perf_counter() - t1, 2),
        )  # fmt: skip
        self.reused = reused
        return job_id, messages, reused, self.count

    def touch(self) -> None:
        """Re-home the reused entries whose generation is more than ``touch_interval`` old: a fresh,
        jittered generation, so the old one can go unused (rerankq/store/cache_gens.py). After the job
        is committed and best effort: their use is already recorded, by generation, in the job's
        transaction. Only the entries that came due are rewritten, about 1/10 of the reused ones a
        night at the defaults, never all of them."""
        if not self.reused:
            return
        t0, t = time.perf_counter(), now()
        today = day_of(t)
        due = today - max(1, round(self.touch_interval / DAY))
        if not any(g < due for g in self.gens):
            return
        fresh = jittered_gen_sql(self.store.dialect)
        try:  # READ COMMITTED: another submission re-homing the same entries is no serialization failure
            conn = self.conn.execution_options(isolation_level="READ COMMITTED") if self.pg else self.conn
            with conn.begin():
                if self.pg:
                    n = conn.execute(
                        text(
                            f"UPDATE score_cache c SET gen = {fresh} FROM reuse_stage st "
                            "WHERE st.hit AND st.gen < :due AND c.key = st.key AND c.gen < :due"
                        ),
                        {"today": today, "due": due},
                    ).rowcount
                else:
                    n = conn.execute(
                        text(
                            f"UPDATE score_cache SET gen = {fresh} "
                            "WHERE gen < :due AND key IN (SELECT key FROM reuse_stage)"
                        ),
                        {"today": today, "due": due},
                    ).rowcount
            log.info("reuse_rehomed", entries=n, reused=self.reused, touch_s=round(time.perf_counter() - t0, 2))
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
