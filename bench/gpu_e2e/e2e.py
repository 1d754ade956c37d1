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
Smoke (CPU, fake engine):  python3 bench/gpu_e2e/e2e.py --smoke --pairs 2000 --tok TOK.tar.xz --broker redis://...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROW_GROUP = 2048
T0 = time.monotonic()
RESULT: dict = {"steps": {}, "problems": []}


def log(msg: str) -> None:
    print(f"[e2e {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


def save(out: Path) -> None:
    (out / "e2e_result.json").write_text(json.dumps(RESULT, indent=2, default=str))


def problem(text: str) -> None:
    log("PROBLEM: " + text)
    RESULT["problems"].append(text)


def run(cmd: list[str], env: dict, cwd: Path, out: Path, name: str, timeout: float = 300, check: bool = True):
    """Run a command, log its output to $OUT/cmd_<name>.log, return (rc, stdout, seconds)."""
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    s = time.monotonic() - t
    with open(out / "commands.log", "a") as f:
        f.write(f"\n$ {' '.join(cmd)}   (cwd {cwd}, rc {p.returncode}, {s:.2f} s)\n--- stdout\n{p.stdout[-20000:]}\n--- stderr\n{p.stderr[-20000:]}\n")
    if check and p.returncode != 0:
        problem(f"`{' '.join(cmd[3:] if cmd[1:3] == ['-m', 'producer.cli'] else cmd)}` exited {p.returncode}: "
                f"{(p.stderr or p.stdout).strip()[-1500:]}")
    return p.returncode, p.stdout, s


# ---------------------------------------------------------------------------------------------------
def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_redis(debs: Path, root: Path, port: int, out: Path) -> str | None:
    """Debian's redis-server, unpacked privately (dpkg -x into root, never /). Returns its URL or None."""
    if port_open(port):
        log(f"something already listens on {port}: using it as Redis (FLUSHDB first: no stale chunks of an earlier run)")
        try:
            import redis

            redis.Redis(port=port).flushdb()
        except Exception as exc:
            problem(f"FLUSHDB on the Redis already at {port} failed: {exc!r}")
        return f"redis://127.0.0.1:{port}/0"
    root.mkdir(parents=True, exist_ok=True)
    try:
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
    except Exception as exc:
        problem(f"dpkg -x of the Redis packages failed: {exc!r} {getattr(exc, 'stderr', b'')[-300:]!r}")
        return None
    libs = ":".join(str(p) for p in (root / "usr/lib/x86_64-linux-gnu", root / "lib/x86_64-linux-gnu") if p.exists())
    server = root / "usr/bin/redis-server"
    env = {**os.environ, "LD_LIBRARY_PATH": libs + (":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")}
    version = subprocess.run([str(server), "--version"], env=env, capture_output=True, text=True)
    log(f"redis-server --version: rc {version.returncode} {(version.stdout + version.stderr).strip()[:300]}")
    p = subprocess.run(
        [str(server), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--logfile", str(out / "redis.log"), "--dir", str(root)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if p.returncode != 0:
        problem(f"redis-server failed to start: rc {p.returncode} {(p.stdout + p.stderr).strip()[:500]}")
        return None
    for _ in range(50):
        if port_open(port):
            RESULT["redis"] = version.stdout.strip()
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    problem("redis-server started but its port never opened")
    return None


def stop_redis(port: int) -> None:
    try:
        import redis

        redis.Redis(port=port).shutdown(nosave=True)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------------
def make_manifest(project: Path, path: Path, n: int) -> dict:
    sys.path.insert(0, str(project))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.pairs import make_pairs

    dpq = 64
    pairs = make_pairs(n, seed=0, docs_per_query=dpq, query_words=(4, 16), doc_words=(150, 240))
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


# ---------------------------------------------------------------------------------------------------
def worker_command(pool: str, concurrency: int) -> list[str]:
    """`celery -A worker worker -Q gpu` as users run it; ``--pool`` other than "default" overrides the app's pool."""
    cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "gpu", "--loglevel", "INFO"]
    return cmd if pool == "default" else [*cmd, "--pool", pool, "--concurrency", str(concurrency)]


class Worker:
    def __init__(self, env: dict, project: Path, log_path: Path, cmd: list[str]):  # noqa: D107
        self.log_path = log_path
        self.f = open(log_path, "wb")
        self.t_start = time.monotonic()
        self.p = subprocess.Popen(
            cmd, cwd=project, env=env, stdout=self.f, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> dict:
        """Seconds from spawn to engine_loading, engine_ready and Celery's 'ready.' line."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.text()
            now = time.monotonic() - self.t_start
            for key, pat in (("engine_loading", '"event": "engine_loading"'), ("engine_ready", '"event": "engine_ready"'),
                             ("celery_ready", r"celery@\S+ ready\.")):  # fmt: skip
                if key not in seen and (re.search(pat, t) if key == "celery_ready" else pat in t):
                    seen[key] = now
                    log(f"worker: {key} after {now:.1f} s")
            if "engine_ready" in seen and "celery_ready" in seen:
                return seen
            if self.p.poll() is not None:
                problem(f"worker exited with {self.p.returncode} before it was ready; log tail: {t[-3000:]}")
                return seen
            time.sleep(0.25)
        problem(f"worker not ready after {timeout:.0f} s; log tail: {self.text()[-3000:]}")
        return seen

    def stop(self, timeout: float = 90) -> float:
        t = time.monotonic()
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                problem(f"worker ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        # the process group (prompt helper, any engine core) must be gone before the GPU is reused
        for _ in range(100):
            try:
                os.killpg(self.p.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            problem("worker's process group still alive 10 s after the worker exited: SIGKILL")
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.f.close()
        return time.monotonic() - t


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


def pq_scores(path: str) -> dict:
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    return dict(zip(zip(t["query_id"], t["doc_id"]), t["score"]))


def check_jobs(jobs: list[dict], manifest: Path, bare: dict) -> int:
    """Exactly once, against the manifest, the ledger and the export; scores against bare. Returns the pair count."""
    import sqlite3
    from datetime import datetime

    import pyarrow.parquet as pq

    man = pq.read_table(manifest, columns=["query_id", "doc_id"]).to_pydict()
    keys = list(zip(man["query_id"], man["doc_id"]))
    n = len(keys)

    def ts(v):  # noqa: ANN001, ANN202
        return datetime.fromisoformat(str(v)) if v else None

    for jb in jobs:
        job, status = jb["job"], jb["status"]
        con = sqlite3.connect(jb["db"])
        ex = pq.read_table(jb["export"]).to_pydict()
        ex_keys = list(zip(ex["query_id"], ex["doc_id"]))
        errors = [e for e in ex.get("error", []) if e is not None]
        nulls = sum(1 for s in ex["score"] if s is None)
        db_rows = con.execute("select count(*) from scores where job_id = ?", (job,)).fetchone()[0]
        chunk_rows = con.execute(
            "select id, state, pairs, scored, pair_errors, attempts, started_at, finished_at, worker from chunks where job_id = ? order by started_at",
            (job,),
        ).fetchall()
        con.close()
        jb["chunks"] = [dict(zip(("id", "state", "pairs", "scored", "pair_errors", "attempts", "started_at", "finished_at", "worker"), r)) for r in chunk_rows]
        chunk_text = []
        for r in jb["chunks"]:
            a, b = ts(r["started_at"]), ts(r["finished_at"])
            if a and b:
                r["seconds"] = (b - a).total_seconds()
                chunk_text.append(f"{r['pairs']} in {r['seconds']:.2f} s")
        jb["chunk_text"] = "; ".join(chunk_text)
        chunks_scored = sum(r[3] or 0 for r in chunk_rows)
        once = (
            len(ex_keys) == n and len(set(ex_keys)) == n and set(ex_keys) == set(keys) and nulls == 0 and not errors
            and db_rows == n and chunks_scored == n and status.get("pairs_scored") == n and status.get("state") == "completed"
        )  # fmt: skip
        e2e_scores = dict(zip(ex_keys, ex["score"]))
        cmp = {}
        for name in ("scores", "scores_pass2"):
            if bare.get(name):
                diffs = [abs(e2e_scores[k] - b) for k, b in zip(keys, bare[name]) if e2e_scores.get(k) is not None]
                cmp[name] = (max(diffs) if diffs else None, len(diffs))
        jb["correctness"] = {
            "export_rows": len(ex_keys), "export_distinct": len(set(ex_keys)), "manifest_pairs": n,
            "missing": len(set(keys) - set(ex_keys)), "extra": len(set(ex_keys) - set(keys)), "exactly_once": once,
            "null_scores": nulls, "errors": len(errors), "db_score_rows": db_rows, "chunks_scored_sum": chunks_scored,
            "status_pairs_scored": status.get("pairs_scored"), "status_state": status.get("state"),
            "max_abs_diff_vs_bare_pass1": cmp.get("scores", (None, 0))[0],
            "max_abs_diff_vs_bare_pass2": cmp.get("scores_pass2", (None, 0))[0],
            "compared": cmp.get("scores", (None, 0))[1],
        }  # fmt: skip
    return n


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
    ap.add_argument("--budget", type=float, default=560, help="seconds: skip the optional 2nd bare pass past this")
    ap.add_argument("--smoke", action="store_true", help="CPU: fake engine (plumbing test only)")
    ap.add_argument("--broker", default=None, help="force a broker URL (default: Redis from --debs, else SQLite)")
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
    bare_json = work / "run" / "bare.json"
    bare: dict = {"passes_s": []}
    if args.bare_passes and elapsed() + 120 < args.budget:
        bare_cmd = [sys.executable, str(HERE / "bare.py"), "--manifest", str(manifest), "--json", str(bare_json),
                    "--passes", str(args.bare_passes), "--deadline", str(max(0.0, args.budget - elapsed()))]  # fmt: skip
        if args.smoke:
            bare_cmd.append("--smoke")
        if args.shuffle_pass:
            bare_cmd.append("--shuffle-pass")
        p = subprocess.Popen(bare_cmd, env=env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(out / "bare.log", "w") as f:
            for line in p.stdout:  # type: ignore[union-attr]
                f.write(line)
                if line.startswith("[bare"):
                    print(line, end="", flush=True)
        p.wait()
        if p.returncode != 0 or not bare_json.exists():
            problem(f"bare.py exited {p.returncode}; see bare.log: {(out / 'bare.log').read_text()[-2000:]}")
        else:
            bare = json.loads(bare_json.read_text())
            RESULT["bare"] = {k: v for k, v in bare.items() if not k.startswith("scores")}
    else:
        log("bare skipped: not enough time left")

    # --- 9. correctness, per job ------------------------------------------------------------------------
    n = check_jobs(jobs, manifest, bare)
    if len(jobs) > 1:
        a = pq_scores(jobs[0]["export"])
        b = pq_scores(jobs[-1]["export"])
        RESULT["max_abs_diff_first_vs_last_job"] = max(abs(a[k] - b[k]) for k in a if k in b and a[k] is not None and b[k] is not None)
    if bare.get("scores_pass2"):
        RESULT["max_abs_diff_bare_pass1_vs_pass2"] = max(abs(x - y) for x, y in zip(bare["scores"], bare["scores_pass2"]))
    RESULT["jobs"] = jobs

    # --- 10. table ----------------------------------------------------------------------------------
    bp = bare["passes_s"]
    rows = [
        ("model shape", f"{args.model} (random bf16 weights)" if not args.smoke else "smoke (fake engine)"),
        ("pairs", f"{n:,} ({RESULT['manifest']['queries']} queries x {RESULT['manifest']['docs_per_query']}, row groups of {ROW_GROUP})"),
        ("chunk size / pipeline slice", f"{RESULT['settings'].get('chunk_size')} / {RESULT['settings'].get('pipeline_pairs')}"),
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
    for j, jb in enumerate(jobs):
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
    if "max_abs_diff_first_vs_last_job" in RESULT:
        rows.append(("max |first job - last job|", f"{RESULT['max_abs_diff_first_vs_last_job']:.3e}"))
    if "max_abs_diff_bare_pass1_vs_pass2" in RESULT:
        rows.append(("max |bare pass 1 - pass 2| (cold vs warm cache)", f"{RESULT['max_abs_diff_bare_pass1_vs_pass2']:.3e}"))
    if bare.get("shuffled_s"):
        rows.append(("bare shuffled pass", f"{bare['shuffled_s']:.2f} s = {n / bare['shuffled_s']:,.1f} pairs/s; max |shuffled - pass 1| {bare['shuffled_max_diff']:.3e}"))
    rows += [
        ("engine kwargs", json.dumps(bare.get("kwargs"))),
        ("versions", bare.get("versions", "")),
        ("problems", "; ".join(RESULT["problems"]) or "none"),
    ]
    RESULT["table"] = rows
    save(out)
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)
    (out / "table.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    if not args.broker and broker.startswith("redis"):
        stop_redis(args.port)
    return 0

if __name__ == "__main__":
    sys.exit(main())
