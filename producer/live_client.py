"""The service's side of the live lane (rerankq/live.py): push a checked request onto its model's Redis list
unless the list is full, wait for the worker's reply on the request's own list, and cancel it when the client
leaves or the timeout passes. Nothing is written to the ledger (metrics: producer/service/metrics.py).

Async (redis.asyncio): a waiting request holds no thread, so thousands can wait at once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from rerankq.live import (
    PUSH_IF_ROOM,
    REPLY_TTL,
    LivePair,
    LiveReply,
    LiveRequest,
    LiveScore,
    cancel_key,
    lane_key,
    new_id,
    reply_key,
)
from rerankq.settings import Settings
from schemas import InlinePair

READ_TIMEOUT = 30.0  # seconds a Redis reply may take to arrive
WAIT_STEP = 0.5  # seconds per BLPOP: between two, the client's connection and the workers are looked at again


class LaneFull(Exception):
    def __init__(self, waiting: int):
        super().__init__(f"{waiting} requests waiting")
        self.waiting = waiting


class LaneTimeout(Exception):
    """No reply within the timeout: the request was taken off the lane, or marked cancelled for its worker."""


class ClientGone(Exception):
    """The client disconnected: the request was cancelled the same way."""


class WorkerFailed(Exception):
    """The worker could not score the request (its engine failed); the words are the worker's."""


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


class LiveClient:
    """One per service process; its Redis connections belong to the event loop that first uses them."""

    def __init__(self, settings: Settings):
        self.url = settings.broker
        self.timeout = settings.connect_timeout
        self._redis: aioredis.Redis | None = None

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            # redis-py's default read timeout (5 s) failed replies on a loaded host whose event loop was slow to
            # read them; BLPOP's own timeout bounds each wait, this only a Redis that stops answering.
            self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout, socket_timeout=READ_TIMEOUT)
        return self._redis

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ask(
        self,
        pairs: Sequence[InlinePair],
        settings: Settings,
        *,
        gone: Callable[[], Awaitable[bool]] | None = None,
        between: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[str, list[LiveScore]]:
        """(request id, one result per pair in order). ``settings``: the model's (its lane, the bound,
        RERANKQ_RERANK_TIMEOUT). ``gone``: whether the client disconnected; ``between``: called between waits
        (the service checks a worker still runs the model, and raises if not: the request is cancelled)."""
        client = self._client()
        request = LiveRequest(
            id=new_id(), model=settings.model, deadline=time.time() + settings.rerank_timeout,
            pairs=[LivePair(query=p.query, document=p.document, instruction=p.instruction) for p in pairs],
        )  # fmt: skip
        raw = request.model_dump_json()
        lane = lane_key(settings.queue, settings.model)
        ttl = int(settings.rerank_timeout) + REPLY_TTL
        n = int(await client.eval(PUSH_IF_ROOM, 1, lane, raw, settings.max_interactive_backlog, ttl))
        if n < 0:
            raise LaneFull(-n - 1)
        deadline = time.monotonic() + settings.rerank_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LaneTimeout()
                got = await client.blpop([reply_key(request.id)], timeout=min(WAIT_STEP, left))
                if got is not None:
                    reply = LiveReply.model_validate_json(got[1])
                    if reply.error is not None:
                        raise WorkerFailed(reply.error)
                    return request.id, reply.results
                if gone is not None and await gone():
                    raise ClientGone()
                if between is not None:
                    await between()
        except BaseException as exc:  # timeout, client gone, no worker left, the task cancelled: cancel it
            if not isinstance(exc, WorkerFailed):
                await self._cancel(client, lane, raw, request.id)
            raise

    async def _cancel(self, client: aioredis.Redis, lane: str, raw: str, request_id: str) -> None:
        """Off the lane if no worker took it yet; else marked, so its worker skips or aborts it."""
        try:
            pipe = client.pipeline(transaction=True)
            pipe.lrem(lane, 1, raw)
            pipe.set(cancel_key(request_id), b"1", ex=REPLY_TTL)
            await pipe.execute()
        except Exception:  # noqa: BLE001, S110 - Redis away: the request's deadline ends it on the worker
            pass
