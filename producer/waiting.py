"""What a job that is not finished is waiting for, in words: shared by the CLI (`rerank`, `wait`,
`submit --wait`), the Python API's ``wait(on_wait=...)`` and any service that follows jobs, so a
user is never left watching a silent prompt."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

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
