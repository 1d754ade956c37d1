"""The chunk task and the worker's life cycle.

At start-up (``worker_init``, in the worker's own process, whatever the pool) the worker checks the
ledger's revision, registers in the worker registry and starts its heartbeat, then loads the engine
once. Chunk tasks run on a threads pool, RERANKQ_CHUNKS_IN_FLIGHT at a time over that one engine, so
the next chunk's rows are read and tokenized while the current one is scored."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import socket
import sys
import time
import traceback
import uuid
from dataclasses import dataclass

from celery.signals import worker_init, worker_shutdown
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from rerankq.logs import configure_logging, get_logger
from rerankq.prompt import Pair
from rerankq.routing import normalize_model, served_names, worker_queues
from rerankq.score_key import ScoringContext, worker_context
from rerankq.settings import get_settings
from rerankq.store.cache_lookup import cached_scores
from rerankq.store.chunks import Misrouted
from rerankq.store.db import check_revision
from rerankq.store.ledger import Ledger
from rerankq.store.records import ScoreRow
from rerankq.store.registry import Registry, WorkerInfo
from schemas import ChunkMessage
from worker.cascade import stage2_chunk, top_pairs
from worker.celery_app import app
from worker.chunk_pairs import load_pairs
from worker.engines import Reranker, load_reranker
from worker.engines.base import PairScore
from worker.gpu_memory import gpu_memory_used
from worker.metrics import observe_chunk

log = get_logger("rerankq.worker")
# host:pid:token: a container's pid (often 1) repeats across restarts; the token makes each life unique.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _State:
    ledger: Ledger | None = None
    reranker: Reranker | None = None
    liveness: object | None = None  # worker.liveness.Liveness once started
    context: ScoringContext | None = None  # score-cache keys of this worker's scores (rerankq/score_key.py)
    lane: object | None = None  # worker.live_lane.LiveLane once the engine is ready (RERANKQ_LIVE_LANE)


state = _State()


def _fatal(event: str, exc: BaseException, limit: int = 500) -> None:
    """Celery logs and swallows exceptions from signal handlers: a worker that cannot work must exit."""
    log.critical(event, error=str(exc).splitlines()[0][:limit] if str(exc) else type(exc).__name__)
    sys.stderr.write(f"rerankq worker: {exc}\n")
    sys.stderr.flush()
    os._exit(2)


def _engine_failed(liveness, exc: BaseException, settings) -> None:  # noqa: ANN001
    """The registry says ``failed`` (with why) at once, so no one waits for a worker that is gone; then exit."""
    from worker.engine_errors import engine_failure

    error = engine_failure(exc, settings)
    try:
        liveness.fail(error)
    except Exception as failed:  # the ledger is away too: the worker turns dead after RERANKQ_WORKER_DEAD_AFTER
        log.warning("deregister_failed", error=str(failed)[:200])
    _fatal("engine_failed", RuntimeError(error), limit=2000)


def _engine_info(settings) -> dict:  # noqa: ANN001
    return {
        "engine": settings.engine,
        "dtype": settings.dtype,
        "max_length": settings.max_length,
        "chunks_in_flight": settings.chunks_in_flight,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "quantization": settings.quantization,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "served_model_names": served_names(settings.served_model_name),  # requests naming these reach it
        "live_lane": live_lane_on(settings),  # the service sends /v1/rerank to its lane (worker/live_lane.py)
    }


def live_lane_on(settings) -> bool:  # noqa: ANN001
    """The live lane needs Redis as the broker (Kombu's SQLite broker has no lists to pull from)."""
    return settings.live_lane and settings.broker.startswith(("redis://", "rediss://", "unix://"))


@worker_init.connect
def _start_worker(sender=None, **_: object) -> None:  # noqa: ANN001
    """Refuse a ledger at another revision, register and heartbeat, then load the engine once."""
    from worker.celery_app import app
    from worker.liveness import Liveness
    from worker.sweeper import Sweeper
    from worker.webhook_sender import start_sender as start_webhook_sender

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        check_revision(settings.database, settings.connect_timeout)
        state.ledger = Ledger(settings.database, settings.connect_timeout, dead_after=settings.worker_dead_after)
        registry = Registry(settings.database, settings.connect_timeout)
        model = normalize_model(settings.model)
        info = WorkerInfo(WORKER_ID, socket.gethostname(), os.getpid(), model, _engine_info(settings))
        sweeper = Sweeper(state.ledger, registry, app, settings, WORKER_ID)
        liveness = Liveness(registry, info, settings.heartbeat_interval, settings.worker_dead_after, sweeper.run_once)
        state.liveness = liveness.start()
        start_webhook_sender(settings, registry, WORKER_ID)  # its own thread and lease (worker/webhook_sender.py)
    except Exception as exc:
        _fatal("database_refused", exc)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    try:
        log.info("engine_loading", worker=WORKER_ID, model=settings.model, engine=settings.engine, max_length=settings.max_length)
        state.reranker = load_reranker(settings)
    except Exception as exc:
        _engine_failed(liveness, exc, settings)
    try:  # without a context the worker scores as before, it just fills no cache
        state.context = worker_context(settings)
    except Exception as exc:
        state.context = None
        log.warning("score_context_unavailable", error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
    if state.context is not None:  # recording it is for producers' reuse: the worker keeps its context regardless
        try:
            from rerankq.store.contexts import record_worker_context

            with_db_retry(record_worker_context, state.ledger, WORKER_ID, settings, state.context)
        except Exception as exc:
            log.warning("score_context_not_recorded", error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
    _consume_own_queues(sender or app, settings)
    if live_lane_on(settings):
        from worker.live_lane import LiveLane

        state.lane = LiveLane(settings, state.reranker, WORKER_ID, cached=_live_cached).start()
    ready: dict = {"fingerprint": state.context.digest} if state.context else {}
    if memory := gpu_memory_used():  # reserved by the engine at load, and held: the workers page shows it
        ready["engine"] = {**_engine_info(settings), "gpu_memory_bytes": sum(memory.values())}
    liveness.set(state="ready", **ready)
    log.info("engine_ready", worker=WORKER_ID, model=settings.model, engine=settings.engine, context=state.context and state.context.digest)


def _consume_own_queues(controller, settings) -> None:  # noqa: ANN001
    """Besides the queue given with -Q, consume this model's queue and this context's (rerankq/routing.py).
    Runs in ``worker_init``, before the consumer is built, so it starts on all of them at once."""
    queues = worker_queues(settings.queue, settings.model, state.context.digest if state.context else None)
    app_ = getattr(controller, "app", controller)  # the WorkController (worker_init's sender), else the app
    for name in queues:
        app_.amqp.queues.select_add(name)
    log.info("queues", worker=WORKER_ID, queues=[settings.queue, *queues])


def _score_missing(
    reranker: Reranker, keyed: list, keys: list, hits: dict[bytes, tuple[float, float | None]]
) -> list[PairScore]:
    """Scores in chunk order. Pairs whose key the cache holds (``hits``) never reach the engine, and
    identical pairs (one key; without a scoring context, the same texts) reach it once: every copy
    gets that one result, so copies score bit for bit alike even where batch invariance is off (the
    chunk plan puts all copies of a job's pair in one chunk: producer/chunk_plans.py)."""
    first: dict[object, int] = {}  # identity of a pair -> its position among the pairs scored
    todo: list[int] = []
    source: list[int | None] = []  # per pair: position of its result among the scored, None for a hit
    for i, key in enumerate(keys):
        if key is not None and key in hits:
            source.append(None)
            continue
        same = key if key is not None else keyed[i].pair
        if same not in first:
            first[same] = len(todo)
            todo.append(i)
        source.append(first[same])
    scored = reranker.score([keyed[i].pair for i in todo]) if todo else []
    out: list[PairScore] = []
    seen: set[int] = set()
    for i, at in enumerate(source):
        if at is None:
            out.append(PairScore(hits[keys[i]][0], logit=hits[keys[i]][1]))
        elif at in seen:  # a copy: the same result, its tokens counted once (worker metrics)
            out.append(dataclasses.replace(scored[at], tokens=0))
        else:
            seen.add(at)
            out.append(scored[at])
    return out


def _send_unsent(job_id: str, ledger: Ledger, request) -> None:  # noqa: ANN001
    """Send the chunks a cascade's stage 1 just handed on, each claimed in the ledger first so that two
    threads finishing stage-1 chunks at once never send one twice (the sweeper re-sends any a crash leaves)."""
    from rerankq.broker import BATCH_PRIORITY, publish

    messages = with_db_retry(ledger.claim_unsent, job_id)
    if not messages:
        return
    priority = (request.delivery_info or {}).get("priority")
    try:
        publish(app, messages, get_settings().queue, BATCH_PRIORITY if priority is None else priority)
    except Exception as exc:  # the broker is away: the ledger holds them pending; the sweeper sends them
        log.warning("stage2_publish_failed", job_id=job_id, error=str(exc)[:200])


def _send_on(task, misrouted: Misrouted, ledger: Ledger, ctx: dict) -> dict:  # noqa: ANN001
    """A chunk of another model or context: publish it on its job's own queue, at the priority it came
    with, and leave it pending (one move: this worker does not consume that queue)."""
    from rerankq.broker import BATCH_PRIORITY, publish

    priority = (task.request.delivery_info or {}).get("priority")
    sent = publish(app, [misrouted.message], get_settings().queue, BATCH_PRIORITY if priority is None else priority)
    with_db_retry(ledger.mark_enqueued, sent)
    log.warning("chunk_rerouted", reason=misrouted.reason, **ctx)
    return {"rerouted": misrouted.reason}


@worker_shutdown.connect
def _stop_worker(sender=None, **_: object) -> None:  # noqa: ANN001
    """Warm shutdown (SIGTERM): running chunks have finished; say so in the registry, close the engine.
    (``worker_process_shutdown`` is sent by the prefork pool only, so it cannot be used here.)"""
    code = getattr(sender, "exitcode", None)
    atexit.register(_exit_now, code if isinstance(code, int) else 0)
    if state.liveness is not None:
        try:
            state.liveness.stop()  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("deregister_failed", error=str(exc)[:200])
    if state.lane is not None:
        try:
            state.lane.stop()  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("live_lane_stop_failed", error=str(exc)[:200])
        state.lane = None
    if state.reranker is not None:
        try:
            state.reranker.close()
        except Exception as exc:
            log.warning("engine_close_failed", error=str(exc)[:200])
        state.reranker = None


def _exit_now(code: int) -> None:
    """The first exit handler to run (registered last): once the worker has shut down, end the process
    here. On a GPU host the interpreter's teardown aborted (SIGABRT, "terminate called without an
    active exception", from a C++ library's static destructors) after everything had been closed,
    which a supervisor would count as a crash. Nothing after this point is rerankq's work."""
    logging.shutdown()  # flush and close the log handlers
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream: nothing left to flush
            pass
    os._exit(code)


def _engine_alive(reranker: Reranker) -> bool:
    """After a chunk raised: does the engine still score a trivial pair? If not, it is the engine, not the chunk."""
    try:
        return len(reranker.score([Pair("health check", "ok")])) == 1
    except Exception:
        return False


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


def _live_cached(pairs: list[Pair]) -> list[tuple[float, float | None] | None]:
    """The live lane's score-cache lookup, under this worker's own context (worker/live_lane.py)."""
    keys = _pair_keys(pairs)
    if state.ledger is None or not any(keys):
        return [None] * len(pairs)
    hits = cached_scores(state.ledger, keys, mark=False)
    return [hits.get(k) if k is not None else None for k in keys]


def _pair_keys(pairs: list[Pair]) -> list:
    """The score-cache key of each pair under this worker's own context (None: fill no cache)."""
    if state.context is None or not pairs:
        return [None] * len(pairs)
    return state.context.keys(*zip(*[(p.instruction, p.query, p.document) for p in pairs]))


def _cache_keys(keyed: list) -> list:
    """``_pair_keys`` of a chunk's keyed pairs."""
    return _pair_keys([k.pair for k in keyed])


@app.task(bind=True, name="rerankq.score_chunk", max_retries=None)
def score_chunk(self, message: dict) -> dict:  # noqa: ANN001
    settings = get_settings()
    msg = ChunkMessage.model_validate(message)
    ledger, reranker, liveness = state.ledger, state.reranker, state.liveness
    if ledger is None or reranker is None:
        raise RuntimeError("worker engine not loaded (start workers with `celery -A worker worker -Q gpu`)")
    ctx = dict(job_id=msg.job_id, chunk_id=msg.chunk_id, delivery=self.request.retries)
    try:
        digest = state.context.digest if state.context else None
        skip = with_db_retry(ledger.begin_chunk, msg.job_id, msg.chunk_id, WORKER_ID, settings.model, digest)
        if isinstance(skip, Misrouted):
            return _send_on(self, skip, ledger, ctx)
        if skip:
            log.info("chunk_skipped", reason=skip, **ctx)
            return {"skipped": skip}
        if liveness is not None:
            liveness.hold(msg.chunk_id)
        scored = 0
        try:
            try:
                scoring_started = time.perf_counter()
                keyed = load_pairs(msg.spec)
                keys = _cache_keys(keyed)
                hits = with_db_retry(cached_scores, ledger, keys) if msg.cascade and state.context else {}
                results = _score_missing(reranker, keyed, keys, hits)  # safe from several task threads
                # --- worker metrics (RERANKQ_METRICS_PORT) ---
                observe_chunk(len(results), sum(r.tokens for r in results), time.perf_counter() - scoring_started)
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
                raise self.retry(exc=exc, countdown=settings.retry_backoff * 2**self.request.retries) from exc
            rows = [ScoreRow(k.query_id, k.doc_id, r.score, r.error, key, r.logit) for k, r, key in zip(keyed, results, keys)]
            then = stage2_chunk(msg.spec, keyed, top_pairs(keyed, results, msg.top)) if msg.top else None
            reused = sum(1 for key in keys if key is not None and key in hits)  # served by the cache, not the engine
            written = with_db_retry(ledger.finish_chunk, msg.job_id, msg.chunk_id, rows, then, reused)
            if written and then is not None:
                _send_unsent(msg.job_id, ledger, self.request)
            scored = len(rows)
        finally:
            if liveness is not None:
                liveness.release(msg.chunk_id, scored)
        log.info("chunk_done", pairs=len(rows), errors=sum(r.error is not None for r in rows), written=written, **ctx)
        return {"pairs": len(rows), "written": written}
    except DBAPIError as exc:
        if not _transient(exc):
            raise
        # The database stayed away longer than the write retries: try the whole chunk again later.
        log.error("database_unavailable", error=str(exc)[:200], **ctx)
        raise self.retry(exc=exc, countdown=60) from None
