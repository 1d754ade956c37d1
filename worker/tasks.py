"""The chunk task and the worker's life cycle: the engine is loaded once per process, at start-up."""

from __future__ import annotations

import os
import socket
import sys
import traceback
from dataclasses import dataclass

from celery.signals import worker_init, worker_process_init, worker_process_shutdown
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from schemas import ChunkMessage
from worker.celery_app import app
from worker.chunk_pairs import load_pairs
from worker.engines import Reranker, load_reranker
from worker.logs import configure_logging, get_logger
from worker.prompt import Pair
from worker.score_key import ScoringContext, worker_context
from worker.settings import get_settings
from worker.store.db import check_revision
from worker.store.ledger import Ledger, ScoreRow

log = get_logger("rerankq.worker")
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _State:
    ledger: Ledger | None = None
    reranker: Reranker | None = None
    context: ScoringContext | None = None  # score-cache keys of this worker's scores (worker/score_key.py)


state = _State()


def _fatal(event: str, exc: BaseException) -> None:
    """Celery logs and swallows exceptions from signal handlers: a worker that cannot work must exit."""
    log.critical(event, error=str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__)
    sys.stderr.write(f"rerankq worker: {exc}\n")
    sys.stderr.flush()
    os._exit(2)


@worker_init.connect
def _check_database(**_: object) -> None:
    """Refuse to start against a ledger at another migration revision (before loading any engine)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        check_revision(settings.database, settings.connect_timeout)
    except Exception as exc:
        _fatal("database_refused", exc)


@worker_process_init.connect
def _load_engine(**_: object) -> None:
    settings = get_settings()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    try:
        state.ledger = Ledger(settings.database, settings.connect_timeout)
        log.info("engine_loading", model=settings.model, engine=settings.engine, max_length=settings.max_length)
        state.reranker = load_reranker(settings)
    except Exception as exc:
        _fatal("engine_failed", exc)
    try:  # without a context the worker scores as before, it just fills no cache
        from worker.store.score_cache import record_worker_context

        state.context = worker_context(settings)
        record_worker_context(state.ledger, WORKER_ID, settings, state.context)
    except Exception as exc:
        state.context = None
        log.warning("score_context_unavailable", error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
    log.info("engine_ready", model=settings.model, engine=settings.engine, context=state.context and state.context.digest)


def _engine_alive(reranker: Reranker) -> bool:
    """After a chunk raised: does the engine still score a trivial pair? If not, it is the engine, not the chunk."""
    try:
        return len(reranker.score([Pair("health check", "ok")])) == 1
    except Exception:
        return False


@worker_process_shutdown.connect
def _close_engine(**_: object) -> None:
    if state.reranker is not None:
        state.reranker.close()
        state.reranker = None


def _transient(exc: BaseException) -> bool:
    """Database unreachable or restarting: worth retrying the same write."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def with_db_retry(fn, *args, **kwargs):  # noqa: ANN001, ANN201
    """Retry a ledger call through a database restart (bounded by RERANKQ_WRITE_RETRY_SECONDS)."""
    settings = get_settings()
    for attempt in Retrying(
        retry=retry_if_exception(_transient),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(settings.write_retry_seconds),
        reraise=True,
        before_sleep=lambda rs: log.warning(
            "database_retry", call=fn.__name__, attempt=rs.attempt_number, error=str(rs.outcome.exception())[:200]
        ),
    ):
        with attempt:
            return fn(*args, **kwargs)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000]


@app.task(bind=True, name="rerankq.score_chunk", max_retries=None)
def score_chunk(self, message: dict) -> dict:  # noqa: ANN001
    settings = get_settings()
    msg = ChunkMessage.model_validate(message)
    ledger, reranker = state.ledger, state.reranker
    if ledger is None or reranker is None:
        raise RuntimeError("worker engine not loaded (start workers with `celery -A worker worker -Q gpu`)")
    ctx = dict(job_id=msg.job_id, chunk_id=msg.chunk_id, delivery=self.request.retries)
    try:
        skip = with_db_retry(ledger.begin_chunk, msg.job_id, msg.chunk_id, WORKER_ID, settings.model)
        if skip:
            log.info("chunk_skipped", reason=skip, **ctx)
            return {"skipped": skip}
        try:
            keyed = load_pairs(msg.spec)
            results = reranker.score([k.pair for k in keyed])
        except Exception as exc:  # the chunk itself fails: retry with backoff, then mark it failed
            if not _engine_alive(reranker):
                # A dead engine would fail every chunk: leave this one unacknowledged (it is redelivered)
                # and exit, so the process supervisor starts a fresh worker.
                log.critical("engine_dead", error=_describe(exc), **ctx)
                with_db_retry(ledger.chunk_attempt_failed, msg.job_id, msg.chunk_id, _describe(exc), False)
                os._exit(3)
            final = self.request.retries >= settings.max_retries
            with_db_retry(ledger.chunk_attempt_failed, msg.job_id, msg.chunk_id, _describe(exc), final)
            log.error("chunk_error", final=final, error=_describe(exc), **ctx)
            if final:
                return {"failed": _describe(exc)}
            raise self.retry(exc=exc, countdown=settings.retry_backoff * 2**self.request.retries)
        keys = state.context.keys(*zip(*[(k.pair.instruction, k.pair.query, k.pair.document) for k in keyed])) if state.context and keyed else [None] * len(keyed)
        rows = [ScoreRow(k.query_id, k.doc_id, r.score, r.error, key) for k, r, key in zip(keyed, results, keys)]
        written = with_db_retry(ledger.finish_chunk, msg.job_id, msg.chunk_id, rows)
        log.info("chunk_done", pairs=len(rows), errors=sum(r.error is not None for r in rows), written=written, **ctx)
        return {"pairs": len(rows), "written": written}
    except DBAPIError as exc:
        if not _transient(exc):
            raise
        # The database stayed away longer than the write retries: try the whole chunk again later.
        log.error("database_unavailable", error=str(exc)[:200], **ctx)
        raise self.retry(exc=exc, countdown=60) from None
