"""Batches and files of the OpenAI-style API in the ledger. A batch is a job of kind ``batch`` plus one
``batches`` row (deleted with the job); a file is a ``files`` row naming bytes on disk under
RERANKQ_FILES_DIR. The status a client sees is derived from the job's state here and in
producer/batch_files.py, never stored twice."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from rerankq.store.actor import Actor, owner_of_new, tenant_filter
from rerankq.store.base import LIVE_CHUNK, LedgerBase
from rerankq.store.clock import aware, now
from rerankq.store.models import Batch, Chunk, Job, Score, StoredFile
from rerankq.store.webhooks import BATCH_KIND, batch_id, record_job_end
from schemas import JobState

EXPIRED = "expired"  # jobs.error of a batch cancelled because its completion window ended


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str
    purpose: str
    filename: str
    bytes: int
    path: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    job_id: str
    endpoint: str
    completion_window: str
    metadata: dict | None
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    lines_total: int
    lines_rejected: int
    lines_completed: int | None
    lines_failed: int | None
    errors: list | None
    created_at: datetime
    expires_at: datetime
    finalizing_at: datetime | None
    completed_at: datetime | None
    # from the job
    state: JobState
    job_error: str | None
    model: str | None
    started_at: datetime | None
    finished_at: datetime | None
    live_chunks: int  # chunks pending or running: a cancelled batch is still "cancelling" while any runs


def _file(f: StoredFile) -> FileRow:
    return FileRow(f.id, f.purpose, f.filename, f.bytes, f.path, aware(f.created_at))


def _new_batch(
    job_id: str, t: datetime, *, endpoint: str, completion_window: str, window_seconds: float, metadata: dict | None,
    input_file_id: str, lines_total: int, lines_rejected: int, errors: list | None = None,
) -> Batch:  # fmt: skip
    """A batch's row, created at ``t`` and expiring ``window_seconds`` later."""
    return Batch(
        id=batch_id(job_id), job_id=job_id, endpoint=endpoint, completion_window=completion_window, meta=metadata,
        input_file_id=input_file_id, lines_total=lines_total, lines_rejected=lines_rejected, errors=errors,
        created_at=t, expires_at=t + timedelta(seconds=window_seconds),
    )


class BatchStore(LedgerBase):
    # --- files -------------------------------------------------------------------------------
    def add_file(self, purpose: str, filename: str, size: int, path: str, file_id: str | None = None) -> FileRow:
        row = StoredFile(
            id=file_id or new_file_id(), purpose=purpose, filename=filename, bytes=size, path=path, created_at=now(),
            owner=owner_of_new(),
        )
        with self.session.begin() as s:
            s.add(row)
        return _file(row)

    def file(self, file_id: str, actor: Actor | None = None) -> FileRow | None:
        """None also when ``actor`` does not see it (another tenant's file is no file)."""
        with self.session() as s:
            f = s.get(StoredFile, file_id)
            return _file(f) if f is not None and (actor is None or actor.sees(f.owner)) else None

    def files(
        self, limit: int = 100, purpose: str | None = None, actor: Actor | None = None, after: str | None = None,
        order: str = "desc",
    ) -> list[FileRow]:
        """A page of files by creation (``order`` desc: newest first), then id; ``after``: the last id of the
        previous page (OpenAI's cursor: a page never repeats nor skips a file, ties in time included)."""
        desc = order != "asc"
        keys = (StoredFile.created_at.desc(), StoredFile.id.desc()) if desc else (StoredFile.created_at, StoredFile.id)
        with self.session() as s:
            stmt = select(StoredFile).where(*tenant_filter(StoredFile.owner, actor)).order_by(*keys).limit(limit)
            if purpose:
                stmt = stmt.where(StoredFile.purpose == purpose)
            if after and (mark := s.get(StoredFile, after)) is not None:
                at, fid = mark.created_at, mark.id
                if desc:
                    stmt = stmt.where((StoredFile.created_at < at) | ((StoredFile.created_at == at) & (StoredFile.id < fid)))
                else:
                    stmt = stmt.where((StoredFile.created_at > at) | ((StoredFile.created_at == at) & (StoredFile.id > fid)))
            return [_file(f) for f in s.scalars(stmt)]

    def delete_file(self, file_id: str) -> FileRow | None:
        """The row gone (its bytes are the caller's to unlink); None if there was none. FileInUse while a
        batch whose output is not written yet reads it."""
        with self.session.begin() as s:
            f = s.get(StoredFile, file_id, with_for_update=True)
            if f is None:
                return None
            reader = s.scalar(select(Batch.id).where(Batch.input_file_id == file_id, Batch.completed_at.is_(None)).limit(1))
            if reader is not None:
                raise FileInUse(f"file {file_id!r} is the input of {reader}, whose output is not written yet: cancel it first")
            row = _file(f)
            s.delete(f)
            return row

    def prunable_files(self, cutoff: datetime) -> list[FileRow]:
        """Files older than ``cutoff`` that no batch still reads (one whose output is not written yet)."""
        live_inputs = select(Batch.input_file_id).where(Batch.completed_at.is_(None))
        with self.session() as s:
            rows = s.scalars(
                select(StoredFile).where(StoredFile.created_at < cutoff, StoredFile.id.not_in(live_inputs))
            ).all()
            return [_file(f) for f in rows]

    # --- batches -----------------------------------------------------------------------------
    @staticmethod
    def batch_recorder(
        *, endpoint: str, completion_window: str, window_seconds: float, metadata: dict | None, input_file_id: str,
        lines_total: int, lines_rejected: int,
    ) -> Callable[[Session, str], None]:  # fmt: skip
        """What records a batch's row in its job's own transaction (``Ledger.create_job(also=…)``): a batch
        never exists without its job, nor a batch's job without its batch."""

        def record(s: Session, job_id: str) -> None:
            s.add(_new_batch(
                job_id, now(), endpoint=endpoint, completion_window=completion_window, window_seconds=window_seconds,
                metadata=metadata, input_file_id=input_file_id, lines_total=lines_total, lines_rejected=lines_rejected,
            ))  # fmt: skip
            s.flush()

        return record

    def record_failed_batch(
        self, *, endpoint: str, completion_window: str, window_seconds: float, metadata: dict | None,
        input_file_id: str, lines_total: int, errors: list, notify: str | None, model: str | None, name: str | None,
    ) -> str:  # fmt: skip
        """A batch with no line to score: a failed job and its batch in one transaction (and its batch.failed event)."""
        job_id, t = str(uuid.uuid4()), now()
        with self.session.begin() as s:
            job = Job(
                id=job_id, name=name, kind=BATCH_KIND, state=JobState.failed, pairs_total=0, chunks_total=0,
                error=errors[0]["message"] if errors else "no request to run", created_at=t, started_at=t, finished_at=t,
                model=model, notify=notify, owner=owner_of_new(),
            )  # fmt: skip
            s.add(job)
            s.flush()
            s.add(_new_batch(
                job_id, t, endpoint=endpoint, completion_window=completion_window, window_seconds=window_seconds,
                metadata=metadata, input_file_id=input_file_id, lines_total=lines_total, lines_rejected=lines_total,
                errors=errors,
            ))  # fmt: skip
            record_job_end(s, job)
        return batch_id(job_id)

    def batch(self, batch_or_job_id: str, actor: Actor | None = None) -> BatchRow | None:
        """None also when ``actor`` does not see its job."""
        where = [or_(Batch.id == batch_or_job_id, Batch.job_id == batch_or_job_id), *tenant_filter(Job.owner, actor)]
        rows = self._batches(*where, limit=1)
        return rows[0] if rows else None

    def batches(self, limit: int = 20, after: str | None = None, actor: Actor | None = None) -> list[BatchRow]:
        """Newest first; ``after``: the last id of the previous page; ``actor``: only the batches it sees."""
        where = tenant_filter(Job.owner, actor)
        if after:
            with self.session() as s:
                created = s.scalar(select(Batch.created_at).where(Batch.id == after))
            if created is not None:
                where.append(Batch.created_at < created)
        return self._batches(*where, limit=limit)

    def _batches(self, *where: object, limit: int, oldest_first: bool = False) -> list[BatchRow]:
        live = (
            select(func.count()).select_from(Chunk)
            .where(Chunk.job_id == Batch.job_id, Chunk.state.in_(LIVE_CHUNK)).scalar_subquery()
        )  # fmt: skip
        stmt = (
            select(Batch, Job.state, Job.error, Job.model, Job.started_at, Job.finished_at, live)
            .join(Job, Job.id == Batch.job_id).where(*where)
            .order_by(Batch.created_at if oldest_first else Batch.created_at.desc()).limit(limit)
        )  # fmt: skip
        with self.session() as s:
            return [
                BatchRow(
                    b.id, b.job_id, b.endpoint, b.completion_window, b.meta, b.input_file_id, b.output_file_id,
                    b.error_file_id, b.lines_total, b.lines_rejected, b.lines_completed, b.lines_failed, b.errors,
                    aware(b.created_at), aware(b.expires_at), aware(b.finalizing_at), aware(b.completed_at),
                    JobState(state), error, model, aware(started), aware(finished), live_chunks,
                )  # fmt: skip
                for b, state, error, model, started, finished, live_chunks in s.execute(stmt).all()
            ]

    def line_progress(self, job_id: str) -> tuple[int, int]:
        """Lines (queries) scored so far without and with a failed pair: request_counts while running."""
        with self.session() as s:
            rows = s.execute(
                select(Score.query_id, func.count(Score.error)).where(Score.job_id == job_id).group_by(Score.query_id)
            ).all()
        return sum(1 for _, errors in rows if not errors), sum(1 for _, errors in rows if errors)

    def expire(self, job_id: str) -> bool:
        """The completion window ended: the job is cancelled with error ``expired`` (its event says
        batch.expired), in one transaction. False if it ended first."""
        with self.session.begin() as s:
            job = self._job(s, job_id, lock=True)
            if JobState(job.state).terminal:
                return False
            job.state, job.error, job.finished_at = JobState.cancelled, EXPIRED, now()
            s.execute(update(Chunk).where(Chunk.job_id == job_id, Chunk.state == "pending").values(state="cancelled"))
            record_job_end(s, job)
            return True

    def due_to_expire(self, limit: int = 100) -> list[str]:
        """Jobs of unfinished batches whose completion window has ended."""
        with self.session() as s:
            return list(s.scalars(
                select(Batch.job_id).join(Job, Job.id == Batch.job_id)
                .where(Batch.expires_at <= now(), Job.state.in_((JobState.queued.value, JobState.running.value)))
                .limit(limit)
            ))  # fmt: skip

    def claim_finalizing(self, batch_id_: str, stale_after: float) -> bool:
        """One writer of a batch's output files at a time; a claim older than ``stale_after`` s (its
        writer died) can be taken over."""
        t = now()
        with self.session.begin() as s:
            return bool(
                s.execute(
                    update(Batch).where(
                        Batch.id == batch_id_, Batch.completed_at.is_(None),
                        or_(Batch.finalizing_at.is_(None), Batch.finalizing_at < t - timedelta(seconds=stale_after)),
                    ).values(finalizing_at=t)
                ).rowcount
            )  # fmt: skip

    def finalized(
        self, batch_id_: str, output_file: FileRow | None, error_file: FileRow | None, completed: int, failed: int,
        note: dict | None = None,
    ) -> None:  # fmt: skip
        """The output files recorded with the batch that they complete, in one transaction; ``note`` (how
        many failed lines the error file leaves out) is added to the batch's errors."""
        with self.session.begin() as s:
            owner = s.scalar(select(Job.owner).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch_id_))  # the batch's tenant's
            for f in (output_file, error_file):
                if f is not None:
                    s.add(StoredFile(id=f.id, purpose=f.purpose, filename=f.filename, bytes=f.bytes, path=f.path, created_at=f.created_at, owner=owner))
            values: dict = dict(
                output_file_id=output_file.id if output_file else None, error_file_id=error_file.id if error_file else None,
                lines_completed=completed, lines_failed=failed, completed_at=now(),
            )  # fmt: skip
            if note is not None:
                values["errors"] = [*(s.scalar(select(Batch.errors).where(Batch.id == batch_id_)) or []), note]
            done = s.execute(update(Batch).where(Batch.id == batch_id_, Batch.completed_at.is_(None)).values(**values))
            job = s.scalar(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch_id_))
            if done.rowcount and job is not None:
                record_job_end(s, job, output_written=True)  # batch.completed etc.: only once its output exists

    def unwritten(self, limit: int = 100) -> list[BatchRow]:
        """Batches whose job has ended and whose output files are not written yet, oldest first."""
        ended = Job.state.in_([state.value for state in JobState if state.terminal])
        running = select(Chunk.job_id).where(Chunk.job_id == Batch.job_id, Chunk.state.in_(LIVE_CHUNK)).exists()
        return self._batches(ended, Batch.completed_at.is_(None), ~running, limit=limit, oldest_first=True)

    def release_finalizing(self, batch_id_: str) -> None:
        """A writer that failed gives its claim back: the next look writes the output files."""
        with self.session.begin() as s:
            s.execute(update(Batch).where(Batch.id == batch_id_, Batch.completed_at.is_(None)).values(finalizing_at=None))

    def forget_files(self, file_ids: list[str]) -> int:
        with self.session.begin() as s:
            return s.execute(delete(StoredFile).where(StoredFile.id.in_(file_ids))).rowcount


class FileInUse(RuntimeError):
    """A batch still needs this file."""


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"
