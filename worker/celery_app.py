"""The worker's Celery app: `celery -A worker worker -Q gpu` runs one process holding one engine.

The app's settings (broker, queues, priorities, pool, acks, serializer) are the core's
(``rerankq/celery_app.py``); the worker adds its tasks and signals on top."""

from __future__ import annotations

from celery import Celery

import worker.worker_logging  # noqa: F401  (JSON logs for the worker program, via Celery's signals)
from rerankq.celery_app import make_app as make_core_app
from rerankq.settings import Settings

TASK_MODULES = ("worker.tasks", "worker.metrics")


def make_app(settings: Settings | None = None) -> Celery:
    """The core app with the chunk task and the worker's metrics signals."""
    return make_core_app(settings, include=TASK_MODULES)


app = make_app()
