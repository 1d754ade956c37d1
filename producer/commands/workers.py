"""`producer workers`: the worker registry as a table."""

from __future__ import annotations

import itertools
import json

from rich.table import Table

from producer.commands.common import JsonFlag, ago, err, friendly, out
from schemas import WorkerStatus


@friendly
def list_workers(as_json: JsonFlag = False) -> None:
    """Workers by model: state (loading, ready, busy, stopped, failed, dead), context, chunks held, pairs/s, last seen."""
    from producer.waiting import no_worker
    from producer.workers import workers
    from rerankq.settings import get_settings

    found = workers()
    if as_json:
        print(json.dumps([w.model_dump(mode="json") for w in found], indent=2))
        return
    for model, group in itertools.groupby(sorted(found, key=lambda w: w.model), key=lambda w: w.model):
        out.print(_table(model, list(group)))
    if not any(w.alive for w in found):
        err.print(no_worker(get_settings().model, found), markup=False, highlight=False)


def _table(model: str, group: list[WorkerStatus]) -> Table:
    """One model's workers (live ones first), with the scoring context each runs."""
    alive = sum(w.alive for w in group)
    table = Table("state", "context", "holding", "pairs/s", "scored", "last seen", "worker", title=f"{model}: {alive} alive")
    table.title_justify = "left"
    table.columns[-1].overflow = "fold"  # ids are copied whole
    for w in group:
        table.add_row(
            w.state,
            (w.fingerprint or "-")[:12],
            ", ".join(map(str, w.holding)) or "-",
            "-" if w.pairs_per_second is None else f"{w.pairs_per_second:,.0f}",
            f"{w.pairs_scored:,}",
            ago(w.last_seen),
            w.worker_id,
        )
    return table
