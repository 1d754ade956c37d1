"""POST /score and /v1/score: vLLM's score API. Any of its four body forms (``text_1``/``text_2``,
``queries``/``documents``, ``queries``/``items``, ``data_1``/``data_2``), 1 to N or N to N; the answer is
vLLM's ScoreResponse, one score per pair in the request's order. Scored as /v1/rerank scores
(producer/service/rerank.py): through the live lane into a worker's running engine."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel

from producer.scoring import score_response
from producer.service.rerank import score_request
from schemas.rerank_body import ScoreBody

router = APIRouter(tags=["rerank"])


class ScoreData(BaseModel):
    index: int
    object: str = "score"
    score: float


class ScoreUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ScoreResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: ScoreUsage


_EXAMPLE = {"queries": "capital of France?", "documents": ["Paris is the capital of France.", "Berlin is in Germany."]}


async def score(request: Request, body: ScoreBody = Body(openapi_examples={"queries": {"value": _EXAMPLE}})) -> dict:
    """Score each (query, document) pair: ``data[i].score`` is P(yes) (the log-odds with ``use_activation: false``)."""
    started = time.perf_counter()
    prepared, scored, model, job_id = await score_request(body, request)
    request.app.state.metrics.rerank_latency.observe(time.perf_counter() - started)
    return await asyncio.to_thread(score_response, prepared, scored, model, f"score-{job_id}")  # usage: tokenizing


for _path, _hidden in (("/v1/score", False), ("/score", True)):
    router.add_api_route(
        _path, score, methods=["POST"], response_model=ScoreResponse, include_in_schema=not _hidden,
        responses={400: {}, 404: {}, 413: {}, 429: {}, 503: {}, 504: {}},
        summary="Score query-document pairs (vLLM's score API)" + (" (alias of /v1/score)" if _hidden else ""),
    )  # fmt: skip
