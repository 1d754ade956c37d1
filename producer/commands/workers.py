"""`producer workers`: the worker registry as a table."""

from __future__ import annotations

import json

from rich.table import Table

from producer.commands.common import JsonFlag, ago, err, friendly, out


@friendly
def list_workers(as_json: JsonFlag = False) -> None:
    """Workers: state (loading, ready, busy, stopped, dead), model, chunk held, pairs/s, last seen."""
    from producer.workers import workers

    found = workers()
    if as_json:
        print(json.dumps([w.model_dump(mode="json") for w in found], indent=2))
        return
    table = Table("state", "model", "holding", "pairs/s", "scored", "last seen", "worker")
    table.columns[-1].overflow = table.columns[1].overflow = "fold"  # ids are copied whole
    for w in found:
        table.add_row(
            w.state,
            w.model,
            ", ".join(map(str, w.holding)) or "-",
            "-" if w.pairs_per_second is None else f"{w.pairs_per_second:,.0f}",
            f"{w.pairs_scored:,}",
            ago(w.last_seen),
            w.worker_id,
        )
    out.print(table)
    if not any(w.alive for w in found):
        err.print("no worker alive: start one with `celery -A worker worker -Q gpu`")
