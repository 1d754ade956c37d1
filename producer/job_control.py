"""A recorded job, by id or unique prefix: its status, and cancel, resume and retry.

SQL is the ledger: a job and all its chunks are recorded before anything is enqueued, so a broker
that loses its queue loses nothing that ``resume`` cannot put back."""

from __future__ import annotations

from rerankq.settings import Settings, get_settings
from rerankq.store.ledger import Ledger
from schemas import JobState, JobStatus


def ledger(settings: Settings | None = None) -> Ledger:
    """The ledger for these settings (the environment's by default); checks the database's revision."""
    settings = settings or get_settings()
    return Ledger(settings.database, settings.connect_timeout, dead_after=settings.worker_dead_after)


def resolve_job(job: str, settings: Settings | None = None) -> str:
    """The full id of a job given by its id or a unique prefix of it (like git); UnknownJob otherwise."""
    return ledger(settings).resolve_job(job)


def status(job: str, settings: Settings | None = None) -> JobStatus:
    """A job's state as the ledger holds it (``job``: its id or a unique prefix)."""
    store = ledger(settings)
    return store.status(store.resolve_job(job))


def cancel(job_id: str, settings: Settings | None = None) -> JobState:
    """Stop a job: no further chunk is scored; scores already written stay. Returns its state after."""
    store = ledger(settings)
    return store.cancel(store.resolve_job(job_id))


def resume(job_id: str, settings: Settings | None = None) -> int:
    """Re-enqueue every chunk the ledger does not hold as finished (e.g. after Redis lost its queue)."""
    from producer.queueing import check_broker, enqueue

    settings = settings or get_settings()
    store = ledger(settings)
    messages = store.resumable(store.resolve_job(job_id))
    if messages:
        check_broker(settings)
    return enqueue(messages, store, settings) if messages else 0


def retry_failed(job_id: str, settings: Settings | None = None) -> int:
    """Run the failed chunks again (and only those)."""
    from producer.queueing import check_broker, enqueue

    settings = settings or get_settings()
    store = ledger(settings)
    job_id = store.resolve_job(job_id)
    check_broker(settings)
    messages = store.reopen_failed(job_id)
    return enqueue(messages, store, settings) if messages else 0
