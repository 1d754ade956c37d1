"""Ledger-only load: N simulated workers play a fleet's SQL traffic against one PostgreSQL, with no
broker, tokenizer or engine (issue 17), to find the ledger's ceiling and what binds first.

    PYTHONPATH=. python bench/ledger_load.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --workers 1 --workers 4 --workers 16 --chunk-size 4096 --chunk-size 16384 --seconds 20

Each simulated worker (a process of its own) loops: take the next pending chunk, ``begin_chunk``,
``finish_chunk`` with ``chunk-size`` rows (COPY into the job's partition + the cache fill, as a real
worker writes them), as fast as the ledger lets it. Its heartbeat thread beats every
``--heartbeat`` seconds with the chunks it holds and then tries the sweeper lease; the lease holder
runs the sweeper's ledger queries (dead workers' chunks, pending chunks nobody holds, release and
forget). A poller reads ``status`` of every job once a second, as `producer wait` does. Meanwhile
pg_stat_activity is sampled for what the database's backends wait on, and CPU is split between
PostgreSQL's backends of this run and the simulated workers. One JSON line per configuration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import libpq  # noqa: E402
from bench.write_bench import scratch  # noqa: E402


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


def _rows(chunk_id: int, n: int):  # noqa: ANN202
    from rerankq.store.records import ScoreRow

    keys = os.urandom(32 * n)
    return [
        ScoreRow(f"c{chunk_id}q{k // 100}", f"d{k}", (k * 7919 % 10007) / 10007, None, keys[32 * k : 32 * k + 32])
        for k in range(n)
    ]


def lock_first_ledger():  # noqa: ANN201 - a Ledger subclass
    """``finish_chunk`` as it was before 7ece5df, measured by --lock-first: the job row locked first and
    held while the chunk's rows are written, so the chunks of one job commit one at a time."""
    from rerankq.store.chunks import _finalize
    from rerankq.store.clock import now
    from rerankq.store.ledger import Ledger
    from rerankq.store.models import Chunk
    from rerankq.store.score_writes import write_chunk_rows

    class LockFirst(Ledger):
        def finish_chunk(self, job_id, chunk_id, rows, then=None):  # noqa: ANN001, ANN202
            with self.session.begin() as s:
                job = self._job(s, job_id, lock=True)
                chunk = s.get(Chunk, chunk_id)
                if chunk is None or chunk.state == "done":
                    return False
                write_chunk_rows(s, job_id, chunk_id, rows, use_copy=self.copy_scores)
                errors = sum(1 for r in rows if r.error is not None)
                chunk.state, chunk.error, chunk.finished_at = "done", None, now()
                chunk.scored, chunk.pair_errors = len(rows) - errors, errors
                _finalize(s, job)
                return True

    return LockFirst


def worker(url: str, index: int, chunks: list, next_chunk, deadline: float, heartbeat: float, out, lock_first: bool) -> None:  # noqa: ANN001
    """One simulated worker: chunks back to back, a heartbeat thread that also sweeps."""
    from rerankq.store.ledger import Ledger
    from rerankq.store.registry import Registry, WorkerInfo

    store, registry = (lock_first_ledger() if lock_first else Ledger)(url, check=False), Registry(url)
    wid = f"sim:{os.getpid()}:{index}"
    registry.register(WorkerInfo(worker_id=wid, host="sim", pid=os.getpid(), model="m", engine={}))
    holding: list[int] = []
    lat: dict[str, list[float]] = {"begin": [], "finish": [], "heartbeat": [], "sweep": []}
    done = {"chunks": 0, "pairs": 0}
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            t = time.perf_counter()
            registry.heartbeat(wid, holding=list(holding), state="ready")
            lat["heartbeat"].append(time.perf_counter() - t)
            if registry.acquire_lease("sweeper", wid, 3 * heartbeat):
                t = time.perf_counter()
                store.reclaim_from_dead(60.0)
                registry.release_dead(60.0)
                store.unheld_pending(older_than=heartbeat)
                registry.forget(older_than=7 * 86400)
                lat["sweep"].append(time.perf_counter() - t)

    hb = threading.Thread(target=beat, daemon=True)
    hb.start()
    while time.time() < deadline:
        with next_chunk.get_lock():
            i = next_chunk.value
            next_chunk.value += 1
        if i >= len(chunks):
            break
        job_id, chunk_id, size = chunks[i]
        rows = _rows(chunk_id, size)
        t = time.perf_counter()
        assert store.begin_chunk(job_id, chunk_id, wid, "m") is None
        lat["begin"].append(time.perf_counter() - t)
        holding.append(chunk_id)
        t = time.perf_counter()
        assert store.finish_chunk(job_id, chunk_id, rows)
        lat["finish"].append(time.perf_counter() - t)
        holding.remove(chunk_id)
        if time.time() <= deadline:
            done["chunks"] += 1
            done["pairs"] += size
    stop.set()
    out.put({"done": done, "lat": lat, "cpu": sum(psutil.Process().cpu_times()[:2])})


def poller(url: str, jobs: list[str], deadline: float, out) -> None:  # noqa: ANN001
    from rerankq.store.ledger import Ledger

    store, lat = Ledger(url, check=False), []
    while time.time() < deadline:
        for j in jobs:
            t = time.perf_counter()
            store.status(j)
            lat.append(time.perf_counter() - t)
        time.sleep(1.0)
    out.put({"status": lat, "cpu": sum(psutil.Process().cpu_times()[:2])})


class BackendCpu:
    """CPU seconds of this run's PostgreSQL backends, each counted from first to last sight (pooled
    connections come and go: a sum over the backends alive at two instants would lose some)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[float, float]] = {}

    def sample(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                cpu = sum(psutil.Process(pid).cpu_times()[:2])
            except psutil.Error:
                continue
            first = self.seen.get(pid, (cpu, cpu))[0]
            self.seen[pid] = (first, cpu)

    def seconds(self) -> float:
        return sum(last - first for first, last in self.seen.values())


def run(url: str, workers: int, chunk_size: int, seconds: float, jobs: int, heartbeat: float, lock_first: bool) -> dict:
    from rerankq.store.db import get_engine, upgrade
    from rerankq.store.ledger import Ledger
    from rerankq.store.records import NewChunk
    from schemas import InlinePair, InlineSpec

    db, drop = scratch(url)
    try:
        upgrade(db)
        store = Ledger(db)
        spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
        # more chunks than the fleet can finish: ~120k pairs/s is well past this VM
        per_job = max(50, int(120_000 * seconds / chunk_size / jobs) + 1)
        chunks = []
        for _ in range(jobs):
            job, messages = store.create_job(kind="inline", chunks=[NewChunk(spec, chunk_size)] * per_job)
            chunks += [(job, m.chunk_id, chunk_size) for m in messages]
        chunks.sort(key=lambda c: c[1])  # jobs interleaved as the queue would deliver them
        job_ids = sorted({c[0] for c in chunks})
        get_engine(db).dispose()
        ctx = mp.get_context("fork")
        next_chunk, out = ctx.Value("l", 0), ctx.Queue()
        start = time.time() + 1.0
        deadline = start + seconds
        procs = [ctx.Process(target=worker, args=(db, i, chunks, next_chunk, deadline, heartbeat, out, lock_first)) for i in range(workers)]
        procs.append(ctx.Process(target=poller, args=(db, job_ids, deadline, out)))
        for p in procs:
            p.start()
        waits: Counter = Counter()
        samples = 0
        time.sleep(max(0.0, start - time.time()))
        cpu0, backends = psutil.cpu_times(), BackendCpu()
        with psycopg.connect(libpq(db), autocommit=True) as conn:
            name = db.rsplit("/", 1)[1]
            while time.time() < deadline:
                pids = []
                for pid, state, wtype, wevent in conn.execute(
                    "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                    (name,),
                ):
                    pids.append(pid)
                    if state == "active":
                        waits[f"{wtype}:{wevent}" if wtype else "CPU (running)"] += 1
                backends.sample(pids)
                samples += 1
                time.sleep(0.2)
        pg_cpu = backends.seconds()
        cpu1 = psutil.cpu_times()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        busy = sum(getattr(cpu1, f) - getattr(cpu0, f) for f in ("user", "system", "nice", "softirq", "irq"))
        total = busy + (cpu1.idle - cpu0.idle) + (cpu1.iowait - cpu0.iowait)
        ws = [r for r in results if "done" in r]
        lat = {k: [x for r in ws for x in r["lat"][k]] for k in ("begin", "finish", "heartbeat", "sweep")}
        status = next(r["status"] for r in results if "status" in r)
        pairs = sum(r["done"]["pairs"] for r in ws)
        n_chunks = sum(r["done"]["chunks"] for r in ws)
        return {
            "workers": workers, "chunk_size": chunk_size, "jobs": jobs, "lock_first": lock_first, "seconds": seconds, "heartbeat_s": heartbeat,
            "pairs_per_s": round(pairs / seconds), "chunks_per_s": round(n_chunks / seconds, 2),
            "finish_ms_p50": _pct(lat["finish"], 0.5), "finish_ms_p95": _pct(lat["finish"], 0.95),
            "begin_ms_p50": _pct(lat["begin"], 0.5), "begin_ms_p95": _pct(lat["begin"], 0.95),
            "heartbeat_ms_p95": _pct(lat["heartbeat"], 0.95), "sweep_ms_p95": _pct(lat["sweep"], 0.95),
            "status_ms_p50": _pct(status, 0.5), "status_ms_p95": _pct(status, 0.95),
            "machine_cpu_busy": round(busy / total, 2) if total else None,
            "pg_cpu_cores": round(pg_cpu / seconds, 2),
            "workers_cpu_cores": round(sum(r["cpu"] for r in results) / seconds, 2),
            "active_backends_avg": round(sum(waits.values()) / max(1, samples), 2),
            "waits": {k: round(v / max(1, samples), 2) for k, v in waits.most_common(6)},
            "load_avg_1m": round(os.getloadavg()[0], 1),
        }  # fmt: skip
    finally:
        from rerankq.store.db import get_engine

        get_engine(db).dispose()
        drop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--workers", type=int, action="append")
    ap.add_argument("--chunk-size", type=int, action="append")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--heartbeat", type=float, default=10.0)
    ap.add_argument("--lock-first", action="store_true", help="finish_chunk as before 7ece5df: job row locked, then rows")
    args = ap.parse_args()
    for chunk_size in args.chunk_size or [16384]:
        for workers in args.workers or [1, 4, 16]:
            r = run(args.url, workers, chunk_size, args.seconds, args.jobs, args.heartbeat, args.lock_first)
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
