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
from schemas.status import ChunkCounts, JobStatus

__all__ = [
    "ChunkCounts",
    "ChunkMessage",
    "InlinePair",
    "InlineSpec",
    "JobState",
    "JobStatus",
    "ManifestSegment",
    "ManifestSpec",
    "RerankRequest",
]
