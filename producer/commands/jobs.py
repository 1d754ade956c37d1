"""Following and steering jobs: status, wait, list, cancel, resume, retry."""

from __future__ import annotations

import itertools
import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producer.commands.common import JobArg, JsonFlag, err, friendly, out, say, visible
from producer.commands.tables import jobs_table, status_table
from schemas import JobState


@friendly
def status(job: JobArg, as_json: JsonFlag = False) -> None:
    """State, pairs scored/failed, chunks and timings of a job."""
    from producer.job_control import status as job_status
    from producer.waiting import waiting_note

    st = job_status(job)
    if not st.state.terminal:
        st = st.model_copy(update={"waiting": waiting_note(st)})
    if as_json:
        print(st.model_dump_json(indent=2))
    else:
        out.print(status_table(st, st.waiting))


@friendly
def wait(job: JobArg, timeout: Annotated[float | None, typer.Option(help="seconds")] = None) -> None:
    """Follow a job: exit 0 completed, 1 failed/completed_with_errors/cancelled, 2 timeout."""
    raise typer.Exit(follow_with_progress(job, timeout))


@friendly
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, help="how many jobs, newest first")] = 50,
    interactive: Annotated[
        bool, typer.Option("--interactive", help="also the one-chunk jobs of `producer rerank` and /v1/rerank")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Recent jobs, newest first; reused pairs count as done."""
    from producer.job_control import ledger
    from rerankq.store.jobs import INTERACTIVE_JOB_NAME

    jobs = ledger().list_jobs(limit, exclude_name=None if interactive else INTERACTIVE_JOB_NAME)
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
        return
    out.print(jobs_table(jobs, out.width))


@friendly
def cancel(job: JobArg) -> None:
    """Stop a job: no further chunk is scored; scores already written stay."""
    from producer.commands.keys import audit_cli
    from producer.job_control import cancel as run
    from producer.job_control import resolve_job

    job = resolve_job(job)
    print(run(job).value)
    audit_cli("job.cancel", job)


@friendly
def resume(job: JobArg) -> None:
    """Re-enqueue the chunks the ledger does not hold as done (after the broker lost its queue)."""
    from producer.commands.keys import audit_cli
    from producer.job_control import resolve_job
    from producer.job_control import resume as run

    job = resolve_job(job)
    print(f"{run(job)} chunk(s) enqueued")
    audit_cli("job.resume", job)


@friendly
def rescore(job: JobArg) -> None:
    """Re-score a whole job under the workers' current context: submit it again, then cancel it."""
    from producer.rescoring import rescore as run

    print(run(job, report=say))


@friendly
def retry(job: JobArg) -> None:
    """Run the failed chunks of a job again, and only those."""
    from producer.commands.keys import audit_cli
    from producer.job_control import resolve_job, retry_failed

    job = resolve_job(job)
    print(f"{retry_failed(job)} failed chunk(s) enqueued")
    audit_cli("job.retry", job)


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
            progress.update(task, total=st.pairs_total, completed=done, description=visible(note))
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
