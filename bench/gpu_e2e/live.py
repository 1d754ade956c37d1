"""Issue 28 on one GPU, in one call: /v1/rerank latency of rerankq's live lane against `vllm serve` (the peer).

1. The peer: vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`, the pooling runner and the
   Qwen3-Reranker overrides, vLLM's defaults otherwise) on the checkpoint; its /v1/rerank gets the card's
   prefix/suffix around query and documents, as vLLM's own Qwen3-Reranker example sends them, so both sides
   score the same tokens. Idle: each (documents, rate) load. Then it is stopped.
2. rerankq on the same GPU: `celery -A worker worker -Q gpu` (defaults: live lane on, priority scheduling) and
   `producer serve`, SQLite ledger, the kit's Redis. Idle: the same loads. Then a night (`producer submit` of
   --night-pairs unique pairs) and, while it runs, windows alternating without and with live traffic: the
   night's pairs/s per window from its chunks' finish times in the ledger, the live latency from the client.

Every load is open-loop at a fixed rate, bounded in count and seconds, to loopback only. Prints a table last
and writes $OUT/live_result.json. Usage (GPU machine, bundle unpacked; extra wheels for uvicorn/multipart):
  bash bench/gpu_e2e/run_live.sh KIT 0.6b [--budget 560]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from procs import Worker, port_open, start_redis, stop_redis, worker_command
from runlog import RESULT, elapsed, log, problem, run, save

HERE = Path(__file__).resolve().parent
PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
          'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')  # fmt: skip
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCT = "Given a web search query, retrieve relevant passages that answer the query"
OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True}
MAX_REQUESTS = 2000  # no load sends more, whatever the arguments


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


class Load:
    """Open-loop POSTs at ``rate``/s, each on its own thread, at most ``count`` and ``seconds``; latencies of 200s."""

    def __init__(self, url: str, body) -> None:  # noqa: ANN001
        self.url, self.body = url, body
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self._lock = threading.Lock()

    def _one(self, i: int) -> None:
        import requests

        start = time.perf_counter()
        try:
            status = str(requests.post(self.url, json=self.body(i), timeout=60).status_code)
        except requests.RequestException as exc:
            status = type(exc).__name__
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == "200":
                self.latencies.append(time.perf_counter() - start)

    def run(self, rate: float, seconds: float) -> dict:
        count = min(MAX_REQUESTS, max(1, int(rate * seconds)))
        threads, start = [], time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            t = threading.Thread(target=self._one, args=(i,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(90)
        lat = self.latencies
        return {"n": len(lat), "p50_s": round(pct(lat, 0.5), 4), "p95_s": round(pct(lat, 0.95), 4),
                "p99_s": round(pct(lat, 0.99), 4), "statuses": self.statuses}  # fmt: skip


def documents(n: int, seed: int) -> tuple[list[str], list[str]]:
    sys.path.insert(0, str(HERE.parents[1]))
    from bench.pairs import make_pairs

    pairs = make_pairs(n, seed=seed, docs_per_query=64, query_words=(4, 16), doc_words=(150, 240))
    return [p.query for p in pairs], [p.document for p in pairs]


def body_factory(kind: str, docs: int, queries: list[str], texts: list[str], tag: str):  # noqa: ANN201
    def body(i: int) -> dict:
        q = f"{tag} {i} {queries[i % len(queries)]}"
        ds = [texts[(i * docs + d) % len(texts)] for d in range(docs)]
        if kind == "peer":  # the card's template around the texts, as vLLM's Qwen3-Reranker example sends them
            return {"model": "m", "query": f"{PREFIX}<Instruct>: {INSTRUCT}\n<Query>: {q}\n",
                    "documents": [f"<Document>: {d}{SUFFIX}" for d in ds]}  # fmt: skip
        return {"query": q, "documents": ds}

    return body


def loads(url: str, kind: str, shapes: list[tuple[int, float]], seconds: float, queries, texts, tag: str) -> dict:  # noqa: ANN001
    Load(url, body_factory(kind, 16, queries, texts, tag + "-warm")).run(2, 3)
    out = {}
    for docs, rate in shapes:
        r = Load(url, body_factory(kind, docs, queries, texts, f"{tag}-{docs}-{rate}")).run(rate, seconds)
        out[f"{docs}x{rate:g}"] = r
        log(f"{kind} {tag}: {docs} documents at {rate:g}/s: {r}")
    return out


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def night_rate(db: Path, job: str, t0: float, t1: float) -> float:
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT finished_at, pairs FROM chunks WHERE job_id = ? AND finished_at IS NOT NULL", (job,)).fetchall()
    pairs = 0
    for finished, n in rows:
        at = datetime.fromisoformat(finished)
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
        pairs += n if t0 <= at < t1 else 0
    return round(pairs / (t1 - t0), 1)


def night_manifest(path: Path, n: int, queries: list[str], texts: list[str]) -> None:
    """``n`` unique pairs (a base text plus its row number), 64 per query: no pair repeats, so none is reused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dpq = 64
    pq.write_table(pa.table({
        "query_id": [f"q{i // dpq:06d}" for i in range(n)],
        "query": [queries[(i // dpq) % len(queries)] for i in range(n)],
        "doc_id": [f"d{i:08d}" for i in range(n)],
        "document": [f"{texts[i % len(texts)]} #{i}" for i in range(n)],
    }), path, row_group_size=2048)  # fmt: skip


def main() -> int:  # noqa: PLR0915
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="0.6b")
    ap.add_argument("--tok", required=True)
    ap.add_argument("--debs", required=True)
    ap.add_argument("--work", default="/tmp/live")
    ap.add_argument("--port", type=int, default=6379, help="Redis")
    ap.add_argument("--rates", default="1,5,20")
    ap.add_argument("--docs", default="16,64")
    ap.add_argument("--seconds", type=float, default=8.0, help="per idle load")
    ap.add_argument("--night-pairs", type=int, default=400_000)
    ap.add_argument("--window", type=float, default=15.0)
    ap.add_argument("--night-loads", default="16x20,16x5,64x5", help="DOCSxRATE loads during the night, one window each")
    ap.add_argument("--budget", type=float, default=560)
    ap.add_argument("--ready-timeout", type=float, default=300)
    ap.add_argument("--ckpt", help="an existing checkpoint instead of mkckpt.py's (CPU smoke: the tiny model)")
    ap.add_argument("--peer-arg", action="append", default=[], help="more vllm serve arguments (CPU smoke: --dtype=float32)")
    ap.add_argument("--hide-torchvision", action="store_true",
                    help="CPU smoke: the peer's processes hide torchvision as rerankq's do (the CPU venv's is a CUDA build)")
    ap.add_argument("--set", action="append", default=[], metavar="RERANKQ_X=V", help="more worker/service settings")
    args = ap.parse_args()
    out = Path(os.environ.get("OUT") or "/tmp/live-out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    project = HERE.parents[1]
    RESULT.update(model=args.model, date_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), args=vars(args))
    shapes = [(int(d), float(r)) for d in args.docs.split(",") for r in args.rates.split(",")]

    broker = start_redis(Path(args.debs), Path("/tmp/rroot"), args.port, out)
    if broker is None:
        save(out)
        return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKQ_")}
    env["PYTHONPATH"] = str(project) + ":" + os.environ.get("PYTHONPATH", "")
    ckpt = Path(args.ckpt) if args.ckpt else work / f"ckpt-{args.model}"
    rc, s = 0, 0.0
    if not args.ckpt:
        rc, _, s = run([sys.executable, str(HERE / "mkckpt.py"), "--model", args.model, "--dir", str(ckpt), "--tok", args.tok],
                       env, project, out, "mkckpt", timeout=300)  # fmt: skip
    if rc != 0:
        save(out)
        return 1
    t = time.monotonic()
    queries, texts = documents(4096, seed=3)
    night = work / "night.parquet"
    night_manifest(night, args.night_pairs, queries, texts)
    log(f"checkpoint {s:.1f} s; texts and a {args.night_pairs:,}-pair night manifest in {time.monotonic() - t:.1f} s")

    # --- 1. the peer: vLLM's own server ---------------------------------------------------------------
    peer_port = 8011
    peer_env = dict(env)
    if args.hide_torchvision:  # rerankq's sitecustomize runs first in the server and the engine core it spawns
        peer_env["PYTHONPATH"] = f"{project / 'rerankq' / 'child_guard'}:{env['PYTHONPATH']}"
    peer_log = open(out / "peer.log", "wb")  # noqa: SIM115
    t = time.monotonic()
    peer = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(ckpt), "--served-model-name", "m",
         "--runner", "pooling", "--hf-overrides", json.dumps(OVERRIDES), "--host", "127.0.0.1", "--port", str(peer_port), *args.peer_arg],
        env=peer_env, cwd=work, stdout=peer_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    if not wait_http(f"http://127.0.0.1:{peer_port}/health", args.ready_timeout, peer):
        problem(f"vllm serve not up: {(out / 'peer.log').read_text()[-3000:]}")
        stop(peer)
        save(out)
        return 1
    RESULT["peer_start_s"] = round(time.monotonic() - t, 1)
    log(f"peer up in {RESULT['peer_start_s']} s")
    RESULT["peer_idle"] = loads(f"http://127.0.0.1:{peer_port}/v1/rerank", "peer", shapes, args.seconds, queries, texts, "peer")
    stop(peer)
    save(out)

    # --- 2. rerankq: worker + producer serve --------------------------------------------------------------
    db = work / "ledger.db"
    db.unlink(missing_ok=True)
    renv = {**env, "RERANKQ_MODEL": str(ckpt), "RERANKQ_BROKER_URL": broker, "RERANKQ_DATABASE_URL": f"sqlite:///{db}",
            "RERANKQ_MANIFEST_ROOTS": json.dumps([str(work)]), "RERANKQ_LOG_JSON": "true",
            **dict(item.split("=", 1) for item in args.set)}  # fmt: skip
    producer = [sys.executable, "-m", "producer.cli"]
    run(producer + ["db", "upgrade"], renv, project, out, "db_upgrade")
    worker = Worker(renv, project, out / "worker.log", worker_command("default", 2))
    svc_port = 8012
    service = subprocess.Popen(producer + ["serve", "--host", "127.0.0.1", "--port", str(svc_port)], env=renv, cwd=project,
                               stdout=open(out / "service.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        ready = worker.wait_ready(args.ready_timeout)
        RESULT["worker_ready"] = ready
        if "engine_ready" not in ready or not port_open(svc_port):
            problem(f"rerankq not up (service port open: {port_open(svc_port)}); {(out / 'service.log').read_text()[-2000:]}")
            return 1
        url = f"http://127.0.0.1:{svc_port}/v1/rerank"
        RESULT["rerankq_idle"] = loads(url, "rerankq", shapes, args.seconds, queries, texts, "idle")
        save(out)

        t = time.monotonic()
        rc, stdout, s_submit = run(producer + ["submit", str(night), "--name", "night", "--no-reuse"], renv, project, out, "submit", timeout=300)
        job = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        log(f"night {job}: submit rc {rc} in {s_submit:.1f} s")
        time.sleep(5)
        windows = []
        for spec in args.night_loads.split(","):
            if elapsed() + 2 * args.window + 20 > args.budget:
                log(f"night load {spec} skipped: budget")
                break
            docs, rate = spec.split("x")
            t0 = time.time()
            time.sleep(args.window)
            quiet = night_rate(db, job, t0, time.time())
            t0 = time.time()
            r = Load(url, body_factory("rerankq", int(docs), queries, texts, f"night-{spec}")).run(float(rate), args.window)
            time.sleep(max(0.0, t0 + args.window - time.time()))
            busy = night_rate(db, job, t0, time.time())
            live_pairs = float(rate) * int(docs)
            windows.append({"load": spec, **r, "night_pairs_s_without": quiet, "night_pairs_s_with": busy, "live_pairs_s": live_pairs})
            log(f"night window {spec}: live {r}; night {quiet} pairs/s without, {busy} with (live offers {live_pairs:g} pairs/s)")
        RESULT["night"] = {"job": job, "pairs": args.night_pairs, "windows": windows}
        status = subprocess.run(producer + ["status", job, "--json"], env=renv, cwd=project, capture_output=True, text=True)
        RESULT["night"]["status"] = json.loads(status.stdout) if status.returncode == 0 else status.stderr[-500:]
        subprocess.run(producer + ["cancel", job], env=renv, cwd=project, capture_output=True, text=True)
        log(f"night phase {time.monotonic() - t:.1f} s")
    finally:
        stop(service, 30)
        worker.stop(60)
        stop_redis(args.port)
        save(out)
    table(out)
    return 0


def table(out: Path) -> None:
    lines = ["| load | peer p50 / p95 / p99 s | rerankq idle p50 / p95 / p99 s | p50 ratio |", "|---|---|---|---:|"]
    for key, p in RESULT.get("peer_idle", {}).items():
        r = RESULT.get("rerankq_idle", {}).get(key, {})
        ratio = r.get("p50_s", float("nan")) / p["p50_s"] if p.get("p50_s") else float("nan")
        lines.append(f"| {key} | {p['p50_s']} / {p['p95_s']} / {p['p99_s']} | {r.get('p50_s')} / {r.get('p95_s')} / {r.get('p99_s')} | {ratio:.2f} |")
    lines += ["", "| night load | live p50 / p95 / p99 s | night pairs/s without → with | live pairs/s offered |", "|---|---|---|---:|"]
    for w in RESULT.get("night", {}).get("windows", []):
        lines.append(f"| {w['load']} | {w['p50_s']} / {w['p95_s']} / {w['p99_s']} | {w['night_pairs_s_without']} → {w['night_pairs_s_with']} | {w['live_pairs_s']:g} |")
    lines.append(f"\nproblems: {'; '.join(RESULT['problems']) or 'none'}")
    text = "\n".join(lines)
    (out / "live_table.md").write_text(text + "\n")
    print("\n" + text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
