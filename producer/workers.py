"""The worker registry as the producer sees it: who is alive, loading, busy, failed or dead."""

from __future__ import annotations

from producer.job_control import ledger
from rerankq.settings import Settings, get_settings
from schemas import WorkerStatus


def workers(settings: Settings | None = None) -> list[WorkerStatus]:
    """Workers seen in the last day, live ones first (dead: silent for RERANKQ_WORKER_DEAD_AFTER; failed:
    its engine did not load, said at once)."""
    from rerankq.store.registry import Registry

    settings = settings or get_settings()
    ledger(settings)  # the revision check: a clear error for a database at another revision
    return Registry(settings.database, settings.connect_timeout).workers(settings.worker_dead_after)


def seen_workers(settings: Settings) -> list[WorkerStatus]:
    """Every worker seen in the last day, without the revision check (asked on every poll of a wait):
    the live ones, and the last one's failure to load when none is alive."""
    from rerankq.store.registry import Registry

    return Registry(settings.database, settings.connect_timeout).workers(settings.worker_dead_after)
