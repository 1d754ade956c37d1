"""The worker's live lane: /v1/rerank requests scored in the running engine, ahead of the night's batch prompts,
with no job, chunk or ledger row (the protocol: rerankq/live.py).

One thread pulls requests from its model's Redis list, only while fewer than RERANKQ_LIVE_IN_FLIGHT of its own
are in flight (so the worker with the shortest live backlog takes the next one), and hands each to a small
pool that builds its prompts with the chunk path's recipe (``Reranker.start``: the same builder) and submits
them at ``LIVE_PRIORITY``: to the front of the engine loop's queue and, under vLLM's priority policy, ahead of
batch prompts waiting inside the engine. Requests that arrive together join the same engine step. The
thread also looks, every ``CHECK_SECONDS``, whether any request in flight was cancelled by the service (its
client left or timed out) or passed its deadline, and aborts it in the engine. The reply goes to the
request's own Redis list, with a TTL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import redis

from rerankq.live import LIVE_PRIORITY, REPLY_TTL, LiveReply, LiveRequest, LiveScore, cancel_key, lane_key, reply_key
from rerankq.logs import get_logger
from rerankq.prompt import Pair
from rerankq.settings import Settings
from worker.engines.base import PairScore, Pending, Reranker
from worker.engines.engine_loop import EngineClosed
from worker.metrics import observe_live

log = get_logger("rerankq.live")
# per pair, its (probability, log-odds) in the score cache under this worker's context, or None
CacheLookup = Callable[[list[Pair]], list[tuple[float, float | None] | None]]
CHECK_SECONDS = 0.1  # how often requests in flight are checked for a cancel mark, and the lane polled when idle


@dataclass(eq=False)
class _InFlight:
    request: LiveRequest
    pending: Pending | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class LiveLane:
    """Started once the engine is ready (worker/tasks.py); ``stop`` before the engine closes."""

    def __init__(
        self,
        settings: Settings,
        reranker: Reranker,
        worker_id: str,
        client: redis.Redis | None = None,
        cached: CacheLookup | None = None,
    ):
        self.reranker, self.worker_id, self.cached = reranker, worker_id, cached
        self.key = lane_key(settings.queue, settings.model)
        self.capacity = settings.live_in_flight
        self.redis = client or redis.Redis.from_url(settings.broker, socket_timeout=30, health_check_interval=30)
        self._room = threading.Semaphore(self.capacity)
        self._lock = threading.Lock()
        self._running: dict[str, _InFlight] = {}
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._pool = ThreadPoolExecutor(self.capacity, thread_name_prefix="rerankq-live")
        self._thread = threading.Thread(target=self._run, name="rerankq-live-lane", daemon=True)

    def start(self) -> LiveLane:
        self._thread.start()
        log.info("live_lane", lane=self.key, in_flight=self.capacity, worker=self.worker_id)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Take no more requests; let those in flight finish (they are short) for up to ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            time.sleep(CHECK_SECONDS)
        self._abandon.set()  # requests still in flight give up their wait (their client times out)
        self._pool.shutdown(wait=False, cancel_futures=True)  # never hangs a warm shutdown on a stuck request

    # ------------------------------------------------------------------ the pulling thread
    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self._check_cancelled()
                if not self._room.acquire(timeout=CHECK_SECONDS):
                    continue  # full: only cancellations to look at
                taken = self.redis.blpop([self.key], timeout=CHECK_SECONDS)
                if taken is None:
                    self._room.release()
                    continue
                self._pool.submit(self._serve, taken[1])
                failing = False
            except Exception as exc:  # noqa: BLE001 - Redis away: keep trying, say so once
                self._room.release()
                if not failing:
                    log.warning("live_lane_redis_failed", error=str(exc)[:200])
                failing = True
                self._stop.wait(1.0)

    def _check_cancelled(self) -> None:
        with self._lock:
            flights = list(self._running.values())
        if not flights:
            return
        now = time.time()
        marks = self.redis.mget([cancel_key(f.request.id) for f in flights])
        for flight, mark in zip(flights, marks):
            if (mark is not None or flight.request.expired(now)) and not flight.cancelled.is_set():
                flight.cancelled.set()
                if flight.pending is not None:
                    self.reranker.abort(flight.pending)

    # ------------------------------------------------------------------ one request (pool thread)
    def _serve(self, raw: bytes) -> None:
        started = time.perf_counter()
        outcome = "error"
        try:
            request = LiveRequest.model_validate_json(raw)
        except ValueError as exc:
            log.warning("live_request_unreadable", error=str(exc)[:200])
            self._room.release()
            return
        flight = _InFlight(request)
        try:
            if request.expired() or self.redis.exists(cancel_key(request.id)):
                outcome = "skipped"
                log.info("live_skipped", request=request.id, reason="cancelled or expired before it started")
                return
            with self._lock:
                self._running[request.id] = flight
            pairs = [Pair(p.query, p.document, p.instruction) for p in request.pairs]
            known = self._known(pairs)
            todo = list({pairs[i]: i for i, k in enumerate(known) if k is None}.values())  # each distinct miss once
            if todo:
                flight.pending = self.reranker.start([pairs[i] for i in todo], priority=LIVE_PRIORITY)
                if flight.cancelled.is_set():  # cancelled while its prompts were built
                    self.reranker.abort(flight.pending)
            fresh = dict(zip((pairs[i] for i in todo), self._collect(flight) if todo else []))
            results = [PairScore(k[0], logit=k[1]) if k is not None else fresh[p] for p, k in zip(pairs, known)]
            reply = LiveReply(
                id=request.id, worker=self.worker_id,
                results=[LiveScore(score=r.score, logit=r.logit, error=r.error, tokens=r.tokens) for r in results],
            )  # fmt: skip
            outcome = "scored"
        except (CancelledError, EngineClosed) as exc:
            if flight.cancelled.is_set():
                outcome = "cancelled"
                log.info("live_cancelled", request=request.id)
                return
            reply = LiveReply(id=request.id, worker=self.worker_id, error=str(exc)[:500] or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the request fails, the lane goes on
            log.error("live_failed", request=request.id, error=str(exc)[:500])
            reply = LiveReply(id=request.id, worker=self.worker_id, error=str(exc)[:500] or type(exc).__name__)
        finally:
            with self._lock:
                self._running.pop(request.id, None)
            self._room.release()
            observe_live(outcome, len(request.pairs), time.perf_counter() - started)
        self._reply(reply)

    def _known(self, pairs: list[Pair]) -> list[tuple[float, float | None] | None]:
        """What the score cache already holds: a pair a night (or a batch file) scored answers with that very
        score, so the search box and the nightly export agree bit for bit; a cache that cannot be read costs
        only the lookup (the pairs are scored)."""
        if self.cached is None:
            return [None] * len(pairs)
        try:
            return self.cached(pairs)
        except Exception as exc:  # noqa: BLE001 - the database away must not fail live requests
            log.warning("live_cache_unreadable", error=str(exc)[:200])
            return [None] * len(pairs)

    def _collect(self, flight: _InFlight) -> list:
        """The scores, waiting in short steps so a cancellation (seen by the pulling thread, which has
        aborted the prompts in the engine) ends the wait at once."""
        while True:
            try:
                return self.reranker.collect(flight.pending, timeout=CHECK_SECONDS)  # type: ignore[arg-type]
            except FutureTimeout:
                if self._abandon.is_set():  # the lane stopped: the pool thread must not outlive it
                    self.reranker.abort(flight.pending)  # type: ignore[arg-type]
                    raise EngineClosed("the worker is stopping") from None
                if flight.cancelled.is_set():
                    raise CancelledError() from None

    def _reply(self, reply: LiveReply) -> None:
        key = reply_key(reply.id)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.rpush(key, reply.model_dump_json())
            pipe.expire(key, REPLY_TTL)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the client times out and says so
            log.warning("live_reply_failed", request=reply.id, error=str(exc)[:200])
