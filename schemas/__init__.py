"""Pydantic models shared by producer and worker: what crosses the broker and what users read."""

from schemas.messages import (
    ChunkMessage,
    InlinePair,
    InlineSpec,
    JobState,
    ManifestSegment,
    ManifestSpec,
    RerankRequest,
)
from schemas.rerank_body import RerankBody
from schemas.status import ChunkCounts, ChunkHolder, JobStatus, WorkerStatus

__all__ = [
    "ChunkCounts",
    "ChunkHolder",
    "ChunkMessage",
    "InlinePair",
    "InlineSpec",
    "JobState",
    "JobStatus",
    "ManifestSegment",
    "ManifestSpec",
    "RerankBody",
    "RerankRequest",
    "WorkerStatus",
]
