"""The sweeper's queries: chunks held by dead workers taken back, and pending chunks to look for
in the broker (re-sent when the broker lost them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from rerankq.store.base import LIVE_CHUNK, LedgerBase
from rerankq.store.clock import now
from rerankq.store.jobs import INTERACTIVE_JOB_NAME
from rerankq.store.models import Chunk, Job, Worker
from schemas import ChunkMessage, JobState

_LIVE_JOB = (JobState.queued.value, JobState.running.value)


class Recovery(LedgerBase):
    def reclaim_from_dead(self, dead_after: float) -> list[ChunkMessage]:
        """Chunks of live jobs held (running, or pending a retry) by a worker silent for ``dead_after``
        seconds, or by one the registry never saw, back to pending with no holder: the messages to
        enqueue again. Each chunk is taken back by a conditional update, so a worker that finishes it
        meanwhile wins and nothing is counted twice."""
        cutoff = now() - timedelta(seconds=dead_after)
        with self.session() as s:
            candidates = s.execute(
                select(Chunk.id, Chunk.worker)
                .join(Job, Job.id == Chunk.job_id)
                .outerjoin(Worker, Worker.id == Chunk.worker)
                .where(
                    Job.state.in_(_LIVE_JOB),
                    Chunk.state.in_(LIVE_CHUNK),
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
                    .where(Chunk.id == chunk_id, Chunk.worker == holder, Chunk.state.in_(LIVE_CHUNK))
                    .values(state="pending", worker=None, enqueued_at=now())
                ).rowcount
                if taken:
                    chunk = s.get(Chunk, chunk_id)
                    messages.append(self._message(chunk, s.get(Job, chunk.job_id)))  # type: ignore[arg-type, union-attr]
        return messages

    def unheld_pending(self, older_than: float) -> list[ChunkMessage]:
        """Pending chunks of live jobs that no worker holds, enqueued more than ``older_than`` seconds
        ago (or never): the ones to look for in the broker."""
        cutoff = now() - timedelta(seconds=older_than)
        with self.session() as s:
            rows = s.execute(
                select(Chunk, Job)
                .join(Job, Job.id == Chunk.job_id)
                .where(
                    Job.state.in_(_LIVE_JOB),
                    Chunk.state == "pending",
                    Chunk.worker.is_(None),
                    or_(and_(Chunk.enqueued_at.is_(None), Job.created_at < cutoff), Chunk.enqueued_at < cutoff),
                )
                .order_by(Chunk.job_id, Chunk.seq)
            ).all()
            return [self._message(chunk, job) for chunk, job in rows]

    def claim_unsent(self, job_id: str) -> list[ChunkMessage]:
        """Pending chunks of a live job never sent to the broker (a cascade's stage-2 chunks as stage-1 chunks
        finish), claimed for sending by stamping ``enqueued_at`` in one conditional update: two threads that
        finish stage-1 chunks at once each get only the chunks the other has not claimed, so no chunk is sent
        twice. A claimed chunk whose message never reaches the broker is pending with no message: the sweeper
        re-sends it (``unheld_pending``)."""
        live = select(Job.id).where(Job.id == job_id, Job.state.in_(_LIVE_JOB))
        with self.session.begin() as s:
            ids = s.scalars(
                update(Chunk)
                .where(
                    Chunk.job_id == job_id,
                    Chunk.job_id.in_(live),
                    Chunk.state == "pending",
                    Chunk.worker.is_(None),
                    Chunk.enqueued_at.is_(None),
                )
                .values(enqueued_at=now())
                .returning(Chunk.id)
            ).all()
            if not ids:
                return []
            rows = s.execute(
                select(Chunk, Job).join(Job, Job.id == Chunk.job_id).where(Chunk.id.in_(ids)).order_by(Chunk.seq)
            ).all()
            return [self._message(chunk, job) for chunk, job in rows]

    def still_pending(self, chunk_ids: Iterable[int]) -> set[int]:
        ids = list(chunk_ids)
        if not ids:
            return set()
        with self.session() as s:
            return set(
                s.scalars(select(Chunk.id).where(Chunk.id.in_(ids), Chunk.state == "pending", Chunk.worker.is_(None)))
            )

    def interactive_jobs(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these jobs are interactive (one-chunk ``rerank`` jobs, re-sent at the top priority)."""
        ids = list(job_ids)
        with self.session() as s:
            return set(s.scalars(select(Job.id).where(Job.id.in_(ids), Job.name == INTERACTIVE_JOB_NAME))) if ids else set()
