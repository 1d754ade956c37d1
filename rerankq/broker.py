"""Chunk messages on the broker: publishing them with recognisable task ids, and finding which
chunks the broker still holds (queued, or delivered to a live worker) so lost ones can be re-sent.

Redis keeps a queue as lists (one per priority, ``priority_lists``) and delivered but
unacknowledged messages in the ``unacked`` hash with their delivery time in ``unacked_index``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence

from celery import Celery

from rerankq.routing import job_queue, worker_queues
from schemas import ChunkMessage

SCORE_TASK = "rerankq.score_chunk"

# Message priorities on Redis (kombu): 0 is the HIGHEST and is taken first. A consumer BRPOPs the
# priority lists in PRIORITY_STEPS order, so a worker finishing a chunk takes any waiting
# interactive chunk (/v1/rerank, `producer rerank`) before the next batch chunk: a nightly job
# cannot starve an interactive request. Redis lists per queue (the sweeper scans these):
#   priority 0 (INTERACTIVE_PRIORITY): "<queue>"              e.g. "gpu"
#   priority 9 (BATCH_PRIORITY):       "<queue>\x06\x169"     e.g. "gpu\x06\x169" (kombu's separator + "9")
# Unacknowledged chunks (being scored) sit in kombu's "unacked" hash and go back to their own list.
# A message sent with no priority lands in the interactive list: enqueue() always gives one.
INTERACTIVE_PRIORITY = 0
BATCH_PRIORITY = 9
PRIORITY_STEPS = [INTERACTIVE_PRIORITY, BATCH_PRIORITY]
REDIS_PRIORITY_SEP = "\x06\x16"  # kombu.transport.redis.Channel.sep


def priority_lists(queue: str) -> dict[str, str]:
    """The Redis list holding each priority's messages of ``queue`` (kombu's naming)."""
    return {"interactive": queue, "batch": f"{queue}{REDIS_PRIORITY_SEP}{BATCH_PRIORITY}"}


_PREFIX = "rerankq-chunk-"


def task_id(chunk_id: int) -> str:
    return f"{_PREFIX}{chunk_id}-{uuid.uuid4().hex[:12]}"


def chunk_of(task: str | None) -> int | None:
    if not task or not task.startswith(_PREFIX):
        return None
    try:
        return int(task[len(_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return None


def publish(app: Celery, messages: Sequence[ChunkMessage], queue: str, priority: int | None = None) -> list[int]:
    """Send each chunk as a JSON task on its job's queue under the base ``queue`` (its model's, or its
    pinned context's: rerankq/routing.py); returns the chunk ids sent (all of them unless the broker
    fails, in which case the exception carries on after the partial list is known to the caller)."""
    sent: list[int] = []
    try:
        for msg in messages:
            app.send_task(
                SCORE_TASK,
                args=[msg.model_dump(mode="json")],
                queue=job_queue(queue, msg.model, msg.context),
                task_id=task_id(msg.chunk_id),
                priority=priority,
            )
            sent.append(msg.chunk_id)
    except Exception as exc:
        exc.sent = sent  # type: ignore[attr-defined]
        raise
    return sent


def message_queues(base: str, model: str | None, context: str | None) -> list[str]:
    """Every queue a chunk's message may sit on (the sweeper looks on all of them): its job's queue now,
    its model's queue, where it went before the job's context was pinned (the first chunk's worker pins
    it after the others were published: issue 25), and ``base`` (jobs recorded before jobs named a model)."""
    return [base, *(worker_queues(base, model, context) if model is not None else [])]


def _ids(raw_messages: Iterable[bytes | str]) -> set[int]:
    found: set[int] = set()
    for raw in raw_messages:
        try:
            payload = json.loads(raw)
            if isinstance(payload, list):  # unacked entries are [message, exchange, routing_key]
                payload = payload[0]
            cid = chunk_of(payload.get("headers", {}).get("id"))
        except (ValueError, AttributeError, IndexError, TypeError):
            continue
        if cid is not None:
            found.add(cid)
    return found


def chunks_in_broker(app: Celery, queues: Iterable[str], delivered_within: float) -> set[int] | None:
    """Chunk ids queued on any of ``queues`` (every priority) or delivered less than ``delivered_within``
    seconds ago and not yet acknowledged (reserved by a worker: kombu's ``unacked`` hash). None when
    the broker cannot be inspected (not Redis).

    The lists and the hash are read in one transaction, so a message moving between them is seen in
    one place or the other (except between a consumer's pop and its ``unacked`` write: the sweeper
    looks twice). A delivery older than ``delivered_within`` whose chunk nobody began has a dead
    consumer: a live worker begins a chunk as soon as it is delivered (one prefetched message per
    task thread), and a chunk it begins or retries is held in the ledger, not looked for here."""
    if not str(app.conf.broker_url).startswith(("redis://", "rediss://")):
        return None
    with app.connection_for_read() as conn, conn.default_channel.conn_or_acquire() as client:
        channel = conn.default_channel
        names = sorted({name for queue in set(queues) for name in priority_lists(queue).values()})
        pipe = client.pipeline(transaction=True)
        for name in names:
            pipe.lrange(name, 0, -1)
        pipe.zrangebyscore(channel.unacked_index_key, time.time() - delivered_within, "+inf")
        pipe.hgetall(channel.unacked_key)
        *lists, recent, unacked = pipe.execute()
        found: set[int] = set()
        for raw in lists:
            found |= _ids(raw)
        recent_tags = {tag if isinstance(tag, bytes) else str(tag).encode() for tag in recent}
        found |= _ids(v for k, v in unacked.items() if (k if isinstance(k, bytes) else str(k).encode()) in recent_tags)
        return found
