"""End-to-end rerankq measurement on one GPU (or a CPU smoke test with a fake engine).

One job, as users run it:
  producer db upgrade
  celery -A worker worker -Q gpu            (started first; we wait for its engine_ready log line)
  producer submit manifest.parquet          (timer starts before this command)
  producer wait JOB                         (timer stops when it returns, exit 0 = completed)
  producer status JOB --json ; producer export JOB --out export.parquet
then the worker is stopped (SIGTERM, warm shutdown) and bare.py runs vLLM's LLM.classify on the same
token ids (PromptBuilder) with the worker's engine_kwargs, in a fresh process.

This orchestrator never imports torch: the GPU is used only by its child processes.
Usage (GPU machine, from the project root, after the bundle is unpacked): see bench/gpu_e2e/README.md
  python3 bench/gpu_e2e/e2e.py --model 0.6b --pairs 40000 --tok TOK.tar.xz --debs DEBS
With --peer, bare.py runs once more as a user's own vLLM script would (batch invariance off, prefix caching
on, the same engine arguments otherwise): every run shows the worker against what a user would run instead.
Checks: checks.py; table: report.py; Redis and worker processes: procs.py; shared log/result: runlog.py.
Smoke (CPU, fake engine):  python3 bench/gpu_e2e/e2e.py --smoke --pairs 2000 --tok TOK.tar.xz --broker redis://...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from checks import check_jobs, compare_runs
from procs import Worker, start_redis, stop_redis, worker_command
from report import table_rows, write_table
from runlog import RESULT, elapsed, log, problem, run, save

HERE = Path(__file__).resolve().parent
ROW_GROUP = 2048


# ---------------------------------------------------------------------------------------------------
def make_manifest(project: Path, path: Path, n: int, seed: int = 0) -> dict:
    sys.path.insert(0, str(project))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.pairs import make_pairs

    dpq = 64
    pairs = make_pairs(n, seed=seed, docs_per_query=dpq, query_words=(4, 16), doc_words=(150, 240))
    table = pa.table(
        {
            "query_id": [f"q{i // dpq:05d}" for i in range(n)],
            "query": [p.query for p in pairs],
            "doc_id": [f"q{i // dpq:05d}-d{i % dpq:02d}" for i in range(n)],
            "document": [p.document for p in pairs],
        }
    )
    pq.write_table(table, path, row_group_size=ROW_GROUP)  # a chunk reads only the row groups it spans
    return {"pairs": n, "queries": (n + dpq - 1) // dpq, "docs_per_query": dpq, "bytes": path.stat().st_size}





@dataclass
class Variant:
    """One worker configuration measured in this call: its own ledger, its own fresh worker(s)."""

    name: str
    settings: dict[str, str]
    workers: int


def parse_variant(text: str) -> Variant:
    """NAME:KEY=V,KEY=V  (RERANKQ_* settings; workers=N starts N workers, one per GPU)."""
    name, _, rest = text.partition(":")
    settings = dict(item.split("=", 1) for item in rest.split(",") if item)
    workers = int(settings.pop("workers", "1"))
    return Variant(name, settings, workers)


def run_variant(variant: Variant, args, env: dict, project: Path, out: Path, work: Path, producer: list[str],
                manifest: Path) -> tuple[list[dict], list[dict]]:  # fmt: skip  # noqa: ANN001
    """Fresh ledger, the variant's worker(s) ready, its jobs submitted and waited for, workers stopped."""
    db = work / "run" / f"rerankq-{variant.name}.db"
    env = {**env, **variant.settings, "RERANKQ_DATABASE_URL": f"sqlite:///{db}"}
    rc, stdout, s = run(producer + ["db", "upgrade"], env, project, out, "db_upgrade")
    log(f"[{variant.name}] producer db upgrade: rc {rc} ({s:.1f} s) {stdout.strip()}")
    if rc != 0:
        return [], []
    cmd = worker_command(args.pool, args.concurrency)
    workers = []
    for i in range(variant.workers):
        wenv = dict(env)
        if variant.workers > 1:
            wenv["CUDA_VISIBLE_DEVICES"] = str(i)  # one worker per GPU, as docker/compose and the README run them
        workers.append(Worker(wenv, project, out / f"worker-{variant.name}-{i}.log", cmd))
    ready = [w.wait_ready(args.ready_timeout) for w in workers]
    for i, r in enumerate(ready):
        log(f"[{variant.name}] worker {i}: {r}")
    jobs: list[dict] = []
    if all("engine_ready" in r and "celery_ready" in r for r in ready):
        for j in range(args.jobs):
            if j and elapsed() + 2.5 * jobs[0]["e2e_s"] + 150 > args.budget:
                log(f"[{variant.name}] job {j + 1} skipped: not enough time left")
                break
            t_submit = time.monotonic()
            rc, stdout, s_submit = run(producer + ["submit", str(manifest), "--name", f"e2e-{args.model}-{variant.name}-{j + 1}"],
                                       env, project, out, "submit")  # fmt: skip
            job = stdout.strip().splitlines()[-1] if stdout.strip() else ""
            log(f"[{variant.name}] job {j + 1}: producer submit rc {rc} in {s_submit:.2f} s, job {job}")
            if rc != 0 or not job:
                break
            rc_wait, _, s_wait = run(producer + ["wait", job, "--timeout", str(args.job_timeout)], env, project, out, "wait",
                                     timeout=args.job_timeout + 60, check=False)  # fmt: skip
            e2e_s = time.monotonic() - t_submit
            log(f"[{variant.name}] job {j + 1}: wait rc {rc_wait} after {s_wait:.1f} s; submit -> wait returned {e2e_s:.2f} s "
                f"= {args.pairs / e2e_s:,.1f} pairs/s")  # fmt: skip
            if rc_wait != 0:
                problem(f"[{variant.name}] job {j + 1}: producer wait exited {rc_wait} (0 = completed)")
            rc, stdout, s_status = run(producer + ["status", job, "--json"], env, project, out, "status")
            status = json.loads(stdout) if rc == 0 else {}
            export = work / "run" / f"export-{variant.name}-{j + 1}.parquet"
            rc, _, s_export = run(producer + ["export", job, "--out", str(export)], env, project, out, "export")
            jobs.append({"variant": variant.name, "index": j + 1, "db": str(db), "job": job, "submit_s": s_submit,
                         "wait_s": s_wait, "e2e_s": e2e_s, "wait_rc": rc_wait, "status": status, "export": str(export),
                         "export_s": s_export, "status_s": s_status})  # fmt: skip
    for i, w in enumerate(workers):
        stop_s = w.stop()
        wl = w.text()
        log(f"[{variant.name}] worker {i} stopped in {stop_s:.1f} s (rc {w.p.returncode})")
        for bad in ("Traceback", '"level": "error"', '"level": "critical"', "chunk_error", "engine_dead"):
            if bad in wl:
                problem(f"[{variant.name}] worker {i} log contains {bad!r}")
        for jb in jobs:
            jb.setdefault("worker_chunks", []).extend(
                {**json.loads(line[line.index("{"):]), "worker": i} for line in wl.splitlines()
                if '"event": "chunk_done"' in line and jb["job"] in line
            )  # fmt: skip
    return jobs, ready


# A user's own vLLM script: the same engine arguments, batch invariance off, prefix caching on.
PEER_SETTINGS = {"RERANKQ_NUMERICS": "fast", "RERANKQ_BATCH_INVARIANT": "false", "RERANKQ_ENABLE_PREFIX_CACHING": "true"}


def run_bare(label: str, env: dict, project: Path, out: Path, work: Path, manifest: Path, passes: int, args) -> dict:  # noqa: ANN001
    """bare.py (LLM.classify on the same token ids, in a fresh process) as ``label``; its JSON, or {} on failure."""
    path = work / "run" / f"{label}.json"
    cmd = [sys.executable, str(HERE / "bare.py"), "--manifest", str(manifest), "--json", str(path), "--label", label,
           "--passes", str(passes), "--deadline", str(max(0.0, args.budget - elapsed()))]  # fmt: skip
    if args.smoke:
        cmd.append("--smoke")
    if args.shuffle_pass:
        cmd.append("--shuffle-pass")
    if args.stability and label == "bare":
        cmd += ["--stability", str(args.stability)]
    p = subprocess.Popen(cmd, env=env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(out / f"{label}.log", "w") as f:
        for line in p.stdout:  # type: ignore[union-attr]
            f.write(line)
            if line.startswith(f"[{label}"):
                print(line, end="", flush=True)
    p.wait()
    if p.returncode != 0 or not path.exists():
        problem(f"bare.py ({label}) exited {p.returncode}; see {label}.log: {(out / f'{label}.log').read_text()[-2000:]}")
        return {"passes_s": []}
    result = json.loads(path.read_text())
    RESULT[label] = {k: v for k, v in result.items() if not k.startswith("scores")}
    return result


# ---------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="0.6b", help="0.6b | 4b | 8b (random bf16 weights, real Qwen3 config)")
    ap.add_argument("--pool", default="default", help="default (the app's own: threads, RERANKQ_CHUNKS_IN_FLIGHT) | a Celery pool to force, e.g. solo")
    ap.add_argument("--concurrency", type=int, default=2, help="with --pool: its concurrency")
    ap.add_argument("--set", action="append", default=[], metavar="RERANKQ_X=V", help="extra settings, worker and bare")
    ap.add_argument("--shuffle-pass", action="store_true", help="bare: one more pass in shuffled order")
    ap.add_argument("--pairs", type=int, default=40000)
    ap.add_argument("--work", default="/tmp/e2e")
    ap.add_argument("--tok", default=str(HERE / "tok.tar.xz"))
    ap.add_argument("--project", default=str(HERE.parents[1]))
    ap.add_argument("--debs", default=str(HERE / "debs"))
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--ready-timeout", type=float, default=300)
    ap.add_argument("--job-timeout", type=float, default=300)
    ap.add_argument("--bare-passes", type=int, default=2, help="timed bare passes (the 2nd only if time allows)")
    ap.add_argument("--jobs", type=int, default=1, help="jobs submitted one after another to the same worker")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:RERANKQ_X=V,...[,workers=N]",
                    help="worker configurations, each on a fresh ledger and fresh workers, one after another "
                         "(workers=N: N workers, CUDA_VISIBLE_DEVICES=0..N-1); default one worker, defaults")  # fmt: skip
    ap.add_argument("--peer", action="store_true", help="bare once more as a user's own script: batch invariance off, prefix caching on")
    ap.add_argument("--stability", type=int, default=0, metavar="PAIRS", help="bare: PAIRS pairs again alone and in 7s, bitwise vs pass 1")
    ap.add_argument("--budget", type=float, default=560, help="seconds: skip the optional 2nd bare pass past this")
    ap.add_argument("--smoke", action="store_true", help="CPU: fake engine (plumbing test only)")
    ap.add_argument("--broker", default=None, help="force a broker URL (default: Redis from --debs, else SQLite)")
    ap.add_argument("--cascade", default=None, metavar="FIRST:top=K",
                    help="instead of the variants: a cascade FIRST -> --model on one GPU against --model over every pair (cascade.py)")
    ap.add_argument("--cascade-memory", type=float, default=0.45, help="--cascade: RERANKQ_GPU_MEMORY_UTILIZATION of each worker")
    ap.add_argument("--cascade-chunk-size", type=int, action="append", default=[], metavar="PAIRS",
                    help="--cascade: chunk size of each cascade job (the first also the plain job's); default 16384")  # fmt: skip
    args = ap.parse_args()

    out = Path(os.environ.get("OUT") or "/tmp/e2e-out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) / args.model
    shutil.rmtree(work / "run", ignore_errors=True)
    (work / "run").mkdir(parents=True)
    project = Path(args.project).resolve()
    RESULT.update(model=args.model, pairs_requested=args.pairs, smoke=args.smoke, date_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    log(f"python {sys.version.split()[0]}, project {project}, work {work}, out {out}")

    # --- 1. broker --------------------------------------------------------------------------------
    if args.broker:
        broker = args.broker
    else:
        broker = start_redis(Path(args.debs), Path("/tmp/rroot"), args.port, out)
        if broker is None:
            broker = f"sqla+sqlite:///{work / 'run' / 'broker.db'}"
            problem(f"falling back to Kombu's SQLite broker {broker}")
    RESULT["broker"] = broker
    log(f"broker {broker}")

    # --- 2. checkpoint (in a child process: this one never touches the GPU) -----------------------
    ckpt = work / f"ckpt-{args.model}"
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base_env["PYTHONPATH"] = str(project) + (":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    mk = [sys.executable, str(HERE / "mkckpt.py"), "--model", args.model, "--dir", str(ckpt), "--tok", args.tok]
    if args.smoke:
        mk.append("--smoke")
    rc, stdout, s = run(mk, base_env, project, out, "mkckpt", timeout=300)
    RESULT["steps"]["checkpoint_s"] = round(s, 1)
    log(f"checkpoint {ckpt}: rc {rc}, {s:.1f} s; {stdout.strip().splitlines()[-1] if stdout.strip() else ''}")
    if rc != 0:
        save(out)
        return 1

    # --- 3. manifest -----------------------------------------------------------------------------------
    manifest = work / "run" / "manifest.parquet"
    t = time.monotonic()
    RESULT["manifest"] = make_manifest(project, manifest, args.pairs)
    log(f"manifest {manifest}: {RESULT['manifest']} in {time.monotonic() - t:.1f} s")

    # --- 4. settings: the project's defaults, only model, ledger and broker set ------------------------
    env = dict(base_env)
    for k in list(env):
        if k.startswith("RERANKQ_"):
            del env[k]
    env.update(RERANKQ_MODEL=str(ckpt), RERANKQ_BROKER_URL=broker)  # each variant gets its own ledger (run_variant)
    for item in args.set:
        key, _, value = item.partition("=")
        env[key] = value
    RESULT["set"] = args.set
    if args.smoke:
        env.update(RERANKQ_ENGINE="fake_engine:factory")
        env["PYTHONPATH"] = str(HERE) + ":" + env["PYTHONPATH"]
    producer = [sys.executable, "-m", "producer.cli"]
    defaults = subprocess.run(
        [sys.executable, "-c", "from rerankq.settings import Settings; import json; s=Settings(); print(json.dumps({k: str(v) for k, v in s.model_dump().items() if k not in ('broker_url', 'database_url')}))"],
        env=env, cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    RESULT["settings"] = json.loads(defaults.stdout) if defaults.returncode == 0 else defaults.stderr[-1000:]
    log(f"settings: chunk_size {RESULT['settings'].get('chunk_size')}, pipeline_pairs {RESULT['settings'].get('pipeline_pairs')}, "
        f"max_length {RESULT['settings'].get('max_length')}, dtype {RESULT['settings'].get('dtype')}")  # fmt: skip
    if args.cascade:  # issue 16: its own measurement, no variants, no bare
        from cascade import cascade_rows, run_cascade

        RESULT["cascade"] = run_cascade(args, env, project, out, work, producer, manifest,
                                        lambda path, n, seed: make_manifest(project, path, n, seed), ckpt)  # fmt: skip
        save(out)
        print("\n" + write_table(out, cascade_rows(RESULT["cascade"], args.pairs) + [("problems", "; ".join(RESULT["problems"]) or "none")]), flush=True)
        if not args.broker and broker.startswith("redis"):
            stop_redis(args.port)
        return 0 if RESULT["cascade"]["jobs"] else 1
    variants = [parse_variant(v) for v in args.variant] or [Variant("default", {}, 1)]
    RESULT["variants"] = [vars(v) for v in variants]
    jobs: list[dict] = []
    ready_by_variant: dict[str, dict] = {}
    for k, variant in enumerate(variants):
        started = max((r.get("engine_ready", 0.0) for rs in ready_by_variant.values() for r in rs), default=0.0)
        if k and elapsed() + 1.2 * started + 1.5 * max(jb["e2e_s"] for jb in jobs) + 30 > args.budget:
            log(f"variant {variant.name} skipped: not enough time left")
            continue
        vjobs, ready = run_variant(variant, args, env, project, out, work, producer, manifest)
        ready_by_variant[variant.name] = ready
        jobs.extend(vjobs)
        RESULT["jobs"] = jobs
        save(out)
        if not vjobs:
            return 1
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader"], capture_output=True, text=True)
        log(f"GPU memory after the workers stopped: {smi.stdout.strip()}")
        RESULT["gpu_memory_after_worker"] = smi.stdout.strip()
    save(out)


    # --- 8. bare LLM.classify on the same token ids, same engine kwargs (RERANKQ_* of --set, no variant's) -----
    bare: dict = {"passes_s": []}
    if args.bare_passes and elapsed() + 120 < args.budget:
        bare = run_bare("bare", env, project, out, work, manifest, args.bare_passes, args)
    else:
        log("bare skipped: not enough time left")
    peer: dict = {"passes_s": []}
    if args.peer and elapsed() + 200 < args.budget:  # a cold engine start of its own
        peer_env = {k: v for k, v in env.items() if k != "VLLM_BATCH_INVARIANT"}
        peer = run_bare("peer", {**peer_env, **PEER_SETTINGS}, project, out, work, manifest, 1, args)
    elif args.peer:
        log("peer skipped: not enough time left")

    # --- 9. correctness, per job; runs against each other ------------------------------------------------
    n = check_jobs(jobs, manifest, bare)
    compare_runs(jobs, bare, peer, manifest, RESULT)
    RESULT["jobs"] = jobs

    # --- 10. table ----------------------------------------------------------------------------------
    rows = table_rows(args, n, broker, variants, ready_by_variant, jobs, bare, peer, RESULT, ROW_GROUP)
    RESULT["table"] = rows
    save(out)
    print("\n" + write_table(out, rows), flush=True)
    if not args.broker and broker.startswith("redis"):
        stop_redis(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
