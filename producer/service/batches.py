"""The OpenAI Batches API over rerankq jobs: create from an uploaded file, retrieve, list, cancel.
A batch's status is derived from its job on each look (producer/batch_files.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from producer.batch_files import batch_object, batch_store, submit_batch
from producer.batch_output import finalize_ended, refreshed
from producer.job_control import cancel
from producer.service.errors import ServiceError
from producer.service.tenancy import audit, viewer
from producer.waiting import waiting_for
from rerankq.logs import get_logger
from rerankq.store.batches import BatchRow

log = get_logger("rerankq.service")

FINALIZE_EVERY = 5.0  # seconds between the service's looks for ended batches whose output is not written


async def _finalize_loop(app: FastAPI) -> None:
    """Ended batches get their output files (and so their webhook event) even if no client looks."""
    settings = app.state.settings
    store, waits = batch_store(settings), {}
    while True:
        await asyncio.sleep(FINALIZE_EVERY)
        try:
            await asyncio.to_thread(finalize_ended, store, settings, waits)
        except Exception as exc:  # noqa: BLE001 - the database may be away: the next round tries again
            log.warning("batch_finalizer_failed", error=type(exc).__name__)


@contextlib.asynccontextmanager
async def _finalizer(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(_finalize_loop(app))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(prefix="/v1", tags=["batches"], lifespan=_finalizer)


class BatchBody(BaseModel):
    """OpenAI's batch request; ``notify`` (a webhook URL for this batch) is rerankq's own."""

    model_config = ConfigDict(extra="ignore")

    input_file_id: StrictStr
    endpoint: StrictStr = Field(description="/v1/rerank or /v1/score")
    completion_window: StrictStr = Field("24h", description="hours or days, e.g. 24h; then the batch expires")
    metadata: dict[str, StrictStr] | None = Field(None, description="up to 16 keys (64 chars) and values (512 chars)")
    notify: StrictStr | None = Field(None, description="webhook URL told when the batch ends (default RERANKQ_WEBHOOK_URL)")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())):
            raise ValueError("at most 16 keys of up to 64 characters, values up to 512")
        return value


def _look(request: Request, batch_id: str) -> dict:
    settings = request.app.state.settings
    store = batch_store(settings)
    row = store.batch(batch_id)
    if row is None:
        raise ServiceError(404, f"no batch {batch_id!r}")
    out = batch_object(refreshed(store, row, settings), store)
    if out["status"] == "in_progress":  # rerankq's own field: what it waits for, e.g. that no worker runs its model
        workers = request.app.state.registry.workers(settings.worker_dead_after)
        out["waiting"] = waiting_for(request.app.state.ledger.status(row.job_id), workers)
    return out


@router.post("/batches", responses={400: {}, 404: {}, 503: {}})
async def create_batch(body: BatchBody, request: Request) -> dict:
    """Check every line of the file (a bad line fails only itself), then queue the good ones as one job."""
    settings = request.app.state.settings
    store = batch_store(settings)
    input_file = await asyncio.to_thread(store.file, body.input_file_id, viewer(request))  # another tenant's: no file
    if input_file is None:
        raise ServiceError(404, f"field 'input_file_id': no file {body.input_file_id!r}")
    row: BatchRow = await asyncio.to_thread(
        submit_batch, input_file, endpoint=body.endpoint, completion_window=body.completion_window,
        metadata=body.metadata, notify=body.notify, settings=settings,
    )  # fmt: skip
    await asyncio.to_thread(audit, request, "batch.create", row.id)
    try:  # the batch exists now (one transaction): the client gets it, whatever the look after it meets
        return await asyncio.to_thread(_look, request, row.id)
    except Exception as exc:  # noqa: BLE001
        log.warning("batch_look_failed", batch=row.id, error=type(exc).__name__)
        return await asyncio.to_thread(batch_object, row, store)


@router.get("/batches/{batch_id}", responses={404: {}})
async def retrieve_batch(batch_id: str, request: Request) -> dict:
    return await asyncio.to_thread(_look, request, batch_id)


@router.get("/batches")
async def list_batches(request: Request, limit: int = Query(20, ge=1, le=100), after: str | None = None) -> dict:
    settings = request.app.state.settings
    store = batch_store(settings)

    def page() -> list[dict]:
        return [batch_object(refreshed(store, r, settings), store) for r in store.batches(limit + 1, after, viewer(request))]

    data = await asyncio.to_thread(page)
    more, data = len(data) > limit, data[:limit]
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": more,
    }  # fmt: skip


@router.post("/batches/{batch_id}/cancel", responses={404: {}})
async def cancel_batch(batch_id: str, request: Request) -> dict:
    """Nothing new starts; lines already scored stay in the output."""
    settings = request.app.state.settings
    row = await asyncio.to_thread(batch_store(settings).batch, batch_id)
    if row is None:
        raise ServiceError(404, f"no batch {batch_id!r}")
    await asyncio.to_thread(cancel, row.job_id, settings)
    await asyncio.to_thread(audit, request, "batch.cancel", batch_id)
    return await asyncio.to_thread(_look, request, batch_id)
