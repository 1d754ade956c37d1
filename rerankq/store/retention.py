"""Deleting old jobs: finished ones only. Each job's row and chunks go in one transaction that first
locks the job row and checks it again, so a job that `retry` or a worker brought back to life
meanwhile is never touched.

PostgreSQL: a job's scores are its own partition (rerankq/store/partitions.py). Once its row is gone
the partition is detached concurrently and dropped: no row is deleted, the time does not depend on the
job's size, and workers writing other jobs are never blocked. A prune interrupted in between leaves an
orphan partition, which the next prune drops. SQLite: the scores are deleted in the job's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from rerankq.logs import get_logger
from rerankq.store.base import LIVE_CHUNK
from rerankq.store.clock import now
from rerankq.store.ledger import Ledger
from rerankq.store.models import Chunk, Job, Score
from rerankq.store.partitions import orphans, retire_partition
from schemas import JobState

FINISHED = tuple(s.value for s in JobState if s.terminal)
log = get_logger("rerankq.retention")


@dataclass
class JobPruneReport:
    cutoff: datetime
    jobs: list[str] = field(default_factory=list)
    chunks: int = 0
    scores: int = 0
    orphans: int = 0  # partitions left by an interrupted prune, dropped now (PostgreSQL)


def _prunable(cutoff: datetime):  # noqa: ANN202
    """Finished before ``cutoff`` (created before it, if it never finished) and no chunk still live:
    a cancelled job may still have a chunk running on a worker."""
    live = exists().where(Chunk.job_id == Job.id, Chunk.state.in_(LIVE_CHUNK))
    return (Job.state.in_(FINISHED)) & (func.coalesce(Job.finished_at, Job.created_at) < cutoff) & ~live


def _score_rows(s: Session, job: Job) -> int:
    """The job's score rows without reading them: its reused pairs plus what its done chunks wrote
    (each chunk is written once, failed and cancelled chunks write nothing)."""
    written = s.scalar(
        select(func.coalesce(func.sum(Chunk.scored + Chunk.pair_errors), 0)).where(
            Chunk.job_id == job.id, Chunk.state == "done"
        )
    )
    return (job.pairs_reused or 0) + int(written or 0)


def prune_jobs(store: Ledger, older_than: float, dry_run: bool = False) -> JobPruneReport:
    report = JobPruneReport(cutoff=now() - timedelta(seconds=older_than))
    partitioned = store.dialect == "postgresql"
    engine = store.session.kw["bind"]
    with store.session() as s:
        candidates = s.scalars(select(Job.id).where(_prunable(report.cutoff)).order_by(Job.created_at)).all()
    for job_id in candidates:
        with store.session.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or not s.scalar(select(func.count()).select_from(Job).where(Job.id == job_id, _prunable(report.cutoff))):
                continue
            if dry_run or partitioned:
                report.scores += _score_rows(s, job)
            if dry_run:
                report.chunks += s.scalar(select(func.count()).select_from(Chunk).where(Chunk.job_id == job_id)) or 0
            else:
                if not partitioned:
                    report.scores += s.execute(delete(Score).where(Score.job_id == job_id)).rowcount
                report.chunks += s.execute(delete(Chunk).where(Chunk.job_id == job_id)).rowcount
                s.execute(delete(Job).where(Job.id == job_id))
            report.jobs.append(job_id)
        if partitioned and not dry_run:  # the job row is gone: nothing can bring these scores back to use
            retire_partition(engine, job_id)
    if partitioned and not dry_run:
        for job_id in list(orphans(engine)):
            if retire_partition(engine, job_id):
                report.orphans += 1
                log.info("orphan_partition_dropped", job_id=job_id)
    return report


def parse_age(value: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (or plain seconds) as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    v = value.strip().lower()
    try:
        if v and v[-1] in units:
            seconds = float(v[:-1]) * units[v[-1]]
        else:
            seconds = float(v)
    except ValueError:
        raise ValueError(f"{value!r} is not an age: use e.g. 30d, 12h, 90m, 45s or 2w") from None
    if seconds < 0:
        raise ValueError(f"{value!r}: an age cannot be negative")
    return seconds
