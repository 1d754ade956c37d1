"""The e2e kit's report: one table (printed last, $OUT/table.md) of speed, ratios to the bare engine and
to the peer (a user's own vLLM script), exactly-once checks and score differences."""

from __future__ import annotations

import json
from pathlib import Path

from procs import worker_command


def table_rows(args, n: int, broker: str, variants: list, ready_by_variant: dict, jobs: list[dict], bare: dict,  # noqa: ANN001
               peer: dict, result: dict, row_group: int) -> list[tuple[str, str]]:  # fmt: skip
    """Rows (label, value) of the table, in reading order."""
    bp = bare["passes_s"]
    rows = [
        ("model shape", f"{args.model} (random bf16 weights)" if not args.smoke else "smoke (fake engine)"),
        ("pairs", f"{n:,} ({result['manifest']['queries']} queries x {result['manifest']['docs_per_query']}, row groups of {row_group})"),
        ("chunk size / pipeline slice", f"{result['settings'].get('chunk_size')} / {result['settings'].get('pipeline_pairs')}"),
        ("broker / ledger", f"{broker.split(':')[0]} / sqlite"),
        ("worker command", " ".join(worker_command(args.pool, args.concurrency)[1:]) + (f" with {' '.join(args.set)}" if args.set else "")),
    ]
    if bare.get("tokens"):
        rows.insert(2, ("tokens/pair (mean, min-max)", f"{bare['tokens'] / n:.1f} ({bare['min_tokens']}-{bare['max_tokens']})"))
    for variant in variants:
        ready = ready_by_variant.get(variant.name)
        if ready is None:
            continue
        rows.append((f"{variant.name}: settings, workers", f"{variant.settings or 'defaults'}, {variant.workers} worker(s)"))
        rows.append((f"{variant.name}: spawn -> engine_ready", ", ".join(f"{r.get('engine_ready', float('nan')):.1f} s" for r in ready)))
    for jb in jobs:
        st = jb["status"]
        job_s = st.get("elapsed_seconds")
        c = jb["correctness"]
        name = f"{jb['variant']} job {jb['index']}"
        rows += [
            (f"{name}: submit -> wait returned", f"{jb['e2e_s']:.2f} s = {n / jb['e2e_s']:,.1f} pairs/s (submit cmd {jb['submit_s']:.2f} s, status cmd {jb['status_s']:.2f} s)"),
            (f"{name}: ledger started->finished (worker only)", f"{job_s:.2f} s = {n / job_s:,.1f} pairs/s" if job_s else "?"),
            (f"{name}: chunks", f"{len(jb['chunks'])} chunks, {jb['chunk_text'][:300]}"),
            (f"{name}: exactly once", f"{c['exactly_once']} (export rows {c['export_rows']}, distinct {c['export_distinct']}, missing {c['missing']}, extra {c['extra']}, null {c['null_scores']}, errors {c['errors']}; db rows {c['db_score_rows']}; chunk scored sum {c['chunks_scored_sum']}; status {c['status_state']} {c['status_pairs_scored']})"),
        ]  # fmt: skip
        if bp:
            ref = bp[0]
            rows += [
                (f"{name}: ratio e2e / bare pass 1", f"{(n / jb['e2e_s']) / (n / ref):.3f}"),
                (f"{name}: ratio worker / bare pass 1", f"{(n / job_s) / (n / ref):.3f}" if job_s else "?"),
                (f"{name}: max |e2e - bare|", f"pass 1: {c['max_abs_diff_vs_bare_pass1']:.3e}" + (f", pass 2: {c['max_abs_diff_vs_bare_pass2']:.3e}" if c["max_abs_diff_vs_bare_pass2"] is not None else "") + f" ({c['compared']} pairs)"),
            ]  # fmt: skip
    firsts = {}
    for jb in jobs:
        if jb["index"] == 1 and jb["status"].get("elapsed_seconds"):
            firsts[jb["variant"]] = n / jb["status"]["elapsed_seconds"]
    base = next(iter(firsts.values()), None)
    for name, rate in list(firsts.items())[1:]:
        rows.append((f"{name} job 1 / {next(iter(firsts))} job 1 (worker only)", f"{rate / base:.3f}"))
    if bare.get("engine_start_s") is not None:
        rows.append(("bare: engine start (same kwargs)", f"{bare['engine_start_s']:.1f} s; PromptBuilder.build {bare['tokenize_s']:.2f} s (not in the timings)"))
    for k, b in enumerate(bp):
        rows.append((f"bare LLM.classify pass {k + 1}", f"{b:.2f} s = {n / b:,.1f} pairs/s"))
    if "max_abs_diff_first_vs_last_job" in result:
        rows.append(("max |first job - last job|", f"{result['max_abs_diff_first_vs_last_job']:.3e}"))
    if "max_abs_diff_bare_pass1_vs_pass2" in result:
        rows.append(("max |bare pass 1 - pass 2| (cold vs warm cache)", f"{result['max_abs_diff_bare_pass1_vs_pass2']:.3e}"))
    if bare.get("stability"):
        st = bare["stability"]
        rows.append(("bare: first pairs again, alone (reverse order) / in 7s, vs pass 1",
                     f"{st['alone_reversed_differing']} / {st['batches_of_7_differing']} of {st['pairs']} differ; "
                     f"max |d| {st['alone_reversed_max_abs']:.3e} / {st['batches_of_7_max_abs']:.3e}"))  # fmt: skip
    if bare.get("shuffled_s"):
        rows.append(("bare shuffled pass", f"{bare['shuffled_s']:.2f} s = {n / bare['shuffled_s']:,.1f} pairs/s; max |shuffled - pass 1| {bare['shuffled_max_diff']:.3e}"))
    rows += peer_rows(n, jobs, bare, peer, result)
    rows += [
        ("engine kwargs", json.dumps(bare.get("kwargs"))),
        ("versions", bare.get("versions", "")),
        ("problems", "; ".join(result["problems"]) or "none"),
    ]
    return rows


def peer_rows(n: int, jobs: list[dict], bare: dict, peer: dict, result: dict) -> list[tuple[str, str]]:
    """The peer (bare, batch invariance off, prefix caching on): its speed, each job and bare against it, its drift."""
    if not peer.get("passes_s"):
        return []
    rate = n / peer["passes_s"][0]
    rows = [("peer LLM.classify (batch invariance off, prefix caching on)", f"{peer['passes_s'][0]:.2f} s = {rate:,.1f} pairs/s")]
    if bare.get("passes_s"):
        rows.append(("ratio bare / peer", f"{(n / bare['passes_s'][0]) / rate:.3f}"))
    for jb in jobs:
        job_s = jb["status"].get("elapsed_seconds")
        name = f"{jb['variant']} job {jb['index']}"
        rows.append((f"{name}: ratio e2e / peer, worker / peer",
                     f"{(n / jb['e2e_s']) / rate:.3f}, " + (f"{(n / job_s) / rate:.3f}" if job_s else "?")))  # fmt: skip
    for jb in jobs:
        if "vs_peer" in jb:
            d = jb["vs_peer"]
            rows.append((f"{jb['variant']} job {jb['index']}: max |e2e - peer|",
                         f"{d['max_abs']:.3e}; queries whose top 10 differs {d['top10_changed']}/{d['queries']}"))  # fmt: skip
    if "peer_vs_bare" in result:
        d = result["peer_vs_bare"]
        rows.append(("max |peer - bare pass 1|", f"{d['max_abs']:.3e}; queries whose top 10 differs {d['top10_changed']}/{d['queries']}"))
    if "peer_shuffled" in result:
        d = result["peer_shuffled"]
        rows.append(("peer shuffled vs peer pass 1 (fast mode's drift)",
                     f"max |d| {d['max_abs']:.3e}; queries whose top 10 changed {d['top10_changed']}/{d['queries']}"))  # fmt: skip
    return rows


def write_table(out: Path, rows: list[tuple[str, str]]) -> str:
    """$OUT/table.md, and the same text to print."""
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)
    (out / "table.md").write_text(text + "\n")
    return text
