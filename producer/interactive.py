"""Rerank: one query against a few documents through the workers, answered in seconds.

The request is a one-chunk inline job at the highest message priority, so a worker takes it
before the next chunk of any batch job. Shared by `producer rerank`, ``rerank()`` and /v1/rerank."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from producer.errors import InputError
from producer.job_control import ledger
from producer.submission import checked_pairs, for_model, submit_pairs
from producer.waiting import describe_workers, no_worker_runs, wait
from producer.workers import seen_workers
from rerankq.routing import resolve_model
from rerankq.settings import Settings, get_settings
from rerankq.store.jobs import INTERACTIVE_JOB_NAME
from schemas import InlinePair, JobState, JobStatus, RerankRequest


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int | None
    doc_id: str
    score: float | None  # P(yes)
    document: str
    error: str | None = None
    logit: float | None = None  # its log-odds (the order of ``rank``): vLLM's ``use_activation: false`` score


def check_rerank(
    query: str, documents: Sequence[str], instruction: str | None = None, settings: Settings | None = None
) -> RerankRequest:
    """The rerank request's validation, shared by `producer rerank`, rerank() and /v1/rerank."""
    settings = settings or get_settings()
    try:
        request = RerankRequest(query=query, documents=list(documents), instruction=instruction)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"field {'.'.join(map(str, err['loc']))!r}: {err['msg']}") from None
    if len(request.documents) > settings.max_inline_pairs:
        raise InputError(
            f"field 'documents': {len(request.documents):,} documents, over the limit of "
            f"{settings.max_inline_pairs:,} (RERANKQ_MAX_INLINE_PAIRS)"
        )
    checked_pairs(_pairs(request), None, settings)  # empty texts, character limits: worded per pair, before anything else
    return request


def _pairs(request: RerankRequest) -> list[InlinePair]:
    """The request's documents as one query's pairs (``doc_id``: the document's position)."""
    return [
        InlinePair(query_id=request.query_id, doc_id=str(i), query=request.query, document=d, instruction=request.instruction)
        for i, d in enumerate(request.documents)
    ]


def submit_rerank(request: RerankRequest, *, settings: Settings | None = None) -> str:
    """One interactive chunk (highest priority: workers take it before the next batch chunk); the job id."""
    return submit_interactive(_pairs(request), settings=settings)


def submit_interactive(pairs: list[InlinePair], *, settings: Settings | None = None) -> str:
    """Any checked pairs (a /score request's may hold several queries) as one interactive chunk; the job id."""
    from rerankq.broker import INTERACTIVE_PRIORITY

    return submit_pairs(
        pairs, settings=settings or get_settings(), chunk_size=len(pairs), name=INTERACTIVE_JOB_NAME,
        priority=INTERACTIVE_PRIORITY,
    )  # fmt: skip


def rerank_results(job_id: str, documents: Sequence[str], settings: Settings | None = None) -> list[Ranked]:
    """A finished rerank job's results, best first (``doc_id`` is the document's position)."""
    from producer.export import iter_ranked

    return [
        Ranked(row["rank"], row["doc_id"], row["score"], documents[int(row["doc_id"])], row["error"], row["logit"])
        for row in iter_ranked(ledger(settings), job_id)
    ]


def rerank(
    query: str,
    documents: Sequence[str],
    instruction: str | None = None,
    *,
    timeout: float | None = 600,
    settings: Settings | None = None,
    on_wait: Callable[[JobStatus, str], object] | None = None,
    model: str | None = None,
) -> list[Ranked]:
    """Score one query against a few documents through the workers of ``model`` (default: RERANKQ_MODEL);
    best first. While it waits, ``on_wait`` hears what for (e.g. that no worker runs the model); a job still
    unfinished after ``timeout`` seconds is cancelled (TimeoutError says why it did not finish)."""
    settings = settings or get_settings()
    if model:  # a name a worker (or this process) serves the model under reaches it (RERANKQ_SERVED_MODEL_NAME)
        model = resolve_model(model, settings.model, settings.served_model_name, [w for w in seen_workers(settings) if w.alive])
    settings = for_model(settings, model)
    request = check_rerank(query, documents, instruction, settings)
    job_id = submit_rerank(request, settings=settings)
    st = wait(job_id, timeout=timeout, settings=settings, on_wait=on_wait)
    if not st.state.terminal and ledger(settings).cancel(job_id) == JobState.cancelled:
        workers = seen_workers(settings)
        raise TimeoutError(
            f"job {job_id} still {st.state.value} after {timeout:g} s, so it was cancelled; "
            f"{no_worker_runs(settings.model, workers) or describe_workers(workers, settings.model)}"
        )
    return rerank_results(job_id, request.documents, settings)
