"""Bench only: the worker app under Celery's threads pool before the worker itself loads its engine there.

Celery's threads pool sends no ``worker_process_init`` (only prefork and solo do), so this loads the
engine on ``worker_init`` and closes it on ``worker_shutdown``, as the worker is meant to from the
threads-pool change on. Used as ``celery -A bench.gpu_e2e.threads_app worker -Q gpu --pool threads
--concurrency 2``; once the worker loads on ``worker_init`` itself, nothing here runs twice."""

from __future__ import annotations

from celery.signals import worker_init, worker_shutdown

from worker import tasks
from worker.celery_app import app

__all__ = ["app"]


@worker_init.connect
def _load(**_: object) -> None:
    load = getattr(tasks, "_load_engine", None)  # gone once the worker loads on worker_init itself
    if tasks.state.reranker is None and load is not None:
        load()


@worker_shutdown.connect
def _close(**_: object) -> None:
    if tasks.state.reranker is not None:
        tasks.state.reranker.close()
        tasks.state.reranker = None
