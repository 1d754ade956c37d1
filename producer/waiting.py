"""Waiting for a job, and what a job that is not finished is waiting for, in words: shared by the CLI
(`rerank`, `wait`, `submit --wait`), the Python API's ``wait(on_wait=...)`` and any service that
follows jobs, so a user is never left watching a silent prompt."""

from __future__ import annotations

import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from producer.job_control import ledger
from producer.workers import seen_workers
from rerankq.routing import normalize_model
from rerankq.settings import Settings, get_settings
from schemas import JobState, JobStatus, WorkerStatus

DEFAULT_MODEL = normalize_model(Settings.model_fields["model"].default)


def start_a_worker(model: str | None = None, name_it: bool = False) -> str:
    """The command that starts a worker of ``model``: RERANKQ_MODEL named unless it is the default
    (``name_it``: always, e.g. where workers of another model run)."""
    env = f"RERANKQ_MODEL={shlex.quote(model)} " if model and (name_it or normalize_model(model) != DEFAULT_MODEL) else ""
    return f"start one with `{env}celery -A worker worker -Q gpu`"


def no_worker(model: str | None = None, workers: Sequence[WorkerStatus] = ()) -> str:
    """``no worker alive: start one with …``; when the last worker of ``model`` to be seen failed to
    load its engine, its error too (it says why, and what to do)."""
    mine = [w for w in workers if model is None or w.model == normalize_model(model)]
    last = max(mine, key=lambda w: w.last_seen, default=None)
    why = f" (the last worker to start failed to load its engine: {last.error})" if last and last.state == "failed" else ""
    return f"no worker alive{why}: {start_a_worker(model)}"


START_A_WORKER = start_a_worker()
NO_WORKER = no_worker()  # for the default model, no worker ever failed

_WORDS = {  # state: (one worker, several)
    "loading": ("loading its engine", "loading their engines"),
    "busy": ("busy", "busy"),
    "ready": ("ready", "ready"),
}


def describe_workers(workers: Sequence[WorkerStatus], model: str | None = None) -> str:
    """``1 worker loading its engine, 2 workers busy`` for the live workers; ``no_worker`` when none is."""
    counts = Counter(w.state for w in workers if w.alive)
    parts = [
        f"{n} worker{'s' if n > 1 else ''} {_WORDS[state][n > 1]}"
        for state in _WORDS
        if (n := counts.get(state, 0))
    ]
    return ", ".join(parts) if parts else no_worker(model, workers)


def waiting_for(status: JobStatus, workers: Sequence[WorkerStatus]) -> str:
    """One line: the job's state and what it waits for (a worker to start, to load, to be free), counting
    only the workers that may score it: those of its model and, once pinned, of its scoring context; and,
    while its manifest is still being recorded (producer/streaming.py), that too."""
    line = _waiting_for(status, workers)
    if status.submitting and not status.state.terminal:
        line += f"; still being submitted ({status.pairs_total:,} pairs recorded so far)"
    return line


def _waiting_for(status: JobStatus, workers: Sequence[WorkerStatus]) -> str:
    state = status.state.value
    if status.state.terminal:
        return state
    alive = [w for w in workers if w.alive]
    if not alive:
        return f"{state}: {no_worker(status.model, workers)}"
    if (unserved := _unserved(status, alive)) is not None:
        return f"{state}: {unserved}"
    alive = [w for w in alive if _serves(w, status)]
    who = describe_workers(alive)
    if status.state == JobState.queued:
        if all(w.state == "loading" for w in alive):
            return f"queued, {who}"
        return f"queued, waiting for a worker ({who})"
    text = f"running: {status.chunks.done} of {status.chunks_total} chunks done"
    lost = sum(1 for h in status.holders if not h.alive)
    if lost:
        text += f", {lost} held by a worker presumed dead (a live worker re-enqueues it)"
    return f"{text} ({who})"


def _serves(worker: WorkerStatus, status: JobStatus) -> bool:
    """May this worker score the job's chunks (rerankq/store/chunks.py decides the same)?"""
    if status.model is None:
        return True
    for model, context in ((status.model, status.score_context), (status.then_model, status.then_context)):
        if worker.model == model and (context is None or worker.state == "loading" or worker.fingerprint == context):
            return True
    return False


def no_worker_runs(model: str | None, workers: Sequence[WorkerStatus]) -> str | None:
    """None when a live worker runs ``model`` (None: any model); else why not and what to start."""
    alive = [w for w in workers if w.alive]
    if not alive:
        return no_worker(model, workers)
    models = sorted({w.model for w in alive})
    if model is None or normalize_model(model) in models:
        return None
    return f"no worker runs {model} (workers alive run {', '.join(models)}): {start_a_worker(model, name_it=True)}"


def _unserved(status: JobStatus, alive: Sequence[WorkerStatus]) -> str | None:
    """Why no live worker can score this job, and how to go on; None when one can."""
    if status.then_model and (missing := no_worker_runs(status.then_model, alive)) is not None:
        return f"stage 2 of the cascade: {missing}"
    if status.model is None or any(_serves(w, status) for w in alive):
        return None
    if (missing := no_worker_runs(status.model, alive)) is not None:
        return missing
    contexts = sorted({(w.fingerprint or "unknown")[:12] for w in alive if w.model == status.model})
    wanted = (status.score_context or "")[:12]
    return (
        f"waiting for a worker running {status.model} with context {wanted}; workers alive run it with context "
        f"{', '.join(contexts)} (its files or settings changed): keep a worker of context {wanted} until the job "
        f"ends, or re-score the whole job under the new context with `producer rescore {status.job_id[:8]}`"
    )


def with_waiting(st: JobStatus, workers: Sequence[WorkerStatus]) -> JobStatus:
    """The status with ``waiting`` filled in (None once the job is finished)."""
    return st if st.state.terminal else st.model_copy(update={"waiting": waiting_for(st, workers)})


def waiting_note(st: JobStatus, settings: Settings | None = None) -> str:
    """What the job waits for now, asking the registry (``waiting_for``)."""
    return waiting_for(st, seen_workers(settings or get_settings()))


def follow(
    job_id: str, timeout: float | None = None, poll: float = 0.5, settings: Settings | None = None
) -> Iterator[JobStatus]:
    """The job's status every ``poll`` seconds until it is final (the last one yielded) or ``timeout`` passes."""
    store = ledger(settings)
    job_id = store.resolve_job(job_id)  # an unknown job fails here, before the first status
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        st = store.status(job_id)
        yield st
        if st.state.terminal or (deadline is not None and time.monotonic() >= deadline):
            return
        time.sleep(poll)


def wait(
    job_id: str,
    timeout: float | None = None,
    poll: float = 0.5,
    settings: Settings | None = None,
    on_wait: Callable[[JobStatus, str], object] | None = None,
) -> JobStatus:
    """Poll the ledger until the job is final or ``timeout`` passes; returns the last status.
    ``on_wait(status, note)`` is called whenever what the job waits for changes (see ``waiting_note``)."""
    settings = settings or get_settings()
    said = None
    for st in follow(job_id, timeout, poll, settings):
        if on_wait is not None and not st.state.terminal and (note := waiting_note(st, settings)) != said:
            on_wait(st, note)
            said = note
    return st
