"""POST /v1/rerank (and /rerank, /v2/rerank): the vLLM / Jina / Cohere rerank interface.

The request becomes a one-chunk inline job sent at the interactive priority: it goes through the
queue to the GPU workers like any job, and a worker takes it before its next batch chunk. The
endpoint waits by polling the ledger in a thread with ``asyncio.sleep`` between polls, so the event
loop keeps serving while a request waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from producer.errors import InputError
from producer.interactive import check_rerank, rerank_results, submit_rerank
from producer.queueing import interactive_backlog
from producer.service.errors import Overloaded, ServiceError
from producer.service.tokens import tokens_for
from producer.submission import for_model
from producer.waiting import describe_workers, no_worker_runs
from rerankq.settings import Settings
from schemas import RerankBody

router = APIRouter(tags=["rerank"])


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="the document's position in the request")
    relevance_score: float = Field(description="P(yes); with use_activation false, the log-odds")
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult] = Field(description="best first")


def _prepare(body: RerankBody, settings: Settings) -> tuple[Any, list[str], int]:
    """Validated request (the CLI's checks), the texts to score, and their prompt tokens."""
    documents: list[str] = body.documents  # type: ignore[assignment]
    request = check_rerank(body.query, documents, body.instruction, settings)
    tokens = tokens_for(settings)
    scored = documents
    if body.max_tokens_per_doc is not None:
        if tokens is None:
            raise InputError(
                "field 'max_tokens_per_doc': needs the model's tokenizer on the service's host (RERANKQ_MODEL)"
            )
        scored = [tokens.truncate(d, body.max_tokens_per_doc) for d in documents]
        request = request.model_copy(update={"documents": scored})
    used = tokens.prompt_tokens(request.query, scored, request.instruction) if tokens else 0
    return request, documents, used


def _submit(request: Any, settings: Settings) -> str:
    backlog = interactive_backlog(settings)
    if backlog >= settings.max_interactive_backlog:
        raise Overloaded(
            f"the interactive queue is full ({backlog} requests waiting for a worker, "
            f"RERANKQ_MAX_INTERACTIVE_BACKLOG={settings.max_interactive_backlog}); retry shortly"
        )
    return submit_rerank(request, settings=settings)


WORKER_CHECK_SECONDS = 2.0  # while a request waits, how often the registry is read again


async def _workers_now(request: Request, settings: Settings) -> tuple[bool, str]:
    """Whether a live worker runs the request's model, and in words why not or what the workers do
    (`producer.waiting`, as the CLI says it)."""
    workers = await asyncio.to_thread(request.app.state.registry.workers, settings.worker_dead_after)
    missing = no_worker_runs(settings.model, workers)
    return missing is None, missing or describe_workers(workers)


async def _require_a_worker(request: Request, settings: Settings, job_id: str | None = None) -> str:
    """503 at once when no live worker runs the model (nothing would ever score the request); the words otherwise."""
    alive, words = await _workers_now(request, settings)
    if not alive:
        if job_id is not None:
            await asyncio.to_thread(request.app.state.ledger.cancel, job_id)
        raise ServiceError(503, words)
    return words


async def _wait(request: Request, job_id: str, settings: Settings) -> None:
    store = request.app.state.ledger
    deadline = time.monotonic() + settings.rerank_timeout
    next_check = time.monotonic() + WORKER_CHECK_SECONDS
    pause = 0.01
    while True:
        status = await asyncio.to_thread(store.status, job_id)
        if status.state.terminal:
            return
        if time.monotonic() >= deadline:
            _, words = await _workers_now(request, settings)
            await asyncio.to_thread(store.cancel, job_id)
            raise ServiceError(
                504,
                f"no worker scored the request within {settings.rerank_timeout:g} s (RERANKQ_RERANK_TIMEOUT); {words}",
            )
        if time.monotonic() >= next_check:  # the last worker may have died while the request waited
            await _require_a_worker(request, settings, job_id)
            next_check = time.monotonic() + WORKER_CHECK_SECONDS
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.1)


async def rerank(body: RerankBody, request: Request) -> RerankResponse:
    """Score ``documents`` against ``query``; results sorted by score, ``index`` = position in the request."""
    settings: Settings = for_model(request.app.state.settings, body.model)
    started = time.perf_counter()
    prepared, documents, used = await asyncio.to_thread(_prepare, body, settings)
    await _require_a_worker(request, settings)
    job_id = await asyncio.to_thread(_submit, prepared, settings)
    await _wait(request, job_id, settings)
    ranked = await asyncio.to_thread(rerank_results, job_id, documents, settings)
    failed = next((r for r in ranked if r.error is not None), None)
    if failed is not None:
        raise InputError(f"field 'documents.{failed.doc_id}': {failed.error}")
    top = ranked[: body.top_n] if body.top_n else ranked
    results = [
        RerankResult(
            index=int(r.doc_id),
            relevance_score=body.relevance(r.score, r.logit),  # type: ignore[arg-type]
            document=RerankDocument(text=r.document) if body.return_documents else None,
        )
        for r in top
    ]
    request.app.state.metrics.rerank_latency.observe(time.perf_counter() - started)
    return RerankResponse(
        id=f"rerank-{job_id}",
        model=settings.model,
        usage=RerankUsage(prompt_tokens=used, total_tokens=used),
        results=results,
    )


for _path, _hidden in (("/v1/rerank", False), ("/rerank", True), ("/v2/rerank", True)):
    router.add_api_route(
        _path,
        rerank,
        methods=["POST"],
        response_model=RerankResponse,
        response_model_exclude_none=True,
        include_in_schema=not _hidden,
        responses={400: {}, 413: {}, 429: {}, 503: {"description": "no worker alive, or broker/database away"}, 504: {}},
        summary="Rerank documents for a query" + (" (alias of /v1/rerank)" if _hidden else ""),
    )
