"""Recording a job and changing it as a whole: create (job + chunks in one transaction), cancel,
resume after the broker lost its queue, and retry failed chunks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rerankq.routing import normalize_model
from rerankq.store.actor import owner_of_new
from rerankq.store.base import LedgerBase
from rerankq.store.clock import now
from rerankq.store.models import Chunk, Job
from rerankq.store.partitions import ensure_partition
from rerankq.store.records import NewChunk
from rerankq.store.webhooks import record_job_end
from schemas import ChunkMessage, JobState

INTERACTIVE_JOB_NAME = "rerank"  # the name of the one-chunk jobs of `producer rerank` and /v1/rerank


class JobWrites(LedgerBase):
    def create_job(
        self,
        *,
        kind: str,
        chunks: Iterable[NewChunk],
        name: str | None = None,
        manifest: str | None = None,
        instruction: str | None = None,
        pairs_reused: int = 0,
        score_context: str | None = None,
        model: str | None = None,
        then_model: str | None = None,
        then_top: int | None = None,
        notify: str | None = None,
        session: Session | None = None,
        job_id: str | None = None,
        also: Callable[[Session, str], None] | None = None,
        messages: bool = True,
        submitting: bool = False,
    ) -> tuple[str, list[ChunkMessage]]:
        """Job and chunks in one transaction; the messages to enqueue come back with their ids.

        ``pairs_reused`` pairs are copied from the score cache by the caller, in ``session``'s
        transaction (rerankq/store/reuse_stage.py), which may have written a placeholder row for
        ``job_id`` first; a job made only of those is complete at once. ``also(session, job_id)`` records
        what belongs with the job (a batch's row) in the same transaction: both exist, or neither.
        ``chunks`` may be a generator: each chunk is written as it comes. ``messages=False``: none are
        built (each row is let go once written), so a job of any size is recorded in the memory of one
        chunk; send them after the commit with ``pending_messages``."""
        job_id = job_id or str(uuid.uuid4())
        fields = dict(
            kind=kind, name=name, manifest=manifest, instruction=instruction, score_context=score_context,
            model=normalize_model(model) if model else None,
            then_model=normalize_model(then_model) if then_model else None, then_top=then_top if then_model else None,
            notify=notify or None, owner=owner_of_new(), submitting=submitting,
        )  # fmt: skip
        if session is not None:
            return job_id, self._create_job(session, job_id, chunks, pairs_reused, fields, also, messages)
        with self.session.begin() as s:
            sent = self._create_job(s, job_id, chunks, pairs_reused, fields, also, messages)
        return job_id, sent

    def _create_job(
        self, s: Session, job_id: str, chunks: Iterable[NewChunk], pairs_reused: int, fields: dict,
        also: Callable[[Session, str], None] | None = None, messages: bool = True,
    ) -> list[ChunkMessage]:  # fmt: skip
        t = now()
        job = s.merge(
            Job(
                id=job_id, state=JobState.queued, pairs_total=pairs_reused, pairs_reused=pairs_reused, chunks_total=0,
                created_at=t, started_at=None, finished_at=None, **fields,
            )  # totals and state set once the chunks are written (they may come one at a time)
        )
        s.flush()
        if also is not None:
            also(s, job_id)
        ensure_partition(s, job_id)  # PostgreSQL: the job's own partition of scores, in this transaction
        out: list[ChunkMessage] = []
        pairs = count = 0
        for i, c in enumerate(chunks):
            row = Chunk(job_id=job_id, seq=i, state="pending", spec=c.spec, pairs=c.pairs, scored=0, pair_errors=0, attempts=0)
            s.add(row)
            s.flush()
            pairs, count = pairs + c.pairs, count + 1
            if messages:
                out.append(self._message(row, job))
            else:
                s.expunge(row)
        job.pairs_total, job.chunks_total = pairs + pairs_reused, count
        if not count and not fields["submitting"]:  # every pair reused: complete at once, and notified like any job
            job.state, job.started_at, job.finished_at = JobState.completed, t, t
            s.flush()
            record_job_end(s, job)
        return out

    def pending_messages(self, job_id: str) -> Iterator[ChunkMessage]:
        """The messages of a job's pending chunks not sent yet, one chunk read at a time (each holds its
        pairs), each in a short transaction of its own (the caller marks it sent in between): what
        ``create_job(messages=False)`` left to send once the job is committed."""
        with self.session() as s:
            ids = list(s.scalars(
                select(Chunk.id).where(Chunk.job_id == job_id, Chunk.state == "pending", Chunk.enqueued_at.is_(None))
                .order_by(Chunk.seq)
            ))  # fmt: skip
        for chunk_id in ids:
            with self.session() as s:
                chunk = s.get(Chunk, chunk_id)
                message = self._message(chunk, self._job(s, job_id)) if chunk is not None else None
            if message is not None:
                yield message

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
            record_job_end(s, job)
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
            return [self._message(c, job) for c in chunks]

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
            return [self._message(c, job) for c in chunks]
