"""The scoring routes, vLLM's: POST /rerank, /v1/rerank, /v2/rerank (vLLM / Jina / Cohere rerank) and,
in producer/service/score.py, /score and /v1/score. Bodies and responses are vLLM's (producer/scoring.py
reads them, as batch lines are read).

A request goes to its model's live lane (rerankq/live.py, producer/live_client.py) when a live worker of
the model runs one (its registry entry says ``live_lane``): it enters that worker's running engine ahead of
the night's batch prompts, and leaves no job, chunk or partition behind; Prometheus counts it
(producer/service/metrics.py). Otherwise (workers without the lane, a broker other than Redis) it becomes a
one-chunk inline job at the interactive priority, which a worker takes before its next batch chunk; the
endpoint then polls the ledger in a thread with ``asyncio.sleep`` between polls."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from producer.errors import BrokerUnavailable, InputError
from producer.interactive import has_live_lane, live_order, rerank_results, submit_interactive
from producer.live_client import ClientGone, LaneFull, LaneTimeout, WorkerFailed
from producer.queueing import interactive_backlog, safe_url
from producer.scoring import Scored, Scoring, prepare, rerank_response
from producer.service.errors import Overloaded, ServiceError
from producer.submission import for_model
from producer.waiting import describe_workers, no_worker_runs
from rerankq.routing import normalize_model, resolve_model, served_names
from rerankq.settings import Settings
from schemas import InlinePair, RerankBody
from schemas.rerank_body import ScoreBody

router = APIRouter(tags=["rerank"])


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="the document's position in the request")
    relevance_score: float = Field(description="P(yes); with use_activation false, the log-odds")
    document: RerankDocument | None = Field(None, description="always, except on /v2/rerank with return_documents false")


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult] = Field(description="best first")


def _submit(pairs: list[InlinePair], settings: Settings) -> str:
    backlog = interactive_backlog(settings)
    if backlog >= settings.max_interactive_backlog:
        raise Overloaded(
            f"the interactive queue is full ({backlog} requests waiting for a worker, "
            f"RERANKQ_MAX_INTERACTIVE_BACKLOG={settings.max_interactive_backlog}); retry shortly"
        )
    return submit_interactive(pairs, settings=settings)


WORKER_CHECK_SECONDS = 2.0  # while a request waits, how often the registry is read again


async def _workers_now(request: Request, settings: Settings) -> tuple[bool, str, bool]:
    """Whether a live worker runs the request's model, in words why not or what the workers do
    (`producer.waiting`, as the CLI says it), and whether one of them runs a live lane."""
    workers = await asyncio.to_thread(request.app.state.registry.workers, settings.worker_dead_after)
    missing = no_worker_runs(settings.model, workers)
    return missing is None, missing or describe_workers(workers, settings.model), has_live_lane(settings, workers)


async def _require_a_worker(request: Request, settings: Settings, job_id: str | None = None) -> tuple[str, bool]:
    """503 at once when no live worker runs the model (nothing would ever score the request); else the
    words and whether a worker of the model runs a live lane."""
    alive, words, lane = await _workers_now(request, settings)
    if not alive:
        if job_id is not None:
            await asyncio.to_thread(request.app.state.ledger.cancel, job_id)
        others = words.startswith("no worker runs")  # workers run other models: vLLM's 404 for a model it does not serve
        raise ServiceError(404 if others else 503, words)
    return words, lane


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
            _, words, _ = await _workers_now(request, settings)
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


async def score_request(body: RerankBody | ScoreBody, request: Request) -> tuple[Scoring, list[Scored], str, str]:
    """Check, submit and wait for one scoring request: (the request as scored, its pairs' results in rank
    order, the model name to answer with, the job id)."""
    base: Settings = request.app.state.settings
    settings = base
    if body.model:
        workers = await asyncio.to_thread(request.app.state.registry.workers, base.worker_dead_after)
        settings = for_model(base, resolve_model(body.model, base.model, base.served_model_name, [w for w in workers if w.alive]))
    prepared = await asyncio.to_thread(prepare, body, "q0", settings)
    _, lane = await _require_a_worker(request, settings)
    if lane:
        scored, request_id = await _score_live(request, prepared, settings)
    else:
        scored, request_id = await _score_as_job(request, prepared, settings)
    failed = next((r for r in scored if r.error is not None), None)
    if failed is not None:
        side = "documents" if isinstance(body, RerankBody) else body.form[1]
        raise InputError(f"field '{side}[{failed.index}]': {failed.error}")
    name = body.model or next(iter(served_names(base.served_model_name)), None) or settings.model
    return prepared, [Scored(r.index, r.score, r.logit) for r in scored], name, request_id


@dataclass(frozen=True, slots=True)
class _Result:
    index: int
    score: float | None
    logit: float | None
    error: str | None


async def _score_as_job(request: Request, prepared: Scoring, settings: Settings) -> tuple[list[_Result], str]:
    """Workers without a live lane: a one-chunk job, waited for in the ledger; its results best first."""
    job_id = await asyncio.to_thread(_submit, prepared.pairs, settings)
    await _wait(request, job_id, settings)
    ranked = await asyncio.to_thread(rerank_results, job_id, [p.document for p in prepared.pairs], settings)
    return [_Result(int(r.doc_id), r.score, r.logit, r.error) for r in ranked], job_id


async def _score_live(request: Request, prepared: Scoring, settings: Settings) -> tuple[list[_Result], str]:
    """Through the model's live lane (no ledger row); its results best first, ranked as jobs rank (log-odds,
    ties by the document's position in byte order)."""
    metrics, model = request.app.state.metrics, normalize_model(settings.model)
    started = time.perf_counter()

    async def still_served() -> None:
        if time.monotonic() >= checked[0] + WORKER_CHECK_SECONDS:  # the last worker may have died meanwhile
            checked[0] = time.monotonic()
            await _require_a_worker(request, settings)

    checked = [time.monotonic()]
    outcome = "error"
    try:
        request_id, scores = await request.app.state.live.ask(
            prepared.pairs, settings, gone=request.is_disconnected, between=still_served
        )
        outcome = "ok"
    except LaneFull as full:
        outcome = "full"
        raise Overloaded(
            f"the interactive queue is full ({full.waiting} requests waiting for a worker, "
            f"RERANKQ_MAX_INTERACTIVE_BACKLOG={settings.max_interactive_backlog}); retry shortly"
        ) from None
    except LaneTimeout:
        outcome = "timeout"
        _, words, _ = await _workers_now(request, settings)
        raise ServiceError(
            504, f"no worker scored the request within {settings.rerank_timeout:g} s (RERANKQ_RERANK_TIMEOUT); {words}"
        ) from None
    except ClientGone:
        outcome = "cancelled"
        raise ServiceError(499, "the client closed the connection; the request was cancelled") from None
    except WorkerFailed as exc:
        raise ServiceError(500, f"the worker could not score the request: {exc}") from None
    except ServiceError as exc:
        outcome = "no_worker" if exc.status in (404, 503) else "error"
        raise
    except (RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker {safe_url(settings.broker)}: {str(exc)[:200]}") from None
    finally:
        metrics.observe_live(model, outcome, len(prepared.pairs), time.perf_counter() - started)
    return [_Result(i, scores[i].score, scores[i].logit, scores[i].error) for i in live_order(scores)], request_id


async def rerank(body: RerankBody, request: Request) -> dict:
    """Score ``documents`` against ``query``: vLLM's RerankResponse, best first (by log-odds), ``index`` =
    position in the request, each result with its ``document`` (Cohere's /v2/rerank leaves it out with
    ``return_documents: false``)."""
    started = time.perf_counter()
    prepared, scored, model, job_id = await score_request(body, request)
    request.app.state.metrics.rerank_latency.observe(time.perf_counter() - started)
    # usage counts tokens: off the event loop, which serves every other waiting request meanwhile
    return await asyncio.to_thread(rerank_response, prepared, scored, model, f"rerank-{job_id}", request.url.path)


for _path, _hidden in (("/v1/rerank", False), ("/rerank", True), ("/v2/rerank", True)):
    router.add_api_route(
        _path,
        rerank,
        methods=["POST"],
        response_model=RerankResponse,
        response_model_exclude_unset=True,
        include_in_schema=not _hidden,
        responses={
            400: {}, 404: {"description": "no live worker serves the model"}, 413: {}, 429: {},
            503: {"description": "no worker alive, or broker/database away"}, 504: {},
        },  # fmt: skip
        summary="Rerank documents for a query" + (" (alias of /v1/rerank)" if _hidden else ""),
    )
