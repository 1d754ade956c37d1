"""The worker registry as the producer sees it: who is alive, loading, busy or dead."""

from __future__ import annotations

from producer.job_control import ledger
from rerankq.settings import Settings, get_settings
from schemas import WorkerStatus


def workers(settings: Settings | None = None) -> list[WorkerStatus]:
    """Workers seen in the last day, live ones first (dead: silent for RERANKQ_WORKER_DEAD_AFTER)."""
    from rerankq.store.registry import Registry

    settings = settings or get_settings()
    ledger(settings)  # the revision check: a clear error for a database at another revision
    return Registry(settings.database, settings.connect_timeout).workers(settings.worker_dead_after)


def alive_workers(settings: Settings) -> list[WorkerStatus]:
    """The live workers only (what a waiting job can hope for)."""
    from rerankq.store.registry import Registry

    return Registry(settings.database, settings.connect_timeout).alive(settings.worker_dead_after)
