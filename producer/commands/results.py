"""Getting scores out: a job's export, and what changed from one job to another."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from producer.commands.common import JobArg, friendly, out, say


@friendly
def export(
    job: JobArg,
    out_file: Annotated[Path, typer.Option("--out", help="FILE.parquet")],
    changes_since: Annotated[
        str | None, typer.Option("--changes-since", metavar="OLD_JOB", help="only what changed since OLD_JOB")
    ] = None,
    tolerance: Annotated[float, typer.Option(min=0, help="with --changes-since: score differences up to this are unchanged")] = 0.0,
) -> None:
    """Write query_id, doc_id, score, rank (1 = best in its query) and error to Parquet.

    With --changes-since OLD_JOB: only pairs whose score or rank differs from OLD_JOB, new pairs and
    removed pairs, as query_id, doc_id, change (new|removed|changed|moved), old_score, new_score,
    old_rank, new_rank, error."""
    from producer.export import writing
    from producer.job_control import ledger

    store = ledger()
    job = store.resolve_job(job)  # an unknown job fails here, before any file is created
    if changes_since is None:
        from producer.export import export_parquet

        with writing(out_file):
            rows = export_parquet(store, job, out_file)
        say(f"{rows:,} rows written to {out_file}")
        return
    from producer.changes import export_changes

    old_job = store.resolve_job(changes_since)
    with writing(out_file):
        counts = export_changes(store, old_job, job, out_file, tolerance)
    say(f"{sum(counts.values()):,} rows written to {out_file} ({', '.join(f'{v:,} {k}' for k, v in counts.items())})")


@friendly
def diff(
    old_job: str,
    job: str,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="compare each query's top k")] = 10,
    tolerance: Annotated[float, typer.Option(min=0, help="score differences up to this are unchanged")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What changed from OLD_JOB to JOB: pairs unchanged, changed, moved, new, removed; queries whose top-k changed."""
    from producer.changes import diff as run
    from producer.job_control import ledger

    d = run(ledger(), old_job, job, top_k, tolerance)
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
