"""The live lane's protocol on Redis: how a /v1/rerank request reaches a worker's running engine without a
job, a chunk or a partition, and how its scores come back (producer/live_client.py sends, worker/live_lane.py
serves).

* ``lane_key(queue, model)``: one Redis list per model. The service RPUSHes a request (JSON, ``LiveRequest``)
  only while the list holds fewer than the bound (one atomic script: ``PUSH_IF_ROOM``), else it answers 429.
  Workers of that model BLPOP it, each only while it has room for another request in flight, so the worker
  with the shortest live backlog takes the next one (pull, not push).
* ``reply_key(id)``: a list the worker RPUSHes the request's ``LiveReply`` to (with a TTL); the service BLPOPs it.
* ``cancel_key(id)``: set (with a TTL) by the service when the client went away or its timeout passed. A worker
  skips a request so marked before scoring it, and aborts it in the engine while it runs. The service also
  LREMs a request still waiting in the list, so a timed-out request never holds a place in the bound.

Nothing of a live request is written to the SQL ledger; every key expires on its own."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, Field

from rerankq.routing import model_queue

PREFIX = "rerankq:live"
REPLY_TTL = 60  # seconds an unread reply (its client gone) or a cancel mark stays in Redis
LIVE_PRIORITY = -1  # vLLM: lower is scheduled first; batch prompts keep the default 0

# KEYS[1] lane, ARGV[1] request, ARGV[2] bound, ARGV[3] TTL of the list (seconds): the new length, or -length when full.
PUSH_IF_ROOM = """
local n = redis.call('LLEN', KEYS[1])
if n >= tonumber(ARGV[2]) then return -n - 1 end
n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return n
"""


def lane_key(queue: str, model: str) -> str:
    """The list live requests for ``model`` wait in (named after the model's broker queue)."""
    return f"{PREFIX}:{model_queue(queue, model)}"


def reply_key(request_id: str) -> str:
    return f"{PREFIX}:reply:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"{PREFIX}:cancel:{request_id}"


def new_id() -> str:
    return uuid.uuid4().hex


class LivePair(BaseModel):
    query: str
    document: str
    instruction: str | None = None


class LiveRequest(BaseModel):
    """What the service pushes: the pairs as they are to be scored (already checked and cut)."""

    id: str
    model: str
    pairs: list[LivePair] = Field(min_length=1)
    deadline: float = Field(description="epoch seconds after which nobody waits for the reply")

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.deadline


class LiveScore(BaseModel):
    score: float | None
    logit: float | None = None
    error: str | None = None
    tokens: int = 0


class LiveReply(BaseModel):
    """What the worker pushes back: one result per pair, in the request's order, or why it failed."""

    id: str
    worker: str
    results: list[LiveScore] = Field(default_factory=list)
    error: str | None = None
