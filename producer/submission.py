"""Submitting work: a Parquet manifest or inline pairs become a recorded job and queued chunks.

A manifest goes one forward path (``submit_manifest``, under the CLI, the Python API and the service):
read and checked piece by piece (``producer/manifest.py`` over ``rerankq/manifest_source.py``), each
piece's keys looked up in the score cache, its hits and the chunks it closes recorded in one transaction
and those chunks queued at once (``producer/streaming.py``, ``rerankq/store/submissions.py``,
``producer/queueing.py``). A bad row in the first piece records nothing; one found later refuses the job.
Inline pairs are all checked first, then recorded in one transaction (``producer/reuse.py``,
``rerankq/store/``) and only then enqueued."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from producer.chunk_plans import inline_chunks
from producer.errors import InputError
from producer.job_control import ledger
from producer.queueing import check_broker, enqueue
from producer.reuse import choose_context, record_pairs
from rerankq.egress import Allow, check_webhook_url
from rerankq.logs import get_logger
from rerankq.routing import normalize_model
from rerankq.settings import Settings, get_settings
from rerankq.store.ledger import Ledger
from rerankq.store.reuse_stage import ReuseStage
from schemas import InlinePair

if TYPE_CHECKING:  # pyarrow and the tokenizer load only for the commands that use them
    from sqlalchemy.orm import Session

    from rerankq.families import PairBuilder

log = get_logger("rerankq.reuse")

def submit_manifest(
    manifest: str,
    *,
    instruction: str | None = None,
    name: str | None = None,
    chunk_size: int | None = None,
    settings: Settings | None = None,
    reuse: bool = True,
    report: Callable[[str], None] | None = None,
    model: str | None = None,
    then: str | None = None,
    notify: str | None = None,
    on_job: Callable[[str], None] | None = None,
) -> str:
    """Check the manifest, record the job and enqueue its chunks piece by piece (producer/streaming.py):
    workers start on the first chunks while the rest is still read. Returns the job id once the whole
    manifest is recorded; ``on_job`` is told it as soon as the job exists (``producer status`` then shows
    it ``submitting``). A bad row raises ManifestError with every problem's file, row and field, the job
    (if its first pieces were recorded) refused: failed, its queued chunks cancelled, nothing exported.

    ``model``: the model that scores the job (default: the settings' RERANKQ_MODEL); only its workers
    take the job's chunks. ``then``: a cascade, ``MODEL:top=K``: each query's K best pairs are then
    re-scored by MODEL (``parse_then``). ``notify``: the URL told when the job ends (default
    RERANKQ_WEBHOOK_URL; see README "Webhooks").
    ``reuse``: pairs whose score is cached under the workers' scoring context are copied into the
    job at once and never reach a GPU; only the rest is chunked and enqueued (producer/reuse.py). A
    cascade's workers look the cache up themselves (each chunk must keep all of a query's pairs).
    ``report`` receives a line on what was reused, or why nothing was."""
    from producer.manifest import CheckedManifest
    from producer.streaming import submit_stream

    settings = for_model(settings or get_settings(), model)
    cascade = parse_then(then) if then else {}
    notify = notify_url(notify, settings)
    store = ledger(settings)
    context, why_not = _reuse_context(store, settings, reuse and not cascade)
    checked = CheckedManifest(
        manifest, settings, chunk_size=chunk_size, instruction=instruction, builder=_prompt_builder(settings), plan=False
    )
    check_broker(settings)  # before anything is recorded
    done = submit_stream(
        checked, store, settings, context, chunk_size=chunk_size or settings.chunk_size, on_job=on_job, name=name,
        notify=notify, **cascade,
    )  # fmt: skip
    if report is not None:  # said once the job is recorded: a rejected manifest prints one error line
        if context is not None:
            report(
                f"reused {done.reused:,} of {done.pairs:,} pairs from the score cache (context {context[:12]}); "
                f"{done.chunks} chunk(s) to score"
            )
        elif why_not:
            report(why_not)
    return done.job_id


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
    model: str | None = None,
    notify: str | None = None,
    kind: str = "inline",
    also: Callable[[Session, str], None] | None = None,
) -> str:
    """A job whose pairs travel inside the messages (and are kept in the ledger for resume).
    ``priority``: see ``producer.queueing.enqueue`` (interactive requests jump the batch queue);
    ``model``, ``reuse``, ``report`` and ``notify`` as for ``submit_manifest`` (interactive requests,
    with a ``priority``, notify only when asked). ``kind``: ``batch`` for an OpenAI-style batch file, whose
    row ``also`` records in the job's own transaction (rerankq/store/jobs.py)."""
    settings = for_model(settings or get_settings(), model)
    notify = notify_url(notify, settings, default=priority is None)
    groups = checked_pairs(pairs, instruction, settings)
    size = chunk_size or settings.chunk_size
    store = ledger(settings)
    context, why_not = _reuse_context(store, settings, reuse)
    if context is not None:
        check_broker(settings)
        grouped = [p for group in groups.values() for p in group]
        with ReuseStage(store, settings.cache_touch_interval) as stage:
            job_id, messages, reused, _ = record_pairs(
                stage, context, grouped, instruction=instruction, name=name, chunk_size=size, model=settings.model,
                notify=notify, kind=kind, also=also,
            )  # fmt: skip
            if messages:
                enqueue(messages, store, settings, priority=priority)
            stage.touch()
        _reused(report, reused, len(grouped), messages, context)
        return job_id
    job_id = _record_and_enqueue(
        store, settings, priority, kind=kind, chunks=inline_chunks(groups.values(), size), name=name,
        instruction=instruction, notify=notify, also=also,
    )  # fmt: skip
    if why_not and report is not None:
        report(why_not)
    return job_id


def checked_pairs(
    pairs: Iterable[dict | InlinePair], instruction: str | None, settings: Settings
) -> dict[str, list[InlinePair]]:
    """Inline pairs validated (the first problem, worded per pair) and grouped by query, in order."""
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
    return groups


def _record_and_enqueue(store: Ledger, settings: Settings, priority: int | None = None, **job: object) -> str:
    """Broker checked first (nothing recorded if it is away), then the job and its chunks in SQL, then the queue."""
    check_broker(settings)
    job_id, messages = store.create_job(model=settings.model, **job)  # type: ignore[arg-type]
    enqueue(messages, store, settings, priority=priority)
    return job_id


def notify_url(notify: str | None, settings: Settings, default: bool = True) -> str | None:
    """The webhook URL a job records: its own, else RERANKQ_WEBHOOK_URL (when ``default``); checked here,
    so a typo is refused at submission rather than retried for days."""
    url = notify if notify is not None else (settings.webhook_url if default else None)
    if not url:
        return None
    try:
        return check_webhook_url(url, Allow.parse(settings.webhook_allow))  # scheme, credentials, target (README "Webhooks")
    except ValueError as exc:
        raise InputError(f"{'notify' if notify is not None else 'RERANKQ_WEBHOOK_URL'}: {exc}") from None


def for_model(settings: Settings, model: str | None) -> Settings:
    """The settings a job of ``model`` is submitted under: its reuse context, tokenizer and routing."""
    if model is None or not model.strip():
        return settings
    return settings.model_copy(update={"model": normalize_model(model)})


def parse_then(then: str) -> dict:
    """``MODEL:top=K`` (a cascade's second stage) as ``create_job``'s ``then_model`` and ``then_top``."""
    model, sep, option = then.rpartition(":")
    key, _, value = option.partition("=")
    if not sep or not model.strip() or key.strip() != "top" or not value.strip().isdigit() or int(value) < 1:
        raise InputError(f"--then {then!r}: expected MODEL:top=K, e.g. Qwen/Qwen3-Reranker-8B:top=16")
    return {"then_model": normalize_model(model), "then_top": int(value)}


def _prompt_builder(settings: Settings) -> Callable[[], PairBuilder] | None:
    """A loader of the model's tokenizer when its files are here: over-long queries are then caught at
    submission. Loaded (~0.5-1 s) only if a query is too long to fit surely by its byte count. None for a
    checkpoint of no supported family: its workers refuse to start, saying which families are."""
    from rerankq.families import BuilderSource, UnsupportedModel
    from rerankq.model_files import local_model_path

    path = local_model_path(settings.model)
    try:
        return BuilderSource(path, settings.max_length) if path else None
    except UnsupportedModel:
        return None


def _reuse_context(store: Ledger, settings: Settings, reuse: bool) -> tuple[str | None, str | None]:
    """The scoring context to reuse cached scores under (producer/reuse.py), or None and why: score everything."""
    if not reuse:
        return None, None
    choice = choose_context(store, settings)
    return choice.digest, None if choice.digest else f"no reuse, every pair is scored: {choice.reason}"


def _reused(report: Callable[[str], None] | None, reused: int, total: int, messages: Sequence, context: str) -> None:
    if report is not None:
        report(f"reused {reused:,} of {total:,} pairs from the score cache (context {context[:12]}); {len(messages)} chunk(s) to score")
