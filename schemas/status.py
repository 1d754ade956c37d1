"""What ``producer status --json`` prints: the job as the SQL ledger holds it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from schemas.messages import JobState


class ChunkCounts(BaseModel):
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0


class JobStatus(BaseModel):
    job_id: str
    name: str | None
    kind: str
    state: JobState
    manifest: str | None
    pairs_total: int
    pairs_scored: int
    pairs_failed: int
    chunks_total: int
    chunks: ChunkCounts
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    pairs_per_second: float | None
    errors: list[str] = []
