"""Rerank: one query against a few documents through the workers, answered in seconds.

When a live worker of the model runs a live lane (rerankq/live.py), the request goes there: into its running
engine ahead of the night's prompts, with no job, chunk or partition. Otherwise it is a one-chunk inline job at
the highest message priority, which a worker takes before the next chunk of any batch job. Shared by
`producer rerank`, ``rerank()`` and /v1/rerank."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from producer.errors import InputError
from producer.job_control import ledger
from producer.submission import checked_pairs, for_model, submit_pairs
from producer.waiting import describe_workers, no_worker_runs, wait
from producer.workers import seen_workers
from rerankq.live import LiveScore
from rerankq.routing import normalize_model, resolve_model
from rerankq.settings import Settings, get_settings
from rerankq.store.jobs import INTERACTIVE_JOB_NAME
from rerankq.store.registry import WorkerInfo
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


def has_live_lane(settings: Settings, workers: Sequence[WorkerInfo], *, loaded: bool = False) -> bool:
    """Whether a live worker of ``settings.model`` runs a live lane (its registry entry says so) on a Redis broker;
    ``loaded``: one whose engine is loaded (a worker still loading takes lane requests only once ready, and the
    CLI's job path says meanwhile what it waits for)."""
    from producer.live_client import is_redis

    model = normalize_model(settings.model)
    lane = any(
        w.alive and w.model == model and (w.engine or {}).get("live_lane") and not (loaded and w.state == "loading")
        for w in workers
    )
    return lane and is_redis(settings.broker)


def live_order(scores: Sequence[LiveScore]) -> list[int]:
    """The positions of a live reply's scores best first, ranked as jobs rank (log-odds, ties by the
    document's position in byte order); pairs that failed last, in order."""
    def value(s: LiveScore) -> float:
        return s.logit if s.logit is not None else (s.score if s.score is not None else float("-inf"))

    ok = sorted((i for i, s in enumerate(scores) if s.error is None), key=lambda i: (-value(scores[i]), str(i).encode()))
    return ok + [i for i, s in enumerate(scores) if s.error is not None]


def _rerank_live(request: RerankRequest, settings: Settings) -> list[Ranked] | None:
    """Through the model's live lane; None when the lane is full (the caller makes it a job instead)."""
    import asyncio

    from producer.live_client import LaneFull, LaneTimeout, LiveClient, WorkerFailed

    async def ask() -> list[LiveScore]:
        client = LiveClient(settings)
        try:
            return (await client.ask(_pairs(request), settings))[1]
        finally:
            await client.close()

    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            scores = asyncio.run(ask())
        else:  # called from a running event loop (a notebook): asyncio.run refuses to nest, a thread of its own does not
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                scores = pool.submit(asyncio.run, ask()).result()
    except LaneFull:
        return None
    except LaneTimeout:
        raise TimeoutError(
            f"no worker scored the request within {settings.rerank_timeout:g} s, so it was cancelled; "
            f"{describe_workers(seen_workers(settings), settings.model)}"
        ) from None
    except WorkerFailed as exc:
        raise RuntimeError(f"the worker could not score the request: {exc}") from None
    order = live_order(scores)
    return [
        Ranked(rank + 1 if scores[i].error is None else None, str(i), scores[i].score, request.documents[i],
               scores[i].error, scores[i].logit)
        for rank, i in enumerate(order)
    ]  # fmt: skip


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
    if has_live_lane(settings, seen_workers(settings), loaded=True):
        live = settings.model_copy(update={"rerank_timeout": timeout}) if timeout else settings
        ranked = _rerank_live(request, live)
        if ranked is not None:
            return ranked
    job_id = submit_rerank(request, settings=settings)
    st = wait(job_id, timeout=timeout, settings=settings, on_wait=on_wait)
    if not st.state.terminal and ledger(settings).cancel(job_id) == JobState.cancelled:
        workers = seen_workers(settings)
        raise TimeoutError(
            f"job {job_id} still {st.state.value} after {timeout:g} s, so it was cancelled; "
            f"{no_worker_runs(settings.model, workers) or describe_workers(workers, settings.model)}"
        )
    return rerank_results(job_id, request.documents, settings)
