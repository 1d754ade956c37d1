"""`producer calibrate`: score a sample of your manifest under two settings and say what changes.

Random weights cannot tell whether fp8, the fast numerics mode or another checkpoint is good enough for
*your* queries; your own sample can. Each side (``--a``, ``--b``: ``KEY=VALUE,...`` of RERANKQ_* settings,
e.g. ``numerics=fast`` or ``quantization=fp8``; ``KEY=`` restores the default) is scored on this machine in
a fresh process, ``python -m worker.score_sample``, with the current environment plus that side's
settings: engine numerics are fixed per process, and the producer never imports the worker. The report
compares the two per pair (largest and mean |A - B|) and per query (Spearman, Kendall tau-b, top-k
overlap) and ends with a sentence in plain words.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import ValidationError

from producer.errors import InputError
from producer.rank_stats import kendall, spearman, top_k
from rerankq.settings import Settings

SCORER = "worker.score_sample"


@dataclass
class Side:
    """One side's settings and what it scored (row order of the sample)."""

    name: str
    settings: dict[str, str]
    scores: list[float | None] = field(default_factory=list)
    logits: list[float | None] = field(default_factory=list)  # log-odds: what ranks follow
    errors: list[str | None] = field(default_factory=list)
    context: dict = field(default_factory=dict)  # the scoring context (model, dtype, engine, numerics, digest)


@dataclass
class Comparison:
    pairs: int
    queries: int
    compared: int  # pairs scored on both sides
    errors_a: int
    errors_b: int
    max_abs: float
    max_abs_at: tuple[str, str] | None  # (query_id, doc_id)
    mean_abs: float
    within_1e3: float  # share of pairs with |A - B| <= 1e-3
    spearman: list[float]  # per query, where defined
    kendall: list[float]
    k: int
    top_k_same_set: int  # queries whose top k holds the same documents
    top_k_same_order: int
    top_k_overlap: list[float]  # per query: |top_k(A) ∩ top_k(B)| / min(k, documents)


def parse_settings(text: str) -> dict[str, str]:
    """``numerics=fast,RERANKQ_QUANTIZATION=fp8`` -> {"numerics": "fast", "quantization": "fp8"}, checked
    against Settings (a misspelt or invalid setting fails here, not after an engine started)."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        name = key.strip().lower().removeprefix("rerankq_")
        if not sep or name not in Settings.model_fields:
            raise InputError(f"--a/--b: {item!r} is not KEY=VALUE of a RERANKQ_* setting (e.g. numerics=fast)")
        out[name] = value.strip()
    try:
        Settings(**{k: v for k, v in out.items() if v})
    except ValidationError as exc:
        problems = "; ".join(f"{'_'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"--a/--b {text!r}: {problems}") from None
    return out


def side_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with one side's settings on top (``KEY=`` removes the variable)."""
    env = dict(os.environ)
    for name, value in settings.items():
        if value:
            env[f"RERANKQ_{name.upper()}"] = value
        else:
            env.pop(f"RERANKQ_{name.upper()}", None)
    return env


def score_side(side: Side, sample: Path, workdir: Path, timeout: float) -> None:
    """Run the worker-side scorer in a fresh process and read its scores and context back."""
    out = workdir / f"{side.name}.parquet"
    cmd = [sys.executable, "-m", SCORER, "--manifest", str(sample), "--out", str(out)]
    try:
        proc = subprocess.run(cmd, env=side_env(side.settings), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InputError(f"side {side.name}: not scored within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        if any(f"No module named '{SCORER.split('.')[0]}'" in line for line in lines):
            raise InputError("calibrate scores on this machine: it needs the worker's engines (pip install 'rerankq[gpu]' or '[cpu]')")
        raise InputError(f"side {side.name} ({_words(side.settings)}) failed: {lines[-1] if lines else proc.returncode}")
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pydict()
    side.scores, side.logits, side.errors = table["score"], table["logit"], table["error"]
    side.context = json.loads(Path(f"{out}.json").read_text())


def read_sample(sample: Path) -> tuple[list[str], list[str]]:
    """The sample's (query_id, doc_id) per row; it must be a manifest (README: Manifests)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(sample, columns=["query_id", "doc_id", "query", "document"])
    except Exception as exc:  # a missing file, not Parquet, a missing column: one clear line
        raise InputError(f"{sample}: not a manifest with query_id, query, doc_id, document ({exc})") from None
    if table.num_rows == 0:
        raise InputError(f"{sample}: no rows")
    cols = table.select(["query_id", "doc_id"]).to_pydict()
    return [str(q) for q in cols["query_id"]], [str(d) for d in cols["doc_id"]]


def compare(query_ids: list[str], doc_ids: list[str], a: Side, b: Side, k: int) -> Comparison:
    both = [i for i in range(len(query_ids)) if a.scores[i] is not None and b.scores[i] is not None]
    deltas = [abs(a.scores[i] - b.scores[i]) for i in both]  # type: ignore[operator]
    worst = max(range(len(both)), key=lambda j: deltas[j]) if both else None
    groups: dict[str, list[int]] = {}
    for i in both:
        groups.setdefault(query_ids[i], []).append(i)
    rho, tau, overlap, same_set, same_order = [], [], [], 0, 0
    for rows in groups.values():
        sa, sb = [a.logits[i] for i in rows], [b.logits[i] for i in rows]  # ranks by log-odds, as the export
        for value, into in ((spearman(sa, sb), rho), (kendall(sa, sb), tau)):  # type: ignore[arg-type]
            if value is not None:
                into.append(value)
        ids = [doc_ids[i] for i in rows]
        ta, tb = top_k(sa, ids, k), top_k(sb, ids, k)  # type: ignore[arg-type]
        overlap.append(len(set(ta) & set(tb)) / len(ta))
        same_set += set(ta) == set(tb)
        same_order += ta == tb
    return Comparison(
        pairs=len(query_ids), queries=len(set(query_ids)), compared=len(both),
        errors_a=sum(e is not None for e in a.errors), errors_b=sum(e is not None for e in b.errors),
        max_abs=max(deltas, default=0.0),
        max_abs_at=(query_ids[both[worst]], doc_ids[both[worst]]) if worst is not None else None,
        mean_abs=statistics.fmean(deltas) if deltas else 0.0,
        within_1e3=sum(d <= 1e-3 for d in deltas) / len(deltas) if deltas else 1.0,
        spearman=rho, kendall=tau, k=k, top_k_same_set=same_set, top_k_same_order=same_order, top_k_overlap=overlap,
    )  # fmt: skip


def _words(settings: dict[str, str]) -> str:
    return ", ".join(f"{k}={v or '(default)'}" for k, v in settings.items()) or "the current settings"


def verdict(c: Comparison) -> str:
    """One sentence a person can act on."""
    groups = len(c.top_k_overlap)
    if c.compared == 0:
        return "No pair was scored on both sides: nothing to compare (see the errors)."
    if c.max_abs == 0:
        return "A and B give bitwise the same scores on this sample: B changes nothing here."
    if c.top_k_same_order == groups:
        return (f"B moves scores by at most {c.max_abs:.2g} but leaves every query's top {c.k} as it was: "
                "on this sample the rankings you serve do not change.")  # fmt: skip
    changed = groups - c.top_k_same_set
    low = min(c.kendall) if c.kendall else float("nan")
    return (f"B changes the top {c.k} documents of {changed} of {groups} queries ({changed / groups:.0%}) and reorders the "
            f"top {c.k} of {groups - c.top_k_same_order}; the worst query keeps Kendall {low:.3f}. Look at those queries "
            "before switching.")  # fmt: skip


def report_lines(sample: Path, c: Comparison, a: Side, b: Side) -> list[str]:
    def ctx(side: Side) -> str:
        x = side.context.get("context", {})
        return (f"{side.name}: {_words(side.settings)} -> context {side.context.get('digest', '?')[:12]} "
                f"({x.get('engine')}, {x.get('dtype')}, quantization {x.get('quantization')}, "
                f"{x.get('numerics') or 'no numerics modes'}; scored in {side.context.get('score_s', 0):.1f} s)")  # fmt: skip

    def spread(values: list[float]) -> str:
        return f"min {min(values):.4f}, median {statistics.median(values):.4f}" if values else "undefined (ties)"

    lines = [f"calibrate {sample}: {c.queries} queries, {c.pairs} pairs", ctx(a), ctx(b)]
    if c.errors_a or c.errors_b:
        lines.append(f"errors: {c.errors_a} pairs on A, {c.errors_b} on B (left out of the comparison)")
    where = f" (query {c.max_abs_at[0]}, document {c.max_abs_at[1]})" if c.max_abs_at else ""
    lines += [
        f"scores: largest |A - B| {c.max_abs:.3g}{where}, mean {c.mean_abs:.3g}; {c.within_1e3:.1%} of pairs within 1e-3",
        f"order within a query: Spearman {spread(c.spearman)}; Kendall tau-b {spread(c.kendall)}",
        f"top {c.k}: same documents in {c.top_k_same_set} of {len(c.top_k_overlap)} queries, same order in "
        f"{c.top_k_same_order}; mean overlap {statistics.fmean(c.top_k_overlap) if c.top_k_overlap else 1:.3f}",
        "in plain words: " + verdict(c),
    ]
    return lines


def calibrate(sample: Path, a_text: str, b_text: str, k: int = 10, timeout: float = 3600.0) -> tuple[Comparison, Side, Side]:
    """Score ``sample`` under both settings (one after the other) and compare them."""
    query_ids, doc_ids = read_sample(sample)
    a, b = Side("A", parse_settings(a_text)), Side("B", parse_settings(b_text))
    with tempfile.TemporaryDirectory(prefix="rerankq-calibrate-") as tmp:
        for side in (a, b):
            score_side(side, sample, Path(tmp), timeout)
    if len(a.scores) != len(query_ids) or len(b.scores) != len(query_ids):
        raise InputError(f"{sample}: a side scored {len(a.scores)}/{len(b.scores)} rows of {len(query_ids)}")
    return compare(query_ids, doc_ids, a, b, k), a, b


def as_json(c: Comparison, a: Side, b: Side) -> dict:
    sides = {s.name: {"settings": s.settings, "context": s.context} for s in (a, b)}
    return {**asdict(c), "sides": sides, "verdict": verdict(c)}
