"""The chunk message: the only thing a worker receives. JSON only; manifests travel as references."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class JobState(StrEnum):
    """OpenAI Batch states, where they fit."""

    queued = "queued"
    running = "running"
    completed = "completed"
    completed_with_errors = "completed_with_errors"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.queued, JobState.running)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestSegment(_Model):
    """Rows ``[start, stop)`` of one Parquet file; ``size``/``file_rows`` detect a file changed after submission.

    ``rows`` (optional, ascending, within ``[start, stop)``) names the only rows to score: the pairs left
    after reuse from the score cache. Absent, every row of the range is scored; it is then left out of
    the JSON too, so messages stay readable by workers that predate it."""

    path: str
    start: int = Field(ge=0)
    stop: int = Field(gt=0)
    size: int = Field(ge=0)
    file_rows: int = Field(ge=0)
    rows: list[int] | None = None

    @model_validator(mode="after")
    def _rows_in_range(self) -> ManifestSegment:
        if self.rows is not None:
            if not self.rows or any(b <= a for a, b in zip(self.rows, self.rows[1:])):
                raise ValueError("rows must be a non-empty ascending list")
            if self.rows[0] < self.start or self.rows[-1] >= self.stop:
                raise ValueError("rows must lie within [start, stop)")
        return self

    @model_serializer(mode="wrap")
    def _omit_rows(self, handler):  # noqa: ANN001, ANN202
        data = handler(self)
        if data.get("rows") is None:
            data.pop("rows", None)
        return data


class ManifestSpec(_Model):
    kind: Literal["manifest"] = "manifest"
    uri: str
    segments: list[ManifestSegment]
    instruction: str | None = None


class InlinePair(_Model):
    query_id: str
    doc_id: str
    query: str
    document: str
    instruction: str | None = None


class InlineSpec(_Model):
    kind: Literal["inline"] = "inline"
    pairs: list[InlinePair]


ChunkSpec = Annotated[ManifestSpec | InlineSpec, Field(discriminator="kind")]


class ChunkMessage(_Model):
    job_id: str
    chunk_id: int
    spec: ChunkSpec
    # Where the chunk is routed (rerankq/routing.py): the job's model and, once pinned, its scoring
    # context. The ledger stays the judge: a worker checks both again before it scores.
    model: str | None = None
    context: str | None = None
    # A cascade (two stages in one job): stage 1 scores every pair with the job's model, and each
    # query's ``top`` best go on to stage 2, re-scored by the second model. Cascade chunks look the
    # score cache up on the worker (their pairs are not filtered by reuse at submission).
    stage: int = Field(default=1, ge=1, le=2)
    top: int | None = Field(default=None, ge=1)

    @property
    def cascade(self) -> bool:
        return self.stage == 2 or self.top is not None


class RerankRequest(BaseModel):
    """A small job whose documents travel inside the message."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1)
    instruction: str | None = None
    query_id: str = "q0"
