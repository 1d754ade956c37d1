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


class WorkerStatus(BaseModel):
    """A worker as the registry holds it. ``state`` is ``dead`` when its heartbeat is older than
    RERANKQ_WORKER_DEAD_AFTER (presumed dead: its chunks are re-enqueued), whatever it last reported;
    ``failed`` at once when its engine did not load (``error`` says why)."""

    worker_id: str
    host: str
    pid: int
    model: str
    engine: dict
    fingerprint: str | None
    state: str  # loading | ready | busy | stopped | failed | dead
    alive: bool
    holding: list[int]
    pairs_scored: int
    pairs_per_second: float | None
    started_at: datetime
    last_seen: datetime
    seconds_since_seen: float
    error: str | None = None  # why a ``failed`` worker could not load its engine


class ChunkHolder(BaseModel):
    """A running chunk of a job and the worker holding it."""

    chunk: int  # the chunk's sequence number in its job
    worker_id: str | None
    alive: bool
    last_seen: datetime | None


class JobStatus(BaseModel):
    job_id: str
    name: str | None
    kind: str
    state: JobState
    manifest: str | None
    pairs_total: int
    pairs_scored: int
    pairs_failed: int
    pairs_reused: int = 0  # copied from the score cache at submission: never scored by this job's workers
    # True while the manifest is still being read and recorded (pairs_total: the pairs recorded so far; its
    # chunks are scored meanwhile); stays true on a job refused for a bad row found late (state failed) or
    # whose submitter died. Nothing is exported from such a job.
    submitting: bool = False
    model: str | None = None  # the model that scores it (None: a job recorded before jobs named one)
    score_context: str | None = None  # the scoring context all its scores come from, once known
    instruction: str | None = None  # the job's instruction (rows may carry their own)
    then_model: str | None = None  # a cascade's second model: it re-scores each query's top pairs
    then_top: int | None = None
    then_context: str | None = None
    # What an unfinished job waits for, in words (a worker of its model to start, to load, to be free);
    # filled by `producer status --json` and the service from the worker registry, None from the ledger alone.
    waiting: str | None = None
    chunks_total: int
    chunks: ChunkCounts
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    pairs_per_second: float | None
    errors: list[str] = []
    holders: list[ChunkHolder] = []
