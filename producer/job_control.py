"""A recorded job, by id or unique prefix: its status, and cancel, resume and retry.

SQL is the ledger: a job and all its chunks are recorded before anything is enqueued, so a broker
that loses its queue loses nothing that ``resume`` cannot put back."""

from __future__ import annotations

from collections.abc import Callable

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


def rescore(job_id: str, settings: Settings | None = None, report: Callable[[str], None] | None = None) -> str:
    """Re-score a whole job under the scoring context workers run now (e.g. after its checkpoint was
    replaced in place): submit it again (same manifest, name, instruction, model and cascade; scores
    cached under the new context are reused), then cancel the old job. Returns the new job's id."""
    from producer.errors import InputError
    from producer.submission import submit_manifest, submit_pairs

    settings = settings or get_settings()
    store = ledger(settings)
    st = store.status(store.resolve_job(job_id))
    if st.kind == "manifest" and st.manifest:
        then = f"{st.then_model}:top={st.then_top}" if st.then_model else None
        new = submit_manifest(
            st.manifest, instruction=st.instruction, name=st.name, settings=settings, model=st.model, then=then, report=report
        )
    else:
        pairs = store.inline_pairs(st.job_id)
        if len(pairs) != st.pairs_total:  # pairs reused at submission were never written into a chunk
            raise InputError(
                f"job {st.job_id}: {st.pairs_total - len(pairs):,} of its pairs came from the score cache and their "
                "texts are not kept: submit the pairs again"
            )
        new = submit_pairs(pairs, name=st.name, settings=settings, model=st.model, report=report)
    store.cancel(st.job_id)
    return new
