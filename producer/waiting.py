"""Waiting for a job, and what a job that is not finished is waiting for, in words: shared by the CLI
(`rerank`, `wait`, `submit --wait`), the Python API's ``wait(on_wait=...)`` and any service that
follows jobs, so a user is never left watching a silent prompt."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from producer.job_control import ledger
from producer.workers import alive_workers
from rerankq.settings import Settings, get_settings
from schemas import JobState, JobStatus, WorkerStatus

START_A_WORKER = "start one with `celery -A worker worker -Q gpu`"
NO_WORKER = f"no worker alive: {START_A_WORKER}"

_WORDS = {  # state: (one worker, several)
    "loading": ("loading its engine", "loading their engines"),
    "busy": ("busy", "busy"),
    "ready": ("ready", "ready"),
}


def describe_workers(workers: Sequence[WorkerStatus]) -> str:
    """``1 worker loading its engine, 2 workers busy`` for the live workers; NO_WORKER when none is."""
    counts = Counter(w.state for w in workers if w.alive)
    parts = [
        f"{n} worker{'s' if n > 1 else ''} {_WORDS[state][n > 1]}"
        for state in _WORDS
        if (n := counts.get(state, 0))
    ]
    return ", ".join(parts) if parts else NO_WORKER


def waiting_for(status: JobStatus, workers: Sequence[WorkerStatus]) -> str:
    """One line: the job's state and what it waits for (a worker to start, to load, to be free)."""
    state = status.state.value
    if status.state.terminal:
        return state
    alive = [w for w in workers if w.alive]
    if not alive:
        return f"{state}: {NO_WORKER}"
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


def waiting_note(st: JobStatus, settings: Settings | None = None) -> str:
    """What the job waits for now, asking the registry (``waiting_for``)."""
    return waiting_for(st, alive_workers(settings or get_settings()))


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
