"""The producer's Python API: submit manifests or inline pairs, follow, resume, retry and cancel jobs.

SQL is the ledger: a job and all its chunks are recorded before anything is enqueued, so a broker
that loses its queue loses nothing that ``resume`` cannot put back.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from schemas import ChunkMessage, InlinePair, InlineSpec, JobState, JobStatus, RerankRequest, WorkerStatus
from rerankq.settings import Settings, get_settings
from rerankq.store.ledger import INTERACTIVE_JOB_NAME, Ledger, NewChunk

if TYPE_CHECKING:  # pyarrow and the tokenizer load only for the commands that use them
    from rerankq.manifest_source import ManifestError  # noqa: F401 - re-exported
    from rerankq.prompt import PromptBuilder


def __getattr__(name: str) -> Any:
    if name == "ManifestError":
        from rerankq.manifest_source import ManifestError

        return ManifestError
    raise AttributeError(f"module 'producer.api' has no attribute {name!r}")



class BrokerUnavailable(RuntimeError):
    pass


class InputError(ValueError):
    """Bad inline input, worded for the user."""


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int | None
    doc_id: str
    score: float | None
    document: str
    error: str | None = None


def ledger(settings: Settings | None = None) -> Ledger:
    settings = settings or get_settings()
    return Ledger(settings.database, settings.connect_timeout, dead_after=settings.worker_dead_after)


@functools.lru_cache(maxsize=4)
def _app_for(broker: str):  # noqa: ANN202
    from worker.celery_app import app, make_app

    return app if app.conf.broker_url == broker else make_app(Settings(broker_url=broker))


def _app(settings: Settings):  # noqa: ANN202 - imported late: read-only commands need no broker
    """The Celery app for these settings' broker (the API may be called with other settings than the env's)."""
    return _app_for(settings.broker)


def check_broker(settings: Settings) -> None:
    """Fail within seconds, with the URL masked, when the broker cannot be reached."""
    # A server that accepts the connection but never answers would otherwise block for the
    # transport's socket_timeout (60 s): bound this check's reads by the connect timeout too.
    redis = settings.broker.startswith(("redis://", "rediss://"))
    options = {"socket_timeout": settings.connect_timeout} if redis else {}
    try:
        with _app(settings).connection_for_write(transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=1, timeout=settings.connect_timeout)
    except Exception as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker {_sanitize(settings.broker)}: {str(exc).splitlines()[0][:200]}"
        ) from None


def enqueue(
    messages: Sequence[ChunkMessage], store: Ledger, settings: Settings | None = None, *, priority: int | None = None
) -> int:
    """Publish chunk messages (JSON) on the queue; the ledger records when each went out.

    ``priority``: BATCH_PRIORITY (default) or INTERACTIVE_PRIORITY, taken first by the workers
    (worker/celery_app.py names the Redis list of each)."""
    from rerankq.broker import publish
    from rerankq.broker import BATCH_PRIORITY

    settings = settings or get_settings()
    sent: list[int] = []
    try:
        sent = publish(_app(settings), messages, settings.queue, BATCH_PRIORITY if priority is None else priority)
    except Exception as exc:
        sent = getattr(exc, "sent", [])
        raise BrokerUnavailable(
            f"the broker failed after {len(sent)} of {len(messages)} chunks were enqueued "
            f"({str(exc).splitlines()[0][:200]}); the job is recorded: the workers re-send the rest "
            f"(or run `producer resume {messages[0].job_id}`)"
        ) from None
    finally:
        if sent:
            store.mark_enqueued(sent)
    return len(sent)


def _record_and_enqueue(store: Ledger, settings: Settings, priority: int | None = None, **job: object) -> str:
    """Broker checked first (nothing recorded if it is away), then the job and its chunks in SQL, then the queue."""
    check_broker(settings)
    job_id, messages = store.create_job(**job)  # type: ignore[arg-type]
    enqueue(messages, store, settings, priority=priority)
    return job_id


def _sanitize(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)


def _prompt_builder(settings: Settings) -> Callable[[], PromptBuilder] | None:
    """A loader of the model's tokenizer when its files are here: over-long queries are then caught at
    submission. Loaded (~0.5-1 s) only if a query is too long to fit surely by its byte count."""
    from rerankq.model_files import local_model_path
    from rerankq.prompt import PromptBuilder

    path = local_model_path(settings.model)
    return functools.cache(lambda: PromptBuilder.from_model(path, settings.max_length)) if path else None


def _reuse_context(store: Ledger, settings: Settings, reuse: bool) -> tuple[str | None, str | None]:
    """The scoring context to reuse cached scores under (producer/reuse.py), or None and why: score everything."""
    if not reuse:
        return None, None
    from producer.reuse import choose_context

    choice = choose_context(store, settings)
    return choice.digest, None if choice.digest else f"no reuse, every pair is scored: {choice.reason}"


def _reused(report: Callable[[str], None] | None, reused: int, total: int, messages: Sequence, context: str) -> None:
    if report is not None:
        report(f"reused {reused:,} of {total:,} pairs from the score cache (context {context[:12]}); {len(messages)} chunk(s) to score")


def submit_manifest(
    manifest: str,
    *,
    instruction: str | None = None,
    name: str | None = None,
    chunk_size: int | None = None,
    settings: Settings | None = None,
    reuse: bool = True,
    report: Callable[[str], None] | None = None,
) -> str:
    """Validate the whole manifest, record the job, enqueue its chunks; returns the job id.

    ``reuse``: pairs whose score is cached under the workers' scoring context are copied into the
    job at once and never reach a GPU; only the rest is chunked and enqueued (producer/reuse.py).
    ``report`` receives a line on what was reused, or why nothing was."""
    from producer.manifest import plan_manifest

    settings = settings or get_settings()
    store = ledger(settings)
    context, why_not = _reuse_context(store, settings, reuse)
    if context is not None:
        from producer.reuse import submit_manifest_reusing

        check_broker(settings)
        job_id, messages, reused, total = submit_manifest_reusing(
            store, settings, context, manifest, instruction=instruction, name=name, chunk_size=chunk_size,
            builder=_prompt_builder(settings), enqueue=lambda ms: ms and enqueue(ms, store, settings),
        )  # fmt: skip
        _reused(report, reused, total, messages, context)
        return job_id
    plan = plan_manifest(
        manifest, settings, chunk_size=chunk_size, instruction=instruction, builder=_prompt_builder(settings)
    )
    job_id = _record_and_enqueue(
        store, settings, kind="manifest", chunks=plan.chunks, name=name, manifest=plan.uri, instruction=instruction
    )
    if why_not and report is not None:  # said once the job is recorded: a rejected manifest prints one error line
        report(why_not)
    return job_id


def submit_pairs(
    pairs: Iterable[dict | InlinePair],
    *,
    instruction: str | None = None,
    name: str | None = None,
    chunk_size: int | None = None,
    settings: Settings | None = None,
    priority: int | None = None,
    reuse: bool = True,
    report: Callable[[str], None] | None = None,
) -> str:
    """A job whose pairs travel inside the messages (and are kept in the ledger for resume).
    ``priority``: see ``enqueue`` (interactive requests jump the batch queue); ``reuse`` and
    ``report`` as for ``submit_manifest``."""
    settings = settings or get_settings()
    items: list[InlinePair] = []
    for i, p in enumerate(pairs):
        if len(items) >= settings.max_inline_pairs:
            raise InputError(
                f"more than {settings.max_inline_pairs} pairs in an inline job (RERANKQ_MAX_INLINE_PAIRS): "
                "write a Parquet manifest and use `producer submit`"
            )
        try:
            item = p if isinstance(p, InlinePair) else InlinePair.model_validate(p)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(f"pair {i} field {'.'.join(map(str, err['loc']))!r}: {err['msg']}") from None
        for field_name, limit in (("document", settings.max_document_chars), ("query", settings.max_query_chars)):
            value = getattr(item, field_name)
            if not value:
                raise InputError(f"pair {i} field {field_name!r}: is an empty string")
            if len(value) > limit:
                raise InputError(f"pair {i} field {field_name!r}: {len(value):,} characters, over the limit of {limit:,}")
        if item.instruction is None and instruction is not None:
            item = item.model_copy(update={"instruction": instruction})
        items.append(item)
    if not items:
        raise InputError("no pairs to rerank")
    groups: dict[str, list[InlinePair]] = defaultdict(list)
    for item in items:
        groups[item.query_id].append(item)
    for qid, group in groups.items():
        ids = [p.doc_id for p in group]
        if len(set(ids)) != len(ids):
            dup = next(d for d in ids if ids.count(d) > 1)
            raise InputError(f"duplicate pair (query_id={qid!r}, doc_id={dup!r})")
    size = chunk_size or settings.chunk_size
    store = ledger(settings)
    context, why_not = _reuse_context(store, settings, reuse)
    if context is not None:
        from producer.reuse import submit_pairs_reusing

        check_broker(settings)
        grouped = [p for group in groups.values() for p in group]
        job_id, messages, reused, _ = submit_pairs_reusing(
            store, settings, context, grouped, instruction=instruction, name=name, chunk_size=size,
            enqueue=lambda ms: ms and enqueue(ms, store, settings, priority=priority),
        )  # fmt: skip
        _reused(report, reused, len(grouped), messages, context)
        return job_id
    chunks: list[NewChunk] = []
    current: list[InlinePair] = []
    for group in groups.values():
        if current and len(current) + len(group) > size:
            chunks.append(NewChunk(InlineSpec(pairs=current).model_dump(mode="json"), len(current)))
            current = []
        current.extend(group)
    chunks.append(NewChunk(InlineSpec(pairs=current).model_dump(mode="json"), len(current)))
    job_id = _record_and_enqueue(
        store, settings, priority, kind="inline", chunks=chunks, name=name, instruction=instruction
    )
    if why_not and report is not None:
        report(why_not)
    return job_id


def resolve_job(job: str, settings: Settings | None = None) -> str:
    """The full id of a job given by its id or a unique prefix of it (like git); UnknownJob otherwise."""
    return ledger(settings).resolve_job(job)


def status(job: str, settings: Settings | None = None) -> JobStatus:
    """A job's state as the ledger holds it (``job``: its id or a unique prefix)."""
    store = ledger(settings)
    return store.status(store.resolve_job(job))


def _alive_workers(settings: Settings) -> list[WorkerStatus]:
    from rerankq.store.registry import Registry

    return Registry(settings.database, settings.connect_timeout).alive(settings.worker_dead_after)


def waiting_note(st: JobStatus, settings: Settings | None = None) -> str:
    """What the job waits for, in one line ("queued, 1 worker loading its engine"; see producer/waiting.py)."""
    from producer.waiting import waiting_for

    return waiting_for(st, _alive_workers(settings or get_settings()))


def wait(
    job_id: str,
    timeout: float | None = None,
    poll: float = 0.5,
    settings: Settings | None = None,
    on_wait: Callable[[JobStatus, str], object] | None = None,
) -> JobStatus:
    """Poll the ledger until the job is final or ``timeout`` passes; returns the last status.
    ``on_wait(status, note)`` is called whenever what the job waits for changes (see ``waiting_note``)."""
    settings = settings or get_settings()
    store = ledger(settings)
    job_id = store.resolve_job(job_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    said = None
    while True:
        st = store.status(job_id)
        if st.state.terminal or (deadline is not None and time.monotonic() >= deadline):
            return st
        if on_wait is not None and (note := waiting_note(st, settings)) != said:
            on_wait(st, note)
            said = note
        time.sleep(poll)




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
    return request  # empty texts and character limits: submit_pairs' checks, worded per pair


def submit_rerank(request: RerankRequest, *, settings: Settings | None = None) -> str:
    """One interactive chunk (highest priority: workers take it before the next batch chunk); the job id."""
    from rerankq.broker import INTERACTIVE_PRIORITY

    settings = settings or get_settings()
    pairs = [
        InlinePair(query_id=request.query_id, doc_id=str(i), query=request.query, document=d, instruction=request.instruction)
        for i, d in enumerate(request.documents)
    ]
    return submit_pairs(
        pairs, settings=settings, chunk_size=len(pairs), name=INTERACTIVE_JOB_NAME, priority=INTERACTIVE_PRIORITY
    )


def rerank_results(job_id: str, documents: Sequence[str], settings: Settings | None = None) -> list[Ranked]:
    """A finished rerank job's results, best first (``doc_id`` is the document's position)."""
    from producer.export import iter_ranked

    return [
        Ranked(row["rank"], row["doc_id"], row["score"], documents[int(row["doc_id"])], row["error"])
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
) -> list[Ranked]:
    """Score one query against a few documents through the workers; best first. A job still
    unfinished after ``timeout`` seconds is cancelled (TimeoutError says why it did not finish)."""
    settings = settings or get_settings()
    request = check_rerank(query, documents, instruction, settings)
    job_id = submit_rerank(request, settings=settings)
    st = wait(job_id, timeout=timeout, settings=settings, on_wait=on_wait)
    if not st.state.terminal and ledger(settings).cancel(job_id) == JobState.cancelled:
        from producer.waiting import describe_workers

        raise TimeoutError(
            f"job {job_id} still {st.state.value} after {timeout:g} s, so it was cancelled; "
            f"{describe_workers(_alive_workers(settings))}"
        )
    return rerank_results(job_id, request.documents, settings)


def queue_depths(settings: Settings | None = None) -> dict[str, int]:
    """Chunks waiting in the broker per priority (``interactive``, ``batch``); Redis only, else ``total``."""
    from rerankq.broker import priority_lists

    settings = settings or get_settings()
    try:
        with _app(settings).connection_for_read() as conn:
            channel = conn.default_channel
            if not settings.broker.startswith(("redis://", "rediss://")):
                return {"total": channel.queue_declare(settings.queue, passive=True).message_count}
            with channel.conn_or_acquire() as client:
                names = priority_lists(settings.queue)
                return {prio: int(client.llen(name)) for prio, name in names.items()}
    except Exception as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker {_sanitize(settings.broker)}: {str(exc).splitlines()[0][:200]}"
        ) from None


def interactive_backlog(settings: Settings | None = None) -> int:
    """Interactive chunks no worker has taken yet (the service answers 429 above a limit)."""
    depths = queue_depths(settings)
    return depths.get("interactive", depths.get("total", 0))


def workers(settings: Settings | None = None) -> list[WorkerStatus]:
    """Workers seen in the last day, live ones first (dead: silent for RERANKQ_WORKER_DEAD_AFTER)."""
    from rerankq.store.registry import Registry

    settings = settings or get_settings()
    ledger(settings)  # the revision check: a clear error for a database at another revision
    return Registry(settings.database, settings.connect_timeout).workers(settings.worker_dead_after)


def cancel(job_id: str, settings: Settings | None = None) -> JobState:
    store = ledger(settings)
    return store.cancel(store.resolve_job(job_id))


def resume(job_id: str, settings: Settings | None = None) -> int:
    """Re-enqueue every chunk the ledger does not hold as finished (e.g. after Redis lost its queue)."""
    settings = settings or get_settings()
    store = ledger(settings)
    messages = store.resumable(store.resolve_job(job_id))
    if messages:
        check_broker(settings)
    return enqueue(messages, store, settings) if messages else 0


def retry_failed(job_id: str, settings: Settings | None = None) -> int:
    """Run the failed chunks again (and only those)."""
    settings = settings or get_settings()
    store = ledger(settings)
    job_id = store.resolve_job(job_id)
    check_broker(settings)
    messages = store.reopen_failed(job_id)
    return enqueue(messages, store, settings) if messages else 0

