"""`producer calibrate`: two settings on a sample of your manifest, compared (producer/calibrate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producer.commands.common import JsonFlag, friendly, out

SettingsOpt = "KEY=VALUE,... of RERANKQ_* settings on top of the current ones (KEY= restores the default)"


@friendly
def calibrate(
    sample: Annotated[Path, typer.Argument(help="a sample of your manifest (Parquet: query_id, query, doc_id, document)")],
    a: Annotated[str, typer.Option("--a", help=f"side A: {SettingsOpt}, e.g. numerics=deterministic")] = "",
    b: Annotated[str, typer.Option("--b", help=f"side B: {SettingsOpt}, e.g. numerics=fast or quantization=fp8")] = "",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="the top k compared per query")] = 10,
    timeout: Annotated[float, typer.Option(help="seconds each side may take (engine start included)")] = 3600.0,
    json_output: JsonFlag = False,
) -> None:
    """Score SAMPLE under two settings on this machine and say what changes: largest |A - B|, Spearman and Kendall per query, top-k overlap."""
    from producer.calibrate import as_json, report_lines
    from producer.calibrate import calibrate as run

    comparison, side_a, side_b = run(sample, a, b, top_k, timeout)
    if json_output:
        out.print_json(data=as_json(comparison, side_a, side_b))
        return
    for line in report_lines(sample, comparison, side_a, side_b):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
