"""The jobs API, mirroring the CLI: submit a manifest, list, status, cancel, export (streamed Parquet)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from producer.export import iter_parquet_bytes, iter_ranked
from producer.job_control import cancel
from producer.service.manifest_roots import allowed_manifest
from producer.service.tenancy import audit, viewer
from producer.submission import submit_manifest
from producer.waiting import describe_workers, with_waiting
from producer.workers import workers as registered_workers
from rerankq.store.jobs import INTERACTIVE_JOB_NAME
from rerankq.store.progress import throughput
from schemas import JobState, JobStatus, WorkerStatus

router = APIRouter(prefix="/v1", tags=["jobs"])


class JobRequest(BaseModel):
    """`producer submit MANIFEST [--name] [--instruction] [--chunk-size] [--model] [--then]`."""

    model_config = ConfigDict(extra="forbid")

    manifest: StrictStr = Field(
        description="Parquet file, directory of Parquet files, or s3:// gs:// file:// URI, under RERANKQ_MANIFEST_ROOTS"
    )
    name: StrictStr | None = None
    instruction: StrictStr | None = Field(None, description="for rows without one")
    chunk_size: StrictInt | None = Field(None, ge=1, description="pairs per chunk (default RERANKQ_CHUNK_SIZE)")
    model: StrictStr | None = Field(None, description="the model that scores the job (default RERANKQ_MODEL)")
    then: StrictStr | None = Field(None, description="a cascade: MODEL:top=K re-scores each query's K best pairs")
    notify: StrictStr | None = Field(None, description="webhook URL told when the job ends (default RERANKQ_WEBHOOK_URL)")


class CancelResponse(BaseModel):
    job_id: str
    state: JobState


class Throughput(BaseModel):
    """Pairs finished per second in buckets of ``bucket_seconds`` ending at ``at`` (Unix seconds)."""

    bucket_seconds: float | None
    at: list[float]
    pairs_per_second: list[float]


class RankedPair(BaseModel):
    query_id: str
    doc_id: str
    score: float | None
    logit: float | None = None  # log-odds: the order of ``rank``
    rank: int | None
    error: str | None


@router.post("/jobs", status_code=201, response_model=JobStatus, responses={400: {}, 503: {}})
async def submit_job(body: JobRequest, request: Request) -> JobStatus:
    """Validate the whole manifest (every problem listed), record the job, enqueue its chunks."""
    settings = request.app.state.settings
    manifest = await asyncio.to_thread(allowed_manifest, body.manifest, settings)  # RERANKQ_MANIFEST_ROOTS only
    job_id = await asyncio.to_thread(
        submit_manifest,
        manifest,
        instruction=body.instruction,
        name=body.name,
        chunk_size=body.chunk_size,
        settings=settings,
        model=body.model,
        then=body.then,
        notify=body.notify,
    )
    await asyncio.to_thread(audit, request, "job.submit", job_id)
    return await asyncio.to_thread(request.app.state.ledger.status, job_id)


@router.get("/jobs", response_model=list[JobStatus])
def list_jobs(
    request: Request,
    limit: int = Query(50, ge=1, le=1000),
    interactive: bool = Query(False, description="include the one-chunk jobs of /v1/rerank"),
) -> list[JobStatus]:
    """Recent jobs, newest first."""
    exclude = None if interactive else INTERACTIVE_JOB_NAME
    return request.app.state.ledger.list_jobs(limit, exclude_name=exclude, actor=viewer(request))


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {}})
def job_status(job_id: str, request: Request) -> JobStatus:
    """State, pairs scored/failed, chunks by state, errors, the workers holding running chunks, and what
    an unfinished job waits for (``waiting``: e.g. that no worker runs its model)."""
    status = request.app.state.ledger.status(job_id)
    return with_waiting(status, request.app.state.registry.workers(request.app.state.settings.worker_dead_after))


@router.post("/jobs/{job_id}/cancel", response_model=CancelResponse, responses={404: {}})
def cancel_job(job_id: str, request: Request) -> CancelResponse:
    """No further chunk is scored; scores already written stay."""
    state = cancel(job_id, settings=request.app.state.settings)
    audit(request, "job.cancel", job_id)
    return CancelResponse(job_id=job_id, state=state)


@router.get("/jobs/{job_id}/throughput", response_model=Throughput, responses={404: {}})
def job_throughput(job_id: str, request: Request, buckets: int = Query(60, ge=1, le=1000)) -> Throughput:
    """Pairs/s over the job's life, from its chunks' finish times (the job page's chart)."""
    store = request.app.state.ledger
    points = throughput(store.session, store.resolve_job(job_id), buckets=buckets)  # a unique prefix works
    return Throughput(
        bucket_seconds=points[0].width if points else None, at=[p.at for p in points], pairs_per_second=[p.pairs_per_second for p in points]
    )


@router.get("/jobs/{job_id}/queries/{query_id}", response_model=list[RankedPair], responses={404: {}})
def query_scores(job_id: str, query_id: str, request: Request) -> list[RankedPair]:
    """One query's documents, best first (the console's search)."""
    return [RankedPair(**row) for row in iter_ranked(request.app.state.ledger, job_id, query_id)]


@router.get(
    "/jobs/{job_id}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/vnd.apache.parquet": {}}}, 404: {}},
)
def export_job(job_id: str, request: Request) -> StreamingResponse:
    """``query_id, doc_id, score, logit, rank, error`` as Parquet, streamed a row group at a time."""
    body = iter_parquet_bytes(request.app.state.ledger, job_id)  # UnknownJob (404) before any byte
    return StreamingResponse(
        body,
        media_type="application/vnd.apache.parquet",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.parquet"'},
    )


class WorkersSummary(BaseModel):
    alive: bool
    summary: str = Field(description="the live workers in words, as the CLI says it (or how to start one)")


@router.get("/workers/summary", response_model=WorkersSummary, tags=["workers"])
def workers_summary(request: Request) -> WorkersSummary:
    """``2 workers busy, 1 worker loading its engine``, or that none is alive and how to start one."""
    workers = request.app.state.registry.workers(request.app.state.settings.worker_dead_after)
    return WorkersSummary(alive=any(w.alive for w in workers), summary=describe_workers(workers, request.app.state.settings.model))


@router.get("/workers", response_model=list[WorkerStatus], tags=["workers"])
def workers(request: Request) -> list[WorkerStatus]:
    """Workers seen recently, the live ones first (state loading | ready | busy | stopped | dead)."""
    return registered_workers(request.app.state.settings)
