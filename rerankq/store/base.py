"""The ledger's connection and the two lookups every part of it shares. The parts (jobs, chunks,
recovery, reads) each add their own operations on top; ``rerankq.store.ledger.Ledger`` joins them.

Every state change is one transaction that locks the job row first, so concurrent workers, a
redelivered chunk and a cancel can never leave counters or states untrue."""

from __future__ import annotations

from sqlalchemy.orm import Session

from rerankq.store.db import check_revision, session_factory
from rerankq.store.errors import UnknownJob
from rerankq.store.models import Chunk, Job
from schemas import ChunkMessage

TERMINAL_CHUNK = ("done", "failed", "cancelled")
LIVE_CHUNK = ("pending", "running")


class LedgerBase:
    def __init__(self, url: str, connect_timeout: float = 5.0, check: bool = True, dead_after: float = 60.0):
        if check:
            check_revision(url, connect_timeout)
        self.session = session_factory(url, connect_timeout)
        self.dead_after = dead_after  # a worker silent this long is presumed dead
        self.dialect = self.session.kw["bind"].dialect.name

    @staticmethod
    def _job(s: Session, job_id: str, lock: bool = False) -> Job:
        job = s.get(Job, job_id, with_for_update=lock or None)
        if job is None:
            raise UnknownJob(job_id)
        return job

    @staticmethod
    def _message(chunk: Chunk, job: Job) -> ChunkMessage:
        """The chunk's message, routed by its stage's model and pinned scoring context."""
        model, context = stage_route(job, chunk.stage or 1)
        return ChunkMessage.model_validate(
            {
                "job_id": chunk.job_id, "chunk_id": chunk.id, "spec": chunk.spec, "model": model, "context": context,
                "stage": chunk.stage or 1, "top": job.then_top if job.then_model and (chunk.stage or 1) == 1 else None,
            }
        )  # fmt: skip


def stage_route(job: Job, stage: int) -> tuple[str | None, str | None]:
    """The model and pinned context that score a stage of the job (stage 2: a cascade's second model)."""
    return (job.then_model, job.then_context) if stage == 2 else (job.model, job.score_context)
