"""Getting scores out: a job's export, and what changed from one job to another."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from producer.commands.common import JobArg, JsonFlag, friendly, out, say

ParallelOpt = Annotated[
    int, typer.Option("--parallel", min=1, max=256, help="N processes, each on its own range of query ids (same result)")
]
OldJobArg = Annotated[str, typer.Argument(metavar="OLD_JOB", help="the earlier job (id or unique prefix), e.g. last night's")]


@friendly
def export(
    job: JobArg,
    out_file: Annotated[
        Path, typer.Option("--out", help="FILE.parquet, FILE.csv, or DIR (no suffix, or an existing directory): a dataset directory")
    ],
    changes_since: Annotated[
        str | None, typer.Option("--changes-since", metavar="OLD_JOB", help="only what changed since OLD_JOB")
    ] = None,
    tolerance: Annotated[float, typer.Option(min=0, help="with --changes-since: score differences up to this are unchanged")] = 0.0,
    no_moves: Annotated[
        bool, typer.Option("--no-moves", help="with --changes-since: leave out pairs whose score is unchanged but rank moved")
    ] = False,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", min=1, help="with --changes-since: keep a rank-only move only if it enters or leaves the top K"),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="jsonl: a batch's output lines, as vllm run-batch writes them (--out - : stdout); csv: a DIR's files"
        ),
    ] = None,
    parallel: ParallelOpt = 1,
) -> None:
    """Write query_id, doc_id, score, rank (1 = best in its query) and error to Parquet or CSV (by the --out suffix).

    --out DIR writes a dataset directory: one file per piece (ranges of query_id, in order) and _SUCCESS (JSON: rows in all and per file) last. --parallel N: N pieces in N processes; the rows are the same as one process's.

    With --changes-since OLD_JOB: only pairs whose score or rank differs from OLD_JOB, new pairs and removed pairs, as query_id, doc_id, change (new|removed|changed|moved), old_score, new_score, old_logit, new_logit, old_rank, new_rank, error. Most of those are usually rank-only moves (a changed score shifts its neighbours): --no-moves leaves them out, --top-k K keeps only those that cross each query's top-K boundary."""
    from producer.errors import InputError
    from producer.export import writing
    from producer.job_control import ledger
    from producer.parallel_output import is_dataset
    from producer.table_files import file_format

    if fmt == "jsonl" or (fmt is None and out_file.suffix.lower() == ".jsonl"):
        from producer.batch_output import export_jsonl

        with writing(out_file):
            lines = export_jsonl(job, out_file)
        if str(out_file) != "-":
            say(f"{lines:,} lines written to {out_file}")
        return
    if fmt is not None and fmt not in ("parquet", "csv"):
        raise InputError(f"--format {fmt!r}: expected parquet, csv or jsonl")
    dataset = is_dataset(out_file)
    if not dataset:
        file_format(out_file)  # an unknown suffix is refused before anything is read or written
    if changes_since is None and (no_moves or top_k is not None):
        raise InputError("--no-moves and --top-k filter a changes export: add --changes-since OLD_JOB")
    if no_moves and top_k is not None:
        raise InputError("--no-moves leaves out every rank-only move, --top-k keeps some: give one of them")
    store = ledger()
    job = store.resolve_job(job)  # an unknown job fails here, before any file is created
    where = f"{out_file}/" if dataset else str(out_file)
    fmt = fmt if dataset else None  # a file's format is its suffix's
    if changes_since is None:
        from producer.parallel_steps import export_parallel

        with writing(out_file):
            rows = export_parallel(store, job, out_file, parallel, fmt)  # type: ignore[arg-type]
        say(f"{rows:,} rows written to {where}")
        return
    from producer.parallel_steps import changes_parallel

    old_job = store.resolve_job(changes_since)
    with writing(out_file):
        options = {"tolerance": tolerance, "moves": not no_moves, "top_k": top_k}
        counts = changes_parallel(store, old_job, job, out_file, parallel, fmt, **options)  # type: ignore[arg-type]
    say(f"{sum(counts.values()):,} rows written to {where} ({', '.join(f'{v:,} {k}' for k, v in counts.items())})")


@friendly
def diff(
    old_job: OldJobArg,
    job: Annotated[str, typer.Argument(metavar="JOB", help="the later job (id or unique prefix), e.g. tonight's")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="compare each query's top k")] = 10,
    tolerance: Annotated[float, typer.Option(min=0, help="score differences up to this are unchanged")] = 0.0,
    as_json: JsonFlag = False,
    parallel: ParallelOpt = 1,
) -> None:
    """What changed from OLD_JOB to JOB: pairs unchanged, changed, moved, new, removed; queries whose top-k changed."""
    from producer.job_control import ledger
    from producer.parallel_steps import diff_parallel

    d = diff_parallel(ledger(), old_job, job, top_k, tolerance, parallel=parallel)
    if as_json:
        print(json.dumps(asdict(d), indent=2))
        return
    table = Table(show_header=False, box=None)
    for k, v in (
        ("unchanged", d.unchanged), ("changed", d.changed), ("moved", d.moved), ("new", d.new), ("removed", d.removed),
        (f"queries with another top {d.top_k}", d.queries_top_k_changed),
    ):  # fmt: skip
        table.add_row(k, f"{v:,}")
    if d.examples:
        table.add_row("e.g.", ", ".join(d.examples))
    out.print(table)
