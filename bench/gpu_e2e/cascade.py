"""A cascade's GPU time on one GPU (issue 16), against the second model over every pair (`e2e.py --cascade`).

Two workers share the GPU, one per model, each started as users start it (`celery -A worker worker -Q gpu`; it
subscribes to its own model's queue), each with RERANKQ_GPU_MEMORY_UTILIZATION (`--cascade-memory`, 0.45). Then,
on one ledger:
  producer submit M0 --model FIRST --then SECOND:top=K --chunk-size C0    the cascade
  producer submit M0 --model SECOND --no-reuse --chunk-size C0            SECOND over every pair, same manifest
  producer submit Mi --model FIRST --then SECOND:top=K --chunk-size Ci    one more cascade per further
                                                                          --cascade-chunk-size, if time allows
Each further cascade has a manifest of its own (same shape, another seed): a cascade's workers look their pairs up
in the score cache, so a cascade over pairs scored before would score nothing. The cascade runs before the plain
job for the same reason (the plain job's --no-reuse neither reads nor is read by it).
Per job: submit -> wait returned, the ledger's started -> finished and, per stage (`chunks.stage`), chunks, pairs,
the sum of the chunks' started -> finished and their union (the stage's busy time: a worker holds two chunks at
once). Checks: each export holds every pair once; stage 2 holds exactly each query's top K by stage-1 score (ties
by doc_id, as worker/cascade.py); stage-2 scores equal the plain job's for the same pairs.
The workers start one after the other: vLLM sizes its KV cache from the device's free memory measured from its
start to the end of its profiling run, so an engine loading meanwhile would be counted as its own."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from procs import Worker, worker_command
from runlog import elapsed, log, problem, run

HERE = Path(__file__).resolve().parent


@dataclass
class Cascade:
    first: str  # the first stage's model shape (0.6b); the second is e2e.py's --model
    top: int


def parse_cascade(text: str) -> Cascade:
    """FIRST:top=K, e.g. 0.6b:top=16."""
    first, _, option = text.partition(":")
    key, _, value = option.partition("=")
    if key != "top" or not value.isdigit():
        raise SystemExit(f"--cascade {text!r}: expected FIRST:top=K, e.g. 0.6b:top=16")
    return Cascade(first, int(value))


def _ts(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _union(intervals: list[tuple[datetime, datetime]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += (b - a).total_seconds()
            end = b
        elif b > end:
            total += (b - end).total_seconds()
            end = b
    return total


def stage_stats(db: str, job: str) -> dict[str, dict]:
    """Per stage, from the ledger: chunks, pairs, scored, the chunks' summed and united started -> finished,
    and first start / last finish in seconds after the job's start."""
    con = sqlite3.connect(db)
    job_start = _ts(con.execute("select started_at from jobs where id = ?", (job,)).fetchone()[0])
    rows = con.execute(
        "select stage, state, pairs, scored, started_at, finished_at, worker from chunks where job_id = ?", (job,)
    ).fetchall()
    con.close()
    by_stage: dict[int, list] = defaultdict(list)
    for r in rows:
        by_stage[r[0] or 1].append(r)
    stats = {}
    for stage, rs in sorted(by_stage.items()):
        spans = [(a, b) for a, b in ((_ts(r[4]), _ts(r[5])) for r in rs) if a and b]
        stats[str(stage)] = {
            "chunks": len(rs), "states": sorted({r[1] for r in rs}), "pairs": sum(r[2] for r in rs),
            "scored": sum(r[3] or 0 for r in rs), "workers": len({r[6] for r in rs}),
            "chunk_sizes": sorted({r[2] for r in rs}),
            "sum_s": sum((b - a).total_seconds() for a, b in spans), "busy_s": _union(spans),
            "first_start_s": min((a - job_start).total_seconds() for a, _ in spans) if spans and job_start else None,
            "last_finish_s": max((b - job_start).total_seconds() for _, b in spans) if spans and job_start else None,
        }  # fmt: skip
    return stats


def check_export(path: str, manifest: Path, top: int | None) -> dict:
    """Every manifest pair once, no null score; with ``top``: stage 2 = each query's top by stage 1."""
    import pyarrow.parquet as pq

    man = pq.read_table(manifest, columns=["query_id", "doc_id"]).to_pydict()
    keys = set(zip(man["query_id"], man["doc_id"]))
    ex = pq.read_table(path).to_pydict()
    ex_keys = list(zip(ex["query_id"], ex["doc_id"]))
    result = {"rows": len(ex_keys), "exactly_once": len(ex_keys) == len(keys) == len(set(ex_keys)) and set(ex_keys) == keys,
              "null_scores": sum(s is None for s in ex["score"]), "errors": sum(e is not None for e in ex.get("error", []))}  # fmt: skip
    if top is None:
        return result
    by_query: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(ex["query_id"]):
        by_query[q].append(i)
    wanted = {i for rows in by_query.values() for i in sorted(rows, key=lambda i: (-ex["score"][i], ex["doc_id"][i].encode()))[:top]}
    got = {i for i, s in enumerate(ex["stage2_score"]) if s is not None}
    result.update(stage2_pairs=len(got), stage2_expected=sum(min(top, len(r)) for r in by_query.values()),
                  stage2_not_top=len(got - wanted), top_missing_stage2=len(wanted - got),
                  stage2_errors=sum(e is not None for e in ex.get("stage2_error", [])))  # fmt: skip
    return result


def stage2_vs_plain(cascade_export: str, plain_export: str) -> dict:
    """The cascade's stage-2 scores against the plain job's scores of the same pairs (the same model)."""
    import pyarrow.parquet as pq

    c = pq.read_table(cascade_export).to_pydict()
    p = pq.read_table(plain_export).to_pydict()
    plain = dict(zip(zip(p["query_id"], p["doc_id"]), p["score"]))
    diffs = [abs(s - plain[k]) for k, s in zip(zip(c["query_id"], c["doc_id"]), c["stage2_score"]) if s is not None]
    return {"pairs": len(diffs), "max_abs": max(diffs) if diffs else None, "differing": sum(d != 0 for d in diffs)}


def submit_and_wait(label: str, argv: list[str], env: dict, project: Path, out: Path, producer: list[str],
                    timeout: float, db: str, export: Path) -> dict | None:  # fmt: skip
    """One job through the CLI: submit, wait, status --json, export; the ledger's per-stage figures."""
    t = time.monotonic()
    rc, stdout, s_submit = run(producer + ["submit", *argv, "--name", label], env, project, out, "submit")
    job = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    log(f"[{label}] producer submit rc {rc} in {s_submit:.2f} s, job {job}")
    if rc != 0 or not job:
        return None
    rc_wait, _, s_wait = run(producer + ["wait", job, "--timeout", str(timeout)], env, project, out, "wait",
                             timeout=timeout + 60, check=False)  # fmt: skip
    e2e_s = time.monotonic() - t
    if rc_wait != 0:
        problem(f"[{label}] producer wait exited {rc_wait} (0 = completed)")
    rc, stdout, _ = run(producer + ["status", job, "--json"], env, project, out, "status")
    status = json.loads(stdout) if rc == 0 else {}
    run(producer + ["export", job, "--out", str(export)], env, project, out, "export")
    stages = stage_stats(db, job)
    log(f"[{label}] wait rc {rc_wait}; submit -> wait returned {e2e_s:.2f} s; ledger {status.get('elapsed_seconds')} s; "
        f"stages {json.dumps(stages)}")  # fmt: skip
    return {"label": label, "job": job, "argv": argv, "submit_s": s_submit, "wait_s": s_wait, "e2e_s": e2e_s,
            "wait_rc": rc_wait, "status": status, "stages": stages, "export": str(export)}  # fmt: skip


def start_workers(models: list[tuple[str, Path]], env: dict, project: Path, out: Path, args) -> tuple[list[Worker], dict, str]:  # noqa: ANN001
    """One worker per model on this GPU, one after the other (see the module's docstring); their readiness and
    the GPU's memory once both are ready."""
    workers, ready = [], {}
    for name, ckpt in models:
        wenv = {**env, "RERANKQ_MODEL": str(ckpt), "RERANKQ_GPU_MEMORY_UTILIZATION": str(args.cascade_memory)}
        w = Worker(wenv, project, out / f"worker-{name}.log", worker_command(args.pool, args.concurrency))
        workers.append(w)
        ready[name] = w.wait_ready(args.ready_timeout)
        log(f"[cascade] worker {name}: {ready[name]}")
        if not ("engine_ready" in ready[name] and "celery_ready" in ready[name]):
            break
    memory = ""
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True)  # fmt: skip
        memory = smi.stdout.strip()
        log(f"[cascade] GPU memory with both workers ready: {memory}")
    return workers, ready, memory


def run_cascade(args, env: dict, project: Path, out: Path, work: Path, producer: list[str], manifest: Path,  # noqa: ANN001
                make_manifest: Callable[[Path, int, int], dict], ckpt_second: Path) -> dict:  # fmt: skip
    """The whole measurement; returns its result (jobs, workers, checks) for e2e_result.json and the table."""
    spec = parse_cascade(args.cascade)
    ckpt_first = work.parent / spec.first / f"ckpt-{spec.first}"
    mk = [sys.executable, str(HERE / "mkckpt.py"), "--model", spec.first, "--dir", str(ckpt_first), "--tok", args.tok]
    rc, stdout, s = run(mk + (["--smoke"] if args.smoke else []), env, project, out, "mkckpt", timeout=300)
    log(f"[cascade] checkpoint {ckpt_first}: rc {rc}, {s:.1f} s")
    result: dict = {"first": spec.first, "second": args.model, "top": spec.top, "memory_utilization": args.cascade_memory,
                    "chunk_sizes": args.cascade_chunk_size, "jobs": [], "first_checkpoint_s": round(s, 1)}  # fmt: skip
    if rc != 0:
        return result
    db = str(work / "run" / "rerankq-cascade.db")
    env = {**env, "RERANKQ_DATABASE_URL": f"sqlite:///{db}"}
    run(producer + ["db", "upgrade"], env, project, out, "db_upgrade")
    workers, ready, result["gpu_memory_ready"] = start_workers(
        [(args.model, ckpt_second), (spec.first, ckpt_first)], env, project, out, args
    )
    result["ready"] = ready
    sizes = args.cascade_chunk_size or [16384]
    then = ["--model", str(ckpt_first), "--then", f"{ckpt_second}:top={spec.top}"]
    plan = [("cascade", manifest, sizes[0], then), ("plain", manifest, sizes[0], ["--model", str(ckpt_second), "--no-reuse"])]
    plan += [("cascade", work / "run" / f"manifest-{i}.parquet", c, then) for i, c in enumerate(sizes[1:], 1)]
    if len(ready) == 2 and all("engine_ready" in r and "celery_ready" in r for r in ready.values()):
        for i, (kind, path, chunk, argv) in enumerate(plan):
            done = result["jobs"]
            if i >= 2 and elapsed() + 1.5 * done[0]["e2e_s"] + 30 > args.budget:
                log(f"[cascade] job {i + 1} ({kind}, chunk {chunk}) skipped: not enough time left")
                continue
            if not path.exists():
                result[f"manifest_{i}"] = make_manifest(path, args.pairs, i)
            label = f"{kind}-{spec.first if kind == 'cascade' else args.model}-c{chunk}-{i + 1}"
            job = submit_and_wait(label, [str(path), *argv, "--chunk-size", str(chunk)], env, project, out, producer,
                                  args.job_timeout, db, work / "run" / f"export-{label}.parquet")  # fmt: skip
            if job is None:
                break
            job.update(kind=kind, chunk_size=chunk, manifest=str(path))
            job["check"] = check_export(job["export"], path, spec.top if kind == "cascade" else None)
            done.append(job)
    for w in workers:
        stop_s = w.stop()
        text = w.text()
        log(f"[cascade] worker {w.log_path.name} stopped in {stop_s:.1f} s (rc {w.p.returncode})")
        for bad in ("Traceback", '"level": "error"', '"level": "critical"', "chunk_error", "engine_dead", "chunk_rerouted"):
            if bad in text:
                problem(f"[cascade] {w.log_path.name} contains {bad!r}")
    jobs = result["jobs"]
    plain = next((j for j in jobs if j["kind"] == "plain"), None)
    for j in jobs:
        if j["kind"] == "cascade" and plain and j["manifest"] == plain["manifest"]:
            j["stage2_vs_plain"] = stage2_vs_plain(j["export"], plain["export"])
    return result


def cascade_rows(result: dict, pairs: int) -> list[tuple[str, str]]:
    """Table rows: each job's wall times and stages, then each cascade against the plain job."""
    rows = [("cascade", f"{result['first']} -> {result['second']} top={result['top']}; two workers on one GPU, "
                        f"RERANKQ_GPU_MEMORY_UTILIZATION={result['memory_utilization']} each")]  # fmt: skip
    for name, r in result.get("ready", {}).items():
        rows.append((f"worker {name}: spawn -> engine_ready", f"{r.get('engine_ready', float('nan')):.1f} s"))
    rows.append(("GPU memory, both workers ready", result.get("gpu_memory_ready") or "?"))
    plain = next((j for j in result["jobs"] if j["kind"] == "plain"), None)
    for j in result["jobs"]:
        ledger = j["status"].get("elapsed_seconds")
        rows.append((f"{j['label']}: submit -> wait returned / ledger started->finished",
                     f"{j['e2e_s']:.2f} s / {ledger:.2f} s = {pairs / ledger:,.1f} manifest pairs/s" if ledger else f"{j['e2e_s']:.2f} s / ?"))  # fmt: skip
        for stage, st in j["stages"].items():
            rows.append((f"{j['label']}: stage {stage}",
                         f"{st['chunks']} chunks {st['chunk_sizes']}, {st['pairs']:,} pairs ({st['scored']:,} scored), "
                         f"chunks' sum {st['sum_s']:.2f} s, busy (union) {st['busy_s']:.2f} s, "
                         f"from {st['first_start_s']:.2f} to {st['last_finish_s']:.2f} s after the job's start"))  # fmt: skip
        st = j["status"]
        rows.append((f"{j['label']}: status --json", f"state {st.get('state')}, pairs_scored {st.get('pairs_scored')}, "
                     f"chunks {st.get('chunks')}, then {st.get('then_top')}"))  # fmt: skip
        rows.append((f"{j['label']}: checks", json.dumps(j["check"])))
        if "stage2_vs_plain" in j:
            rows.append((f"{j['label']}: stage-2 scores vs plain job", json.dumps(j["stage2_vs_plain"])))
        if plain and j is not plain and plain["status"].get("elapsed_seconds") and j["status"].get("elapsed_seconds"):
            busy = sum(s["busy_s"] for s in j["stages"].values()) / sum(s["busy_s"] for s in plain["stages"].values())
            rows.append((f"{j['label']} / {plain['label']}",
                         f"ledger {j['status']['elapsed_seconds'] / plain['status']['elapsed_seconds']:.3f}, "
                         f"e2e {j['e2e_s'] / plain['e2e_s']:.3f}, stages' busy summed {busy:.3f}"))  # fmt: skip
    return rows
