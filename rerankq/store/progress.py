"""A job's throughput over time, read from its chunks' ``finished_at`` and pair counts.

Kept apart from the ledger's write path: the console's chart is a read-only view, and the ledger
holds no time series of its own (a chunk's pairs count when its transaction commits)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rerankq.store.models import Chunk, Job


@dataclass(frozen=True, slots=True)
class RatePoint:
    """Pairs finished per second in the bucket of ``width`` seconds ending at ``at`` (Unix seconds)."""

    at: float
    pairs_per_second: float
    width: float


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def chunk_finishes(session: sessionmaker[Session], job_id: str) -> tuple[datetime | None, list[tuple[datetime, int]]]:
    """The job's start and, oldest first, each finished chunk's (finished_at, pairs scored or failed)."""
    with session() as s:
        started = s.scalar(select(Job.started_at).where(Job.id == job_id))
        rows = s.execute(
            select(Chunk.finished_at, Chunk.scored + Chunk.pair_errors)
            .where(Chunk.job_id == job_id, Chunk.state == "done", Chunk.finished_at.is_not(None))
            .order_by(Chunk.finished_at)
        ).all()
    return (_utc(started) if started else None), [(_utc(t), int(n or 0)) for t, n in rows]


CHUNKS_PER_BUCKET = 3  # chunks commit whole: fewer per bucket and the curve is mostly spikes and gaps


def throughput(session: sessionmaker[Session], job_id: str, buckets: int = 60, min_width: float = 0.05) -> list[RatePoint]:
    """Pairs/s over the job's life in equal intervals (at most ``buckets``, about CHUNKS_PER_BUCKET
    finished chunks each on average, none narrower than ``min_width`` seconds, so that chunks finishing
    together do not make an infinite rate) from its start to its last finished chunk; empty until a
    chunk has finished.

    A bucket's rate is the pairs of the chunks that finished in it over its width: with few chunks
    the curve is coarse, never invented."""
    started, finishes = chunk_finishes(session, job_id)
    if not finishes:
        return []
    origin = min(started or finishes[0][0], finishes[0][0])
    span = (finishes[-1][0] - origin).total_seconds()
    buckets = max(1, min(buckets, len(finishes) // CHUNKS_PER_BUCKET))
    width = max(min_width, span / buckets)
    # ceil, at least one bucket, never more than asked: span / (span / buckets) can round up past
    # ``buckets``, and one bucket too many drew the chart a bucket past the job's end
    n = max(1, min(buckets, math.ceil(span / width)))
    sums = [0] * n
    for at, pairs in finishes:
        i = min(n - 1, int((at - origin).total_seconds() // width))
        sums[i] += pairs
    t0 = origin.timestamp()
    return [RatePoint(at=t0 + (i + 1) * width, pairs_per_second=sums[i] / width, width=width) for i in range(n)]
