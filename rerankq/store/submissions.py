"""A job recorded piece by piece while its manifest is still being read (producer/streaming.py drives).

Each piece is one transaction: its pairs' score-cache keys looked up (under the job's pinned context,
when it reuses) and the hits copied into the job's scores, then the chunks the producer closed over its
misses recorded, already stamped as sent, and the job's counters moved on. Only after the commit are the
chunks published, so a worker can only ever see a chunk the ledger holds; a publish that fails leaves a
chunk pending with an old ``enqueued_at``, which the sweeper re-sends (``Recovery.unheld_pending``).

While ``jobs.submitting`` is true the job cannot end (``chunks.finalize``) and nothing is exported from
it. ``finish`` clears it with the last piece (the job then ends at once if every chunk already did);
``refuse`` fails the job with the bad rows' file, row and field, cancels its pending chunks (workers skip
them) and keeps ``submitting``, so the scores of chunks already scored are never exported. A submitter
killed mid-way leaves a true ledger: every committed piece whole, the job ``submitting`` until
``producer cancel``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from rerankq.logs import get_logger
from rerankq.store.cache_gens import DAY, day_of, jittered_gen_sql, mark_used
from rerankq.store.chunks import finalize
from rerankq.store.clock import now
from rerankq.store.ledger import Ledger
from rerankq.store.models import Chunk, Job
from rerankq.store.partitions import partition_name
from rerankq.store.records import NewChunk
from rerankq.store.reuse_stage import REUSED_CHUNK
from rerankq.store.webhooks import record_job_end
from schemas import ChunkMessage, JobState

log = get_logger("rerankq.submissions")


class SubmissionStopped(Exception):
    """The job ended while it was being submitted (``producer cancel``): nothing more is recorded."""


@dataclass(frozen=True, slots=True)
class PieceRows:
    """One piece's pairs in manifest order: ``keys`` their score-cache keys (None: no reuse)."""

    query_ids: Sequence[str]
    doc_ids: Sequence[str]
    keys: Sequence[bytes] | None = None


@dataclass
class Recorded:
    """What a piece recorded: the messages to publish once committed, the pairs copied from the cache."""

    messages: list[ChunkMessage] = field(default_factory=list)
    reused: int = 0


# A piece's misses, in order: (index in the piece, query_id, key or None); its planner returns the chunks
# it has closed (producer/streaming.py).
Plan = Callable[[list[int]], list[NewChunk]]


class Submission:
    """One streaming submission's connection to the ledger (temporary tables belong to it)."""

    def __init__(self, store: Ledger, job_id: str, context: str | None, touch_interval: float = 7 * 86400.0):
        self.store, self.job_id, self.context, self.touch_interval = store, job_id, context, touch_interval
        self.pg = store.dialect == "postgresql"
        self.conn = store.session.kw["bind"].connect()
        self.chunks = 0  # chunks recorded
        self.reused = 0
        if context is not None:
            ddl = (
                "CREATE TEMP TABLE piece_keys (seq bigint, key bytea, query_id text, doc_id text)"
                if self.pg
                else "CREATE TEMP TABLE piece_keys (seq INTEGER PRIMARY KEY, key BLOB, query_id TEXT, doc_id TEXT)"
            )
            with self.conn.begin():
                self.conn.exec_driver_sql("DROP TABLE IF EXISTS piece_keys")
                self.conn.exec_driver_sql(ddl)

    def open(self, **job: object) -> None:
        """The job's row (``submitting``, no chunks yet) and its partition of scores, committed: from now on
        ``producer status`` shows it and workers may score its chunks."""
        with Session(bind=self.conn, expire_on_commit=False) as s, s.begin():
            self.store.create_job(chunks=[], session=s, job_id=self.job_id, score_context=self.context, submitting=True, **job)  # type: ignore[arg-type]

    def record(self, rows: PieceRows, plan: Plan, final: bool = False) -> Recorded:
        """One piece in one transaction (module docstring); ``plan`` gets the indexes of the piece's misses
        (every row without reuse) and returns the chunks closed by them. ``final``: the manifest's last
        piece, with its remaining chunks: the job is then submitted. SubmissionStopped if it ended meanwhile."""
        out = Recorded()
        n = len(rows.query_ids)
        if self.context is not None and n:
            self._stage(rows)
        due: list[bytes] = []
        with Session(bind=self.conn, expire_on_commit=False) as s, s.begin():
            if self.context is not None and n:
                cutoff = day_of(now()) - max(1, round(self.touch_interval / DAY))
                misses, hit_gens, due_rows = self._lookup(s, cutoff)
                out.reused = n - len(misses)
                if hit_gens:
                    mark_used(s, hit_gens, now())
                due = [rows.keys[i] for i in due_rows]  # type: ignore[index]
            else:
                misses = list(range(n))
            chunks = plan(misses)
            job = s.get(Job, self.job_id, with_for_update=True)
            if job is None or JobState(job.state).terminal:
                raise SubmissionStopped(f"job {self.job_id} was {job.state if job else 'deleted'} while it was being submitted")
            t = now()
            # Numbered under the job's lock, after its last chunk: a cascade's stage-1 chunk finishing meanwhile
            # adds its stage-2 chunk the same way (rerankq/store/chunks.py), so the numbers never collide.
            seq = s.scalar(select(func.coalesce(func.max(Chunk.seq), -1)).where(Chunk.job_id == self.job_id)) + 1
            for c in chunks:
                row = Chunk(
                    job_id=self.job_id, seq=seq, state="pending", spec=c.spec, pairs=c.pairs, scored=0, pair_errors=0,
                    attempts=0, enqueued_at=t,
                )  # fmt: skip
                s.add(row)
                s.flush()
                seq += 1
                self.chunks += 1
                out.messages.append(self.store._message(row, job))
                s.expunge(row)
            job.pairs_total += out.reused + sum(c.pairs for c in chunks)
            job.pairs_reused = (job.pairs_reused or 0) + out.reused
            job.chunks_total += len(chunks)
            if final:
                job.submitting = False
                if not job.chunks_total and job.started_at is None:  # every pair reused: complete at once
                    job.started_at = t
                s.flush()
                finalize(s, job)
        self.reused += out.reused
        if due:
            self._touch(due)
        return out

    def refuse(self, error: str) -> int:
        """Fail the job with ``error`` (the bad rows), its pending chunks cancelled; it stays ``submitting``,
        so nothing is exported from it. Returns how many chunks were cancelled."""
        with Session(bind=self.conn) as s, s.begin():
            job = s.get(Job, self.job_id, with_for_update=True)
            if job is None:
                return 0
            if not JobState(job.state).terminal:
                job.state, job.finished_at = JobState.failed, now()
                record_job_end(s, job)
            job.error = error
            return s.execute(
                update(Chunk).where(Chunk.job_id == self.job_id, Chunk.state == "pending").values(state="cancelled")
            ).rowcount

    def _stage(self, rows: PieceRows) -> None:
        """The piece's keys into the temporary table (PostgreSQL: COPY), before the piece's transaction on
        SQLite, so its write lock on the ledger is not held while they load."""
        raw = self.conn.connection.dbapi_connection
        data = zip(range(len(rows.query_ids)), rows.keys, rows.query_ids, rows.doc_ids)  # type: ignore[arg-type]
        cur = raw.cursor()
        try:
            if self.pg:
                with self.conn.begin():
                    cur.execute("TRUNCATE piece_keys")
                    with cur.copy("COPY piece_keys (seq, key, query_id, doc_id) FROM STDIN") as copy:
                        for row in data:
                            copy.write_row(row)
                return
            cur.execute("BEGIN")  # the temporary database only: no lock on the ledger
            cur.execute("DELETE FROM piece_keys")
            cur.executemany("INSERT INTO piece_keys (seq, key, query_id, doc_id) VALUES (?, ?, ?, ?)", data)
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _lookup(self, s: Session, due: int) -> tuple[list[int], set[int], list[int]]:
        """The staged pairs' hits copied into the job's scores, in ``s``; returns the misses (indexes, in
        order), the hits' cache generations, and the hits whose generation is older than ``due`` (to re-home).
        Only those rows come back: on a night that reuses 95 %, a twentieth of the piece."""
        params = {"job": self.job_id, "chunk": REUSED_CHUNK, "due": due}
        if self.pg:  # psycopg's own cursor: tuples, not a SQLAlchemy row per miss (night 1: every pair)
            cur = s.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(
                    "WITH j AS (SELECT b.seq, b.query_id, b.doc_id, x.score, x.logit, x.gen FROM piece_keys b "
                    "LEFT JOIN LATERAL (SELECT c.score, c.logit, c.gen FROM score_cache c WHERE c.key = b.key LIMIT 1) x ON true), "
                    f"copied AS (INSERT INTO {partition_name(self.job_id)} (job_id, query_id, doc_id, chunk_id, score, logit, error) "
                    "SELECT %(job)s, query_id, doc_id, %(chunk)s, score, logit, NULL FROM j WHERE score IS NOT NULL RETURNING 1) "
                    "SELECT seq, gen FROM j WHERE score IS NULL OR gen < %(due)s "
                    "UNION ALL SELECT -1, gen FROM (SELECT DISTINCT gen FROM j WHERE score IS NOT NULL) g",
                    params,
                )
                rows = cur.fetchall()
            finally:
                cur.close()
        else:
            rows = s.execute(
                text(
                    "SELECT st.seq, c.gen FROM piece_keys st LEFT JOIN score_cache c ON c.key = st.key "
                    "WHERE c.key IS NULL OR c.gen < :due "
                    "UNION ALL SELECT -1, gen FROM (SELECT DISTINCT c.gen FROM piece_keys st JOIN score_cache c ON c.key = st.key)"
                ),
                params,
            ).all()
            s.execute(
                text(
                    "INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score, logit, error) "
                    "SELECT :job, st.query_id, st.doc_id, :chunk, c.score, c.logit, NULL "
                    "FROM piece_keys st JOIN score_cache c ON c.key = st.key"
                ),
                params,
            )
        misses = [seq for seq, gen in rows if seq >= 0 and gen is None]
        misses.sort()
        gens = {gen for seq, gen in rows if seq < 0}
        return misses, gens, [seq for seq, gen in rows if seq >= 0 and gen is not None]

    def _touch(self, keys: list[bytes]) -> None:
        """Re-home reused entries whose generation came due (as ``ReuseStage.touch``): after the piece's
        commit, best effort."""
        t0, today = time.perf_counter(), day_of(now())
        due = today - max(1, round(self.touch_interval / DAY))
        fresh = jittered_gen_sql(self.store.dialect)
        try:
            with self.conn.begin():
                n = 0
                for i in range(0, len(keys), 500):
                    part = keys[i : i + 500]
                    marks = ", ".join(f":k{j}" for j in range(len(part)))
                    n += self.conn.execute(
                        text(f"UPDATE score_cache SET gen = {fresh} WHERE gen < :due AND key IN ({marks})"),
                        {"today": today, "due": due, **{f"k{j}": k for j, k in enumerate(part)}},
                    ).rowcount
            log.info("reuse_rehomed", job_id=self.job_id, entries=n, touch_s=round(time.perf_counter() - t0, 2))
        except Exception as exc:  # a concurrent prune: the piece is recorded regardless
            log.warning("cache_refresh_failed", error=str(exc).splitlines()[0][:200])

    def close(self) -> None:
        try:
            if self.context is not None:
                with self.conn.begin():
                    self.conn.exec_driver_sql("DROP TABLE IF EXISTS piece_keys")
        except Exception as exc:  # the connection is discarded below anyway
            log.warning("stage_drop_failed", error=str(exc).splitlines()[0][:200])
        finally:
            self.conn.close()

    def __enter__(self) -> Submission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
