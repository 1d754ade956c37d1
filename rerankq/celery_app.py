"""The Celery app's definition, shared by whoever publishes chunks and the workers that consume them.

Broker, queue, priorities, routes and serializer are decided here, so a producer publishes through
this module alone (by task name, ``rerankq/broker.py``) and never imports the worker's package;
``worker/celery_app.py`` adds its tasks and signals on top.

Why each setting: vLLM starts an engine process, which prefork children cannot do, so the engine
lives in the worker's own process and chunk tasks run on threads (RERANKQ_CHUNKS_IN_FLIGHT of them,
sharing that engine, so the next chunk is read while this one scores); a chunk is long and must
survive a crash (late acks, prefetch 1 per thread); only JSON is accepted (no pickle from the broker).
A dead worker's chunks come back through the worker registry's sweeper (worker/sweeper.py) within
about RERANKQ_WORKER_DEAD_AFTER; the visibility timeout stays only as the broker's safety net.
Interactive chunks outrank batch chunks (message priorities, ``rerankq/broker.py``); task events
are sent for Flower."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from celery import Celery

from rerankq.broker import PRIORITY_STEPS
from rerankq.settings import Settings, get_settings


def broker_options(settings: Settings) -> dict:
    """Kombu transport options for the configured broker (Redis: priorities, fast unacked sweeps)."""
    if not settings.broker.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": settings.visibility_timeout} if settings.broker.startswith("sqs") else {}
    return {
        "visibility_timeout": settings.visibility_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": 60,
        "health_check_interval": 30,
        # sweep for abandoned (unacked) chunks often; a sweep is one cheap Redis call
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
        # message priorities (rerankq/broker.py); "priority" also orders several queues by name
        "priority_steps": PRIORITY_STEPS,
        "queue_order_strategy": "priority",
    }


def configure(app: Celery, settings: Settings) -> None:
    """(Re)apply settings: the demo switches brokers after import, before the first connection."""
    app.conf.update(
        broker_url=settings.broker,
        worker_pool="threads",
        worker_concurrency=settings.chunks_in_flight,
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        result_serializer="json",
        task_ignore_result=True,
        task_default_queue=settings.queue,
        task_routes={"rerankq.*": {"queue": settings.queue}},
        broker_transport_options=broker_options(settings),
        broker_connection_timeout=settings.connect_timeout,
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 1, "interval_max": 2},
        # Task events for Flower (`celery -A worker flower`) and other event consumers.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_enable_remote_control=False,
    )


def make_app(settings: Settings | None = None, include: Sequence[str] = ()) -> Celery:
    """A configured app; ``include`` names the task modules a worker loads (a publisher needs none)."""
    app = Celery("rerankq", include=list(include))
    configure(app, settings or get_settings())
    return app


@functools.lru_cache(maxsize=4)
def publisher(broker: str) -> Celery:
    """One app per broker URL for publishing and inspecting queues (kept: it holds the connection pool).
    The rest of its settings come from the environment, as they do for the workers."""
    return make_app(Settings(broker_url=broker))
