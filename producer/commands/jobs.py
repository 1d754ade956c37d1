"""Following and steering jobs: status, wait, list, cancel, resume, retry."""

from __future__ import annotations

import itertools
import json
from typing import Annotated

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producer.commands.common import JobArg, ago, err, friendly, out, say, utc
from schemas import JobState, JobStatus


@friendly
def status(job: JobArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """State, pairs scored/failed, chunks and timings of a job."""
    from producer.job_control import status as job_status
    from producer.waiting import waiting_note

    st = job_status(job)
    if as_json:
        print(st.model_dump_json(indent=2))
    else:
        out.print(status_table(st, None if st.state.terminal else waiting_note(st)))


@friendly
def wait(job: JobArg, timeout: Annotated[float | None, typer.Option(help="seconds")] = None) -> None:
    """Follow a job: exit 0 completed, 1 failed/completed_with_errors/cancelled, 2 timeout."""
    raise typer.Exit(follow_with_progress(job, timeout))


@friendly
def list_jobs(limit: int = 50, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Recent jobs, newest first."""
    from producer.job_control import ledger

    jobs = ledger().list_jobs(limit)
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
        return
    # Ids whole and on one line at any width: they are copied into other commands (a unique prefix
    # is enough for those, as with git). The name goes last and folds when space runs out.
    table = Table("job", "state", "pairs", "created (UTC)", "name", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.columns[0].no_wrap, table.columns[0].min_width = True, max((len(j.job_id) for j in jobs), default=3)
    table.columns[3].no_wrap = True
    for column in table.columns[1:]:
        column.overflow = "fold"
    for j in jobs:
        done = f"{j.pairs_scored + j.pairs_failed:,}/{j.pairs_total:,}"
        table.add_row(j.job_id, j.state.value, done, utc(j.created_at)[:16], j.name or "")
    out.print(table)


@friendly
def cancel(job: JobArg) -> None:
    """Stop a job: no further chunk is scored; scores already written stay."""
    from producer.job_control import cancel as run

    print(run(job).value)


@friendly
def resume(job: JobArg) -> None:
    """Re-enqueue the chunks the ledger does not hold as done (after the broker lost its queue)."""
    from producer.job_control import resume as run

    print(f"{run(job)} chunk(s) enqueued")


@friendly
def retry(job: JobArg) -> None:
    """Run the failed chunks of a job again, and only those."""
    from producer.job_control import retry_failed

    print(f"{retry_failed(job)} failed chunk(s) enqueued")


def status_table(st: JobStatus, waiting: str | None = None) -> Table:
    """`producer status`: one row per fact, the waiting note while the job is not finished."""
    table = Table(show_header=False, box=None)
    rows = [
        ("job", st.job_id),
        ("name", st.name or ""),
        ("state", st.state.value),
        ("pairs", f"{st.pairs_scored:,} scored, {st.pairs_reused:,} reused, {st.pairs_failed:,} failed, {st.pairs_total:,} total"),
        ("chunks", ", ".join(f"{k} {v}" for k, v in st.chunks.model_dump().items() if v) + f" (of {st.chunks_total})"),
        ("created", utc(st.created_at)),
        ("started", utc(st.started_at)),
        ("finished", utc(st.finished_at)),
    ]
    if waiting and not st.state.terminal:
        rows.insert(3, ("waiting", waiting))
    if st.elapsed_seconds is not None:
        rows.append(("elapsed", f"{st.elapsed_seconds:.1f} s, {st.pairs_per_second or 0:.1f} pairs/s"))
    for h in st.holders:
        seen = f"last seen {ago(h.last_seen)}" if h.last_seen else "never registered"
        rows.append(("held by", f"chunk {h.chunk}: {h.worker_id} ({'alive' if h.alive else 'presumed dead'}, {seen})"))
    rows += [("error", e) for e in st.errors]
    for k, v in rows:
        table.add_row(k, v)
    return table


def follow_with_progress(job: str, timeout: float | None) -> int:
    """A progress bar whose text says what the job waits for (a worker to start, to load, ...);
    the exit code of `producer wait`."""
    from producer.waiting import follow, waiting_note

    columns = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    updates = follow(job, timeout)
    first = next(updates)  # an unknown job fails here, before a progress bar is drawn
    said = ""
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("queued", total=None)
        for st in itertools.chain([first], updates):
            note = st.state.value if st.state.terminal else waiting_note(st)
            done = st.pairs_scored + st.pairs_failed + st.pairs_reused
            progress.update(task, total=st.pairs_total, completed=done, description=note)
            if st.state.terminal:
                break
            if note != said and not err.is_terminal:  # no live bar (a log, a pipe): one line per change
                say(note)
            said = note
        else:
            say(f"timeout: job {st.job_id} is still {said}")
            return 2
    err.print(f"job {st.job_id}: {st.state.value} ({st.pairs_scored:,} scored, {st.pairs_reused:,} reused, {st.pairs_failed:,} failed)")
    for e in st.errors[:5]:
        err.print(f"  {e}", markup=False, highlight=False)
    return 0 if st.state == JobState.completed else 1
