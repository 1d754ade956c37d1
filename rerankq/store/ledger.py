"""The ledger's operations. Every state change is one transaction that locks the job row first,
so concurrent workers, a redelivered chunk and a cancel can never leave counters or states untrue."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from schemas import ChunkCounts, ChunkHolder, ChunkMessage, JobState, JobStatus
from rerankq.store.db import check_revision, session_factory
from rerankq.store.models import Chunk, Job, Score, Worker

_TERMINAL_CHUNK = ("done", "failed", "cancelled")
INTERACTIVE_JOB_NAME = "rerank"  # the name of the one-chunk jobs of `producer rerank` and /v1/rerank


class UnknownJob(LookupError):
    def __init__(self, job_id: str):
        super().__init__(f"no job {job_id!r} in the ledger (see `producer list`)")


class AmbiguousJob(UnknownJob):
    """A job id prefix that several jobs share."""

    def __init__(self, prefix: str, matches: Sequence[str]):
        LookupError.__init__(
            self, f"job id prefix {prefix!r} is ambiguous: it matches {', '.join(matches)} (give more characters)"
        )


@dataclass(frozen=True, slots=True)
class ScoreRow:
    query_id: str
    doc_id: str
    score: float | None
    error: str | None
    key: bytes | None = None  # the pair's score-cache key in the scoring worker's context (rerankq/score_key.py)


@dataclass(frozen=True, slots=True)
class NewChunk:
    spec: dict
    pairs: int


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def presumed_alive(reported_state: str | None, last_seen: datetime | None, dead_after: float, at: datetime) -> bool:
    """A worker is alive unless it said it stopped or has been silent for more than ``dead_after`` s."""
    seen = _aware(last_seen)
    return seen is not None and reported_state != "stopped" and (at - seen).total_seconds() <= dead_after


class Ledger:
    copy_scores = True  # PostgreSQL+psycopg: COPY path (False: multi-row INSERT, kept for bench/write_bench.py)

    def __init__(self, url: str, connect_timeout: float = 5.0, check: bool = True, dead_after: float = 60.0):
        if check:
            check_revision(url, connect_timeout)
        self.session = session_factory(url, connect_timeout)
        self.dead_after = dead_after  # a worker silent this long is presumed dead
        self.dialect = self.session.kw["bind"].dialect.name

    # --- jobs ---------------------------------------------------------------------------------
    def create_job(
        self,
        *,
        kind: str,
        chunks: Sequence[NewChunk],
        name: str | None = None,
        manifest: str | None = None,
        instruction: str | None = None,
        pairs_reused: int = 0,
        score_context: str | None = None,
        session: Session | None = None,
        job_id: str | None = None,
    ) -> tuple[str, list[ChunkMessage]]:
        """Job and chunks in one transaction; the messages to enqueue come back with their ids.

        ``pairs_reused`` pairs are copied from the score cache by the caller, in ``session``'s
        transaction (producer/reuse.py), which may have written a placeholder row for ``job_id`` first;
        a job made only of those is complete at once."""
        job_id = job_id or str(uuid.uuid4())
        if session is not None:
            return job_id, self._create_job(session, job_id, kind, chunks, name, manifest, instruction, pairs_reused, score_context)
        with self.session.begin() as s:
            messages = self._create_job(s, job_id, kind, chunks, name, manifest, instruction, pairs_reused, score_context)
        return job_id, messages

    def _create_job(
        self,
        s: Session,
        job_id: str,
        kind: str,
        chunks: Sequence[NewChunk],
        name: str | None,
        manifest: str | None,
        instruction: str | None,
        pairs_reused: int,
        score_context: str | None,
    ) -> list[ChunkMessage]:
        t = now()
        s.merge(
            Job(
                id=job_id,
                name=name,
                kind=kind,
                state=JobState.queued if chunks else JobState.completed,
                manifest=manifest,
                instruction=instruction,
                pairs_total=sum(c.pairs for c in chunks) + pairs_reused,
                pairs_reused=pairs_reused,
                score_context=score_context,
                chunks_total=len(chunks),
                created_at=t,
                started_at=None if chunks else t,
                finished_at=None if chunks else t,
            )
        )
        s.flush()
        rows = [
            Chunk(job_id=job_id, seq=i, state="pending", spec=c.spec, pairs=c.pairs, scored=0, pair_errors=0, attempts=0)
            for i, c in enumerate(chunks)
        ]
        s.add_all(rows)
        s.flush()
        return [self._message(c) for c in rows]

    def _job(self, s: Session, job_id: str, lock: bool = False) -> Job:
        job = s.get(Job, job_id, with_for_update=lock or None)
        if job is None:
            raise UnknownJob(job_id)
        return job

    @staticmethod
    def _message(chunk: Chunk) -> ChunkMessage:
        return ChunkMessage.model_validate({"job_id": chunk.job_id, "chunk_id": chunk.id, "spec": chunk.spec})

    def mark_enqueued(self, chunk_ids: Iterable[int]) -> None:
        ids = list(chunk_ids)
        with self.session.begin() as s:
            s.execute(update(Chunk).where(Chunk.id.in_(ids)).values(enqueued_at=now()))

    def cancel(self, job_id: str) -> JobState:
        """No chunk starts after this; scores already written stay."""
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            if JobState(job.state).terminal:
                return JobState(job.state)
            job.state = JobState.cancelled
            job.finished_at = now()
            s.execute(
                update(Chunk).where(Chunk.job_id == job_id, Chunk.state == "pending").values(state="cancelled")
            )
            return JobState.cancelled

    def resumable(self, job_id: str) -> list[ChunkMessage]:
        """Chunks the ledger does not hold as finished: what to enqueue again after the broker lost its queue."""
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            if JobState(job.state).terminal:
                return []
            chunks = s.scalars(
                select(Chunk).where(Chunk.job_id == job_id, Chunk.state.in_(("pending", "running"))).order_by(Chunk.seq)
            ).all()
            return [self._message(c) for c in chunks]

    def reopen_failed(self, job_id: str) -> list[ChunkMessage]:
        """Failed chunks back to pending (fresh retry budget); the job runs again until they finish."""
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            if job.state == JobState.cancelled:
                return []
            chunks = s.scalars(select(Chunk).where(Chunk.job_id == job_id, Chunk.state == "failed")).all()
            for c in chunks:
                c.state, c.attempts, c.error, c.finished_at, c.worker = "pending", 0, None, None, None
            if chunks:
                job.state = JobState.running if job.started_at else JobState.queued
                job.finished_at = None
            return [self._message(c) for c in chunks]

    # --- chunks (worker side) --------------------------------------------------------------------
    def begin_chunk(self, job_id: str, chunk_id: int, worker: str, model: str) -> str | None:
        """Mark the chunk running; None to go on, else why this delivery does nothing."""
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            chunk = s.get(Chunk, chunk_id)
            if chunk is None or chunk.job_id != job_id:
                return f"chunk {chunk_id} is not part of job {job_id}"
            if chunk.state in _TERMINAL_CHUNK:
                return f"chunk already {chunk.state}"
            if job.state == JobState.cancelled:
                chunk.state = "cancelled"
                return "job cancelled"
            chunk.state, chunk.worker, chunk.model = "running", worker, model
            chunk.attempts += 1
            chunk.started_at = now()
            if job.state == JobState.queued:
                job.state = JobState.running
                job.started_at = now()
            return None

    def finish_chunk(self, job_id: str, chunk_id: int, rows: Sequence[ScoreRow]) -> bool:
        """Scores, chunk state and job state in one transaction. False if another delivery got there first."""
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            chunk = s.get(Chunk, chunk_id)
            if chunk is None or chunk.state == "done":
                return False
            self._upsert_scores(s, job_id, chunk_id, rows)
            if not (self.copy_scores and self._copies(s)):  # the COPY path fills the cache from its stage
                from rerankq.store.score_cache import fill_cache

                fill_cache(s, self.dialect, rows)
            errors = sum(1 for r in rows if r.error is not None)
            chunk.state, chunk.error, chunk.finished_at = "done", None, now()
            chunk.scored, chunk.pair_errors = len(rows) - errors, errors
            self._finalize(s, job)
            return True

    def chunk_attempt_failed(self, job_id: str, chunk_id: int, error: str, final: bool) -> None:
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            chunk = s.get(Chunk, chunk_id)
            if chunk is None or chunk.state in _TERMINAL_CHUNK:
                return
            chunk.error = error
            if final:
                chunk.state, chunk.finished_at = "failed", now()
                self._finalize(s, job)
            else:
                chunk.state = "pending"

    def _upsert_scores(self, s: Session, job_id: str, chunk_id: int, rows: Sequence[ScoreRow]) -> None:
        if not rows:
            return
        if self.copy_scores and self._copies(s):
            self._copy_scores(s, job_id, chunk_id, rows)
            return
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        values = [
            {"job_id": job_id, "query_id": r.query_id, "doc_id": r.doc_id, "chunk_id": chunk_id, "score": r.score, "error": r.error}
            for r in rows
        ]
        s.execute(insert(Score).on_conflict_do_nothing(index_elements=["job_id", "query_id", "doc_id"]), values)

    def _copies(self, s: Session) -> bool:
        return self.dialect == "postgresql" and s.get_bind().dialect.driver == "psycopg"

    @staticmethod
    def _copy_scores(s: Session, job_id: str, chunk_id: int, rows: Sequence[ScoreRow]) -> None:
        """PostgreSQL: COPY into a per-connection staging table, then one idempotent INSERT … SELECT.
        Several times the rows/s of a multi-row INSERT (bench/write_bench.py), inside the chunk's transaction.
        The same stage fills the score cache with the scoring worker's keys (same transaction)."""
        cursor = s.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS score_stage_k "
            "(query_id text, doc_id text, score double precision, error text, key bytea) ON COMMIT DELETE ROWS"
        )
        with cursor.copy("COPY score_stage_k (query_id, doc_id, score, error, key) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r.query_id, r.doc_id, r.score, r.error, r.key))
        cursor.execute(
            "INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score, error) "
            "SELECT %s, query_id, doc_id, %s, score, error FROM score_stage_k "
            "ON CONFLICT (job_id, query_id, doc_id) DO NOTHING",
            (job_id, chunk_id),
        )
        if any(r.key is not None for r in rows):
            t = now()
            cursor.execute(
                "INSERT INTO score_cache (key, score, created_at, last_used) "
                "SELECT key, score, %s, %s FROM score_stage_k "
                "WHERE key IS NOT NULL AND score IS NOT NULL AND error IS NULL "
                "ON CONFLICT (key) DO NOTHING",
                (t, t),
            )

    @staticmethod
    def _finalize(s: Session, job: Job) -> None:
        states = dict(
            s.execute(
                select(Chunk.state, func.count()).where(Chunk.job_id == job.id).group_by(Chunk.state)
            ).all()
        )
        if any(state not in _TERMINAL_CHUNK for state in states) or job.state == JobState.cancelled:
            return
        pair_errors = s.scalar(select(func.coalesce(func.sum(Chunk.pair_errors), 0)).where(Chunk.job_id == job.id))
        if not states.get("failed") and not pair_errors:
            job.state = JobState.completed
        elif not states.get("done"):
            job.state = JobState.failed
        else:
            job.state = JobState.completed_with_errors
        job.finished_at = now()

    # --- recovery (the sweeper) ---------------------------------------------------------------------
    def reclaim_from_dead(self, dead_after: float) -> list[ChunkMessage]:
        """Chunks of live jobs held (running, or pending a retry) by a worker silent for ``dead_after``
        seconds, or by one the registry never saw, back to pending with no holder: the messages to
        enqueue again. Each chunk is taken back by a conditional update, so a worker that finishes it
        meanwhile wins and nothing is counted twice."""
        cutoff = now() - timedelta(seconds=dead_after)
        live = (JobState.queued.value, JobState.running.value)
        with self.session() as s:
            candidates = s.execute(
                select(Chunk.id, Chunk.worker)
                .join(Job, Job.id == Chunk.job_id)
                .outerjoin(Worker, Worker.id == Chunk.worker)
                .where(
                    Job.state.in_(live),
                    Chunk.state.in_(("running", "pending")),
                    Chunk.worker.is_not(None),
                    or_(
                        Worker.last_seen < cutoff,
                        Worker.state == "stopped",
                        (Worker.id.is_(None)) & (Chunk.started_at < cutoff),
                    ),
                )
            ).all()
        messages: list[ChunkMessage] = []
        for chunk_id, holder in candidates:
            with self.session.begin() as s:
                taken = s.execute(
                    update(Chunk)
                    .where(Chunk.id == chunk_id, Chunk.worker == holder, Chunk.state.in_(("running", "pending")))
                    .values(state="pending", worker=None, enqueued_at=now())
                ).rowcount
                if taken:
                    messages.append(self._message(s.get(Chunk, chunk_id)))  # type: ignore[arg-type]
        return messages

    def unheld_pending(self, older_than: float) -> list[ChunkMessage]:
        """Pending chunks of live jobs that no worker holds, enqueued more than ``older_than`` seconds
        ago (or never): the ones to look for in the broker."""
        cutoff = now() - timedelta(seconds=older_than)
        with self.session() as s:
            chunks = s.scalars(
                select(Chunk)
                .join(Job, Job.id == Chunk.job_id)
                .where(
                    Job.state.in_((JobState.queued.value, JobState.running.value)),
                    Chunk.state == "pending",
                    Chunk.worker.is_(None),
                    or_(and_(Chunk.enqueued_at.is_(None), Job.created_at < cutoff), Chunk.enqueued_at < cutoff),
                )
                .order_by(Chunk.job_id, Chunk.seq)
            ).all()
            return [self._message(c) for c in chunks]

    def interactive_jobs(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these jobs are interactive (one-chunk ``rerank`` jobs, sent at the top priority)."""
        ids = list(job_ids)
        with self.session() as s:
            return set(s.scalars(select(Job.id).where(Job.id.in_(ids), Job.name == INTERACTIVE_JOB_NAME))) if ids else set()

    def still_pending(self, chunk_ids: Iterable[int]) -> set[int]:
        ids = list(chunk_ids)
        if not ids:
            return set()
        with self.session() as s:
            return set(
                s.scalars(select(Chunk.id).where(Chunk.id.in_(ids), Chunk.state == "pending", Chunk.worker.is_(None)))
            )

    # --- reading -------------------------------------------------------------------------------
    def resolve_job(self, job: str, show: int = 10) -> str:
        """The full id of the job whose id is ``job`` or starts with it, as git resolves a commit.
        UnknownJob when none matches, AmbiguousJob (listing up to ``show`` of them) when several do."""
        job = job.strip()
        if not job:
            raise UnknownJob(job)
        pattern = job.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.session() as s:
            if s.get(Job, job) is not None:
                return job
            query = select(Job.id).where(Job.id.like(pattern, escape="\\")).order_by(Job.id).limit(show + 1)
            matches = s.scalars(query).all()
        if not matches:
            raise UnknownJob(job)
        if len(matches) > 1:
            raise AmbiguousJob(job, [*matches[:show], *(["…"] if len(matches) > show else [])])
        return matches[0]

    def status(self, job_id: str) -> JobStatus:
        with self.session() as s:
            return self._status(s, self._job(s, job_id))

    def list_jobs(self, limit: int = 50, exclude_name: str | None = None) -> list[JobStatus]:
        """Newest first; ``exclude_name`` leaves out e.g. the many one-chunk jobs of interactive reranks."""
        with self.session() as s:
            stmt = select(Job).order_by(Job.created_at.desc()).limit(limit)
            if exclude_name is not None:
                stmt = stmt.where(or_(Job.name.is_(None), Job.name != exclude_name))
            jobs = s.scalars(stmt).all()
            return [self._status(s, j) for j in jobs]

    def job_counts(self) -> dict[str, int]:
        """Jobs per state (metrics)."""
        with self.session() as s:
            return {state: n for state, n in s.execute(select(Job.state, func.count()).group_by(Job.state))}

    def pairs_scored_total(self) -> int:
        """Pairs scored by finished chunks, all jobs (metrics; grows as chunks finish)."""
        with self.session() as s:
            return int(s.scalar(select(func.coalesce(func.sum(Chunk.scored), 0)).where(Chunk.state == "done")) or 0)

    def _status(self, s: Session, job: Job) -> JobStatus:
        counts = ChunkCounts()
        scored = failed = 0
        for state, n, n_scored, n_errors, n_pairs in s.execute(
            select(
                Chunk.state, func.count(), func.sum(Chunk.scored), func.sum(Chunk.pair_errors), func.sum(Chunk.pairs)
            )
            .where(Chunk.job_id == job.id)
            .group_by(Chunk.state)
        ):
            setattr(counts, state, n)
            if state == "done":
                scored, failed = scored + (n_scored or 0), failed + (n_errors or 0)
            elif state == "failed":
                failed += n_pairs or 0
        errors = [
            f"chunk {seq}: {err}"
            for seq, err in s.execute(
                select(Chunk.seq, Chunk.error)
                .where(Chunk.job_id == job.id, Chunk.error.is_not(None))
                .order_by(Chunk.seq)
                .limit(20)
            )
        ]
        if failed:
            errors += [
                f"pair ({qid!r}, {did!r}): {err}"
                for qid, did, err in s.execute(
                    select(Score.query_id, Score.doc_id, Score.error)
                    .where(Score.job_id == job.id, Score.error.is_not(None))
                    .limit(5)
                )
            ]
        if job.error:
            errors.insert(0, job.error)
        holders = self._holders(s, job.id)
        started, finished = _aware(job.started_at), _aware(job.finished_at)
        end = finished or (now() if started else None)
        elapsed = (end - started).total_seconds() if started and end else None
        return JobStatus(
            job_id=job.id,
            name=job.name,
            kind=job.kind,
            state=JobState(job.state),
            manifest=job.manifest,
            pairs_total=job.pairs_total,
            pairs_scored=scored,
            pairs_failed=failed,
            pairs_reused=job.pairs_reused or 0,
            chunks_total=job.chunks_total,
            chunks=counts,
            created_at=_aware(job.created_at),  # type: ignore[arg-type]
            started_at=started,
            finished_at=finished,
            elapsed_seconds=elapsed,
            pairs_per_second=(scored / elapsed) if elapsed else None,
            errors=errors,
            holders=holders,
        )

    def _holders(self, s: Session, job_id: str) -> list[ChunkHolder]:
        """Running chunks and their workers, alive or presumed dead (heartbeat older than dead_after)."""
        at = now()
        rows = s.execute(
            select(Chunk.seq, Chunk.worker, Worker.last_seen, Worker.state)
            .outerjoin(Worker, Worker.id == Chunk.worker)
            .where(Chunk.job_id == job_id, Chunk.state == "running")
            .order_by(Chunk.seq)
        ).all()
        return [
            ChunkHolder(
                chunk=seq,
                worker_id=worker,
                alive=presumed_alive(state, seen, self.dead_after, at),
                last_seen=_aware(seen),
            )
            for seq, worker, seen, state in rows
        ]

    def score_count(self, job_id: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Score).where(Score.job_id == job_id)) or 0
