"""A chunk's life on a worker: begin, finish (scores + chunk state + job state in one transaction),
or fail an attempt; the job is finalized when its last chunk ends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rerankq.routing import normalize_model
from rerankq.store.base import TERMINAL_CHUNK, LedgerBase, stage_route
from rerankq.store.clock import now
from rerankq.store.models import Chunk, Job
from rerankq.store.records import NewChunk, ScoreRow
from rerankq.store.score_writes import write_chunk_rows, write_stage2_rows
from rerankq.store.webhooks import record_job_end
from schemas import ChunkMessage, JobState


@dataclass(frozen=True, slots=True)
class Misrouted:
    """A chunk delivered to a worker of another model or scoring context: where it belongs, and why."""

    message: ChunkMessage  # routed by the job's model and pinned context
    reason: str

    def __str__(self) -> str:
        return self.reason


class ChunkWrites(LedgerBase):
    copy_scores = True  # PostgreSQL+psycopg: COPY path (False: multi-row INSERT, kept for bench/write_bench.py)

    def begin_chunk(
        self, job_id: str, chunk_id: int, worker: str, model: str, context: str | None = None
    ) -> str | Misrouted | None:
        """Mark the chunk running; None to go on, else why this delivery does nothing: a reason, or
        ``Misrouted`` when the job belongs to another model or scoring context (the worker sends the
        message on to the job's own queue and leaves the chunk alone).

        The first worker to begin a chunk of a job whose context is not pinned yet pins its own
        ``context``: from then on only workers scoring in that context score the job's chunks, so a
        job's scores never mix two models or two contexts."""
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            chunk = s.get(Chunk, chunk_id)
            if chunk is None or chunk.job_id != job_id:
                return f"chunk {chunk_id} is not part of job {job_id}"
            if chunk.state in TERMINAL_CHUNK:
                return f"chunk already {chunk.state}"
            if job.state == JobState.cancelled:
                chunk.state = "cancelled"
                return "job cancelled"
            stage = chunk.stage or 1
            wanted_model, wanted_context = stage_route(job, stage)
            if wanted_model is not None and wanted_model != normalize_model(model):
                return Misrouted(self._message(chunk, job), f"the job is scored by {wanted_model}, this worker runs {model}")
            if wanted_context is not None and wanted_context != context:
                mine = context[:12] if context else "none"
                return Misrouted(
                    self._message(chunk, job),
                    f"the job's scores come from context {wanted_context[:12]}, this worker scores in {mine}",
                )
            if wanted_context is None and context is not None and wanted_model is not None:
                if stage == 2:
                    job.then_context = context
                else:
                    job.score_context = context
            chunk.state, chunk.worker, chunk.model = "running", worker, model
            chunk.attempts += 1
            chunk.started_at = now()
            if job.state == JobState.queued:
                job.state = JobState.running
                job.started_at = now()
            return None

    def finish_chunk(
        self, job_id: str, chunk_id: int, rows: Sequence[ScoreRow], then: NewChunk | None = None, reused: int = 0
    ) -> bool:
        """Scores, chunk state and job state in one transaction. False if another delivery got there first.

        ``reused``: of ``rows``, how many the worker took from the score cache (a cascade's stage 1): they
        count as the job's reused pairs, not as scored ones, as reuse at submission does.

        ``then``: a cascade's stage-1 chunk hands on its queries' top pairs as a stage-2 chunk, recorded
        in the same transaction (so the job cannot end before it is scored); ``unsent`` finds it to send."""
        with self.session.begin() as s:
            chunk = s.get(Chunk, chunk_id)
            if chunk is None or chunk.state == "done":
                return False
            # The rows before the job's lock: they are idempotent upserts (a second delivery's change
            # nothing), so the chunks of one job write in parallel instead of one at a time under that
            # lock, which bound the ledger (bench/RESULTS.md, "Ledger ceiling"). The lock then guards
            # only the states, and the chunk is read again under it.
            if (chunk.stage or 1) == 2:
                write_stage2_rows(s, job_id, rows)
            else:
                write_chunk_rows(s, job_id, chunk_id, rows, use_copy=self.copy_scores)
            job = self._job(s, job_id, lock=True)
            s.refresh(chunk)
            if chunk.state == "done":  # another delivery finished it meanwhile; its rows stand
                return False
            if then is not None and then.pairs:
                seq = s.scalar(select(func.max(Chunk.seq)).where(Chunk.job_id == job_id))
                s.add(Chunk(
                    job_id=job_id, seq=seq + 1, state="pending", spec=then.spec, pairs=then.pairs, stage=2, scored=0,
                    pair_errors=0, attempts=0,
                ))  # fmt: skip
                job.chunks_total += 1
            errors = sum(1 for r in rows if r.error is not None)
            chunk.state, chunk.error, chunk.finished_at = "done", None, now()
            reused = reused if (chunk.stage or 1) == 1 else 0  # stage 2 re-scores pairs stage 1 counted
            chunk.scored, chunk.pair_errors = len(rows) - errors - reused, errors
            job.pairs_reused = (job.pairs_reused or 0) + reused
            finalize(s, job)
            return True

    def chunk_attempt_failed(self, job_id: str, chunk_id: int, error: str, final: bool) -> None:
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            chunk = s.get(Chunk, chunk_id)
            if chunk is None or chunk.state in TERMINAL_CHUNK:
                return
            chunk.error = error
            if final:
                chunk.state, chunk.finished_at = "failed", now()
                finalize(s, job)
            else:
                chunk.state = "pending"


def finalize(s: Session, job: Job) -> None:
    """Once no chunk is live: completed, completed_with_errors or failed (a cancelled job stays so, and a job
    still being submitted, or refused while it was, cannot end here: producer/streaming.py ends it)."""
    if job.submitting:
        return
    states = dict(
        s.execute(select(Chunk.state, func.count()).where(Chunk.job_id == job.id).group_by(Chunk.state)).all()
    )
    if any(state not in TERMINAL_CHUNK for state in states) or job.state == JobState.cancelled:
        return
    pair_errors = s.scalar(select(func.coalesce(func.sum(Chunk.pair_errors), 0)).where(Chunk.job_id == job.id))
    if not states.get("failed") and not pair_errors:
        job.state = JobState.completed
    elif not states.get("done"):
        job.state = JobState.failed
    else:
        job.state = JobState.completed_with_errors
    job.finished_at = now()
    record_job_end(s, job)  # its webhook event, in the transaction that ends it


_finalize = finalize  # the name bench/ledger_load.py imports
