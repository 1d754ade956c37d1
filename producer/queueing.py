"""The producer's side of the broker: reach it, publish chunk messages, count what waits.

Publishing goes by task name through the core's Celery app (``rerankq/celery_app.py``): a machine
that only submits never imports the worker's package."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from producer.errors import BrokerUnavailable
from rerankq.settings import Settings, get_settings

if TYPE_CHECKING:  # celery and kombu load only for the commands that reach the broker
    from celery import Celery

    from rerankq.store.ledger import Ledger
    from schemas import ChunkMessage


def broker_app(settings: Settings) -> Celery:
    """The Celery app for these settings' broker (the API may be called with other settings than the env's)."""
    from rerankq.celery_app import publisher

    return publisher(settings.broker)


def safe_url(url: str) -> str:
    """The broker URL with its password masked (every form: rerankq/redact.py)."""
    from rerankq.redact import mask_broker_url

    return mask_broker_url(url)


def _unreachable(settings: Settings, exc: Exception) -> BrokerUnavailable:
    from rerankq.redact import mask_secrets

    reason = mask_secrets(str(exc).splitlines()[0][:200]) if str(exc) else type(exc).__name__
    return BrokerUnavailable(f"cannot reach the broker {safe_url(settings.broker)}: {reason}")


def check_broker(settings: Settings) -> None:
    """Fail within seconds, with the URL masked, when the broker cannot be reached."""
    # A server that accepts the connection but never answers would otherwise block for the
    # transport's socket_timeout (60 s): bound this check's reads by the connect timeout too.
    redis = settings.broker.startswith(("redis://", "rediss://"))
    options = {"socket_timeout": settings.connect_timeout} if redis else {}
    try:
        with broker_app(settings).connection_for_write(transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=1, timeout=settings.connect_timeout)
    except Exception as exc:
        raise _unreachable(settings, exc) from None


def enqueue(
    messages: Sequence[ChunkMessage], store: Ledger, settings: Settings | None = None, *, priority: int | None = None,
    mark: bool = True,
) -> int:
    """Publish chunk messages (JSON) on the queue; the ledger records when each went out (``mark=False``:
    their chunks were recorded as sent already, in the transaction that recorded them).

    ``priority``: BATCH_PRIORITY (default) or INTERACTIVE_PRIORITY, taken first by the workers
    (rerankq/broker.py names the Redis list of each)."""
    from rerankq.broker import BATCH_PRIORITY, publish

    settings = settings or get_settings()
    sent: list[int] = []
    try:
        sent = publish(broker_app(settings), messages, settings.queue, BATCH_PRIORITY if priority is None else priority)
    except Exception as exc:
        sent = getattr(exc, "sent", [])
        raise BrokerUnavailable(
            f"the broker failed after {len(sent)} of {len(messages)} chunks were enqueued "
            f"({str(exc).splitlines()[0][:200]}); the job is recorded: the workers re-send the rest "
            f"(or run `producer resume {messages[0].job_id}`)"
        ) from None
    finally:
        if sent and mark:
            store.mark_enqueued(sent)
    return len(sent)


def enqueue_pending(job_id: str, store: Ledger, settings: Settings | None = None, *, priority: int | None = None) -> int:
    """Publish a recorded job's unsent chunks one at a time, read back from the ledger (a job recorded
    with ``create_job(messages=False)``: its messages are never all in memory); as ``enqueue``."""
    from rerankq.broker import BATCH_PRIORITY, publish

    settings = settings or get_settings()
    app, sent = broker_app(settings), 0
    for msg in store.pending_messages(job_id):
        try:
            publish(app, [msg], settings.queue, BATCH_PRIORITY if priority is None else priority)
        except Exception as exc:
            raise BrokerUnavailable(
                f"the broker failed after {sent} chunks were enqueued ({str(exc).splitlines()[0][:200]}); the job "
                f"is recorded: the workers re-send the rest (or run `producer resume {job_id}`)"
            ) from None
        store.mark_enqueued([msg.chunk_id])
        sent += 1
    return sent


def queue_depths(settings: Settings | None = None, model: str | None = None) -> dict[str, int]:
    """Chunks waiting in the broker per priority (``interactive``, ``batch``) for ``model`` (default: the
    settings' RERANKQ_MODEL): its queue, its pinned contexts' queues and the base queue (rerankq/routing.py).
    Redis only; other brokers give ``total`` for the base queue."""
    from rerankq.broker import REDIS_PRIORITY_SEP, priority_lists
    from rerankq.routing import model_queue

    settings = settings or get_settings()
    own = model_queue(settings.queue, model or settings.model)
    try:
        with broker_app(settings).connection_for_read() as conn:
            channel = conn.default_channel
            if not settings.broker.startswith(("redis://", "rediss://")):
                return {"total": channel.queue_declare(settings.queue, passive=True).message_count}
            with channel.conn_or_acquire() as client:
                contexts = {
                    key.decode() for key in client.scan_iter(match=f"{own}.*", count=1000)
                    if REDIS_PRIORITY_SEP.encode() not in key
                }  # fmt: skip
                depths = {"interactive": 0, "batch": 0}
                for queue in (settings.queue, own, *sorted(contexts)):
                    for prio, name in priority_lists(queue).items():
                        depths[prio] += int(client.llen(name))
                return depths
    except Exception as exc:
        raise _unreachable(settings, exc) from None


def interactive_backlog(settings: Settings | None = None) -> int:
    """Interactive chunks no worker has taken yet (the service answers 429 above a limit)."""
    depths = queue_depths(settings)
    return depths.get("interactive", depths.get("total", 0))
