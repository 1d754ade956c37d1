"""Sending work to the workers: a manifest as a batch job, or one query's documents at once."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from producer.commands.common import JsonFlag, friendly, out, say
from producer.commands.jobs import follow_with_progress
from schemas import JobStatus


@friendly
def submit(
    manifest: Annotated[
        str, typer.Argument(help="Parquet file, directory of Parquet files, s3:// gs:// file:// URI, or a batch FILE.jsonl")
    ],
    instruction: Annotated[str | None, typer.Option(help="instruction for rows without one")] = None,
    name: Annotated[str | None, typer.Option(help="a name to find the job by")] = None,
    chunk_size: Annotated[int | None, typer.Option(min=1, help="pairs per chunk (default RERANKQ_CHUNK_SIZE)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job until it ends")] = False,
    reuse: Annotated[
        bool, typer.Option("--reuse/--no-reuse", help="copy cached scores of unchanged pairs (--no-reuse: score every pair)")
    ] = True,
    model: Annotated[str | None, typer.Option(help="the model that scores the job (default RERANKQ_MODEL)")] = None,
    then: Annotated[
        str | None, typer.Option(help="a cascade: MODEL:top=K re-scores each query's K best pairs with MODEL")
    ] = None,
    notify: Annotated[
        str | None, typer.Option(help="webhook URL told when the job ends (default RERANKQ_WEBHOOK_URL)")
    ] = None,
) -> None:
    """Validate a manifest, record the job and enqueue its chunks; print the job id (with --wait, before following the job, so Ctrl-C never hides it)."""
    from producer.submission import submit_manifest

    if manifest.lower().endswith(".jsonl"):  # a vllm run-batch / OpenAI batch file (producer/batch_files.py)
        from producer.batch_files import submit_batch_path
        from producer.submission import for_model
        from rerankq.settings import get_settings

        if instruction is not None or then is not None:
            from producer.errors import InputError

            raise InputError("--instruction and --then do not apply to a batch file: put `instruction` in each line's body")
        batch = submit_batch_path(
            manifest, settings=for_model(get_settings(), model), name=name, notify=notify, chunk_size=chunk_size, reuse=reuse
        )
        if batch.lines_rejected:
            say(f"{batch.lines_rejected:,} of {batch.lines_total:,} lines refused (see `producer export {batch.job_id[:8]} --format jsonl`)")
        print(batch.job_id, flush=True)
        if not wait and batch.state is not None and not batch.state.terminal:  # a model no worker runs: said at once
            from producer.job_control import status as job_status
            from producer.waiting import waiting_note

            note = waiting_note(job_status(batch.job_id))
            if "no worker" in note:
                say(note)
        raise typer.Exit(follow_with_progress(batch.job_id, None) if wait else 0)
    # The id is printed as soon as the job exists, while the rest of the manifest is still recorded (workers
    # already score its first chunks; `producer status` says `submitting`); stdout holds only the id, so
    # `JOB=$(producer submit ...)` works with --wait too.
    job_id = submit_manifest(
        manifest, instruction=instruction, name=name, chunk_size=chunk_size, reuse=reuse, report=say, model=model, then=then,
        notify=notify, on_job=lambda job: print(job, flush=True),
    )
    from producer.commands.keys import audit_cli

    audit_cli("job.submit", job_id)
    raise typer.Exit(follow_with_progress(job_id, None) if wait else 0)


@friendly
def rerank(
    query: Annotated[str, typer.Option("--query", "-q", help="the query the documents are ranked for")],
    doc: Annotated[list[str], typer.Option("--doc", "-d", help="a document; repeat for more")],
    instruction: Annotated[str | None, typer.Option(help="the task instruction (default: web search)")] = None,
    as_json: JsonFlag = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait; then the job is cancelled")] = 600,
    model: Annotated[str | None, typer.Option(help="the model that scores it (default RERANKQ_MODEL)")] = None,
) -> None:
    """Rank a few documents for one query through the workers (documents travel in the message)."""
    from producer.interactive import rerank as run

    def note(_st: JobStatus, line: str) -> None:  # what the job waits for, each time that changes
        say(line)

    ranked = run(query, doc, instruction, timeout=timeout, on_wait=note, model=model)
    if as_json:
        print(json.dumps([asdict(r) for r in ranked], ensure_ascii=False, indent=2))
        return
    table = Table("rank", "score", "log-odds", "document")
    for r in ranked:
        table.add_row(
            str(r.rank or "-"), "-" if r.score is None else f"{r.score:.6f}", "-" if r.logit is None else f"{r.logit:.4f}",
            r.document if r.error is None else f"{r.document} [{r.error}]",
        )  # fmt: skip
    out.print(table)
