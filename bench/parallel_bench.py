"""The producer's read steps per core and in parallel (issue 30): export, the changes export and diff of
two nights loaded straight into a scratch PostgreSQL database (COPY, no workers: this measures the
steps, not the scoring), each change to the export measured on its own.

    PYTHONPATH=. python bench/parallel_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --pairs 1000000 --reps 2

Variants of the export (all write the same Parquet file):
  before        the previous code: ranks in a subquery re-sorted by rank (two sorts), rows as dicts
  columns       the same SQL, batches built column by column
  one-sort      the rows ordered by the rank's own keys (one sort), columns, through a cursor
  copy-binary   one-sort's query through COPY ... (FORMAT BINARY), psycopg's binary loaders (the code now)
  parallel-2    the code now, --parallel 2 (two processes forked from a forkserver, a dataset directory)
Each run reports wall seconds and CPU seconds of the client (this process and its children) and of the
database backends serving it (sampled from /proc every 0.1 s by the bench database's name): on a shared
machine CPU seconds per million pairs are the per-core rate; wall time depends on the load."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import libpq  # noqa: E402
from bench.write_bench import scratch  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


class BackendCpu:
    """CPU seconds of the PostgreSQL backends connected to ``dbname`` (each pid's last reading)."""

    def __init__(self, dbname: str):
        self.dbname, self.seen, self._stop = dbname.encode(), {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.1)

    def sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if not cmd.startswith(b"postgres: ") or self.dbname not in cmd:
                    continue
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.seen[int(pid)] = (int(fields[11]) + int(fields[12])) / TICK

    def total(self) -> float:
        self.sample()
        return sum(self.seen.values())

    def stop(self) -> None:
        self._stop.set()


def client_cpu() -> float:
    """This process, its reaped children and its live children with theirs (the forkserver's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            live += sum(int(f) for f in fields[11:15]) / TICK  # utime, stime, cutime, cstime
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live


def load_nights(url: str, pairs: int, docs: int = 100) -> tuple[str, str]:
    """Two finished jobs of ``pairs`` scores (``docs`` per query); night 2 changes 5 % of the scores,
    drops 1 % of the pairs and adds 1 % new ones."""
    from sqlalchemy import update

    from rerankq.store.ledger import Ledger
    from rerankq.store.models import Job
    from rerankq.store.partitions import partition_name
    from rerankq.store.records import NewChunk
    from schemas import InlinePair, InlineSpec

    store = Ledger(url)
    spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
    jobs = []
    for night in (1, 2):
        job, _ = store.create_job(kind="inline", chunks=[NewChunk(spec, pairs)])
        with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
            cols = "job_id, query_id, doc_id, chunk_id, score, error, logit"
            with cur.copy(f"COPY {partition_name(job)} ({cols}) FROM STDIN") as cp:
                for k in range(pairs):
                    if night == 2 and k % 100 == 7:
                        continue  # removed
                    x = (k * 7919 % 10007) / 1000.0 - 5.0
                    if night == 2 and k % 20 == 3:
                        x += 0.5  # changed
                    cp.write_row((job, f"q{k // docs:07d}", f"d{k:09d}", 1, 1 / (1 + 2.718281828 ** -x), None, x))
                if night == 2:
                    for k in range(0, pairs, 100):
                        cp.write_row((job, f"q{k // docs:07d}", f"n{k:09d}", 1, 0.5, None, 0.0))
        with store.session.begin() as s:
            s.execute(update(Job).where(Job.id == job).values(state="completed"))
        jobs.append(job)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for job in jobs:
            conn.execute(f"VACUUM ANALYZE {partition_name(job)}")
    return jobs[0], jobs[1]


def before_export(store, job: str, out: Path) -> int:  # noqa: ANN001
    """The export as the code before issue 30 wrote it: window in a subquery, ordered by rank, dict rows."""
    import pyarrow as pa
    from sqlalchemy import func, select

    from producer.export import export_schema
    from producer.table_files import table_writer
    from rerankq.store.models import Score

    schema = export_schema(store, job)
    order = (Score.logit.desc().nulls_last(), Score.score.desc().nulls_last(), Score.doc_id.collate("C"))
    rank = func.row_number().over(partition_by=Score.query_id, order_by=order).label("rank")
    inner = select(Score.query_id, Score.doc_id, Score.score, Score.logit, Score.error, rank).where(Score.job_id == job).subquery()
    stmt = select(inner).order_by(inner.c.query_id.collate("C"), inner.c.rank)
    rows, batch = 0, []
    with store.session() as s, table_writer(out, schema) as writer:
        for row in s.execute(stmt.execution_options(yield_per=50_000)).mappings():
            item = dict(row)
            if item["score"] is None:
                item["rank"] = None
            batch.append(item)
            if len(batch) >= 50_000:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                rows, batch = rows + len(batch), []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            rows += len(batch)
    return rows


def columns_two_sorts(store, job: str, out: Path) -> int:  # noqa: ANN001
    import pyarrow as pa
    from sqlalchemy import case, func, select

    from producer.export import export_schema
    from producer.table_files import table_writer
    from rerankq.store.models import Score

    schema = export_schema(store, job)
    order = (Score.logit.desc().nulls_last(), Score.score.desc().nulls_last(), Score.doc_id.collate("C"))
    number = func.row_number().over(partition_by=Score.query_id, order_by=order)
    rank = case((Score.score.is_(None), None), else_=number).label("rank")
    inner = select(Score.query_id, Score.doc_id, Score.score, Score.logit, rank, Score.error).where(Score.job_id == job).subquery()
    stmt = select(inner).order_by(inner.c.query_id.collate("C"), inner.c.rank)
    rows = 0
    with store.session() as s, table_writer(out, schema) as writer:
        for part in s.execute(stmt.execution_options(yield_per=50_000)).partitions():
            cols = zip(*part, strict=True)
            writer.write_batch(pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, schema)], schema=schema))
            rows += len(part)
    return rows


def cursor_one_sort(store, job: str, out: Path) -> int:  # noqa: ANN001
    """The one-sort query read through a server-side cursor (SQLAlchemy rows), as before COPY."""
    from producer.export import _batch, _ranked_select, export_schema
    from producer.parallel_pieces import WHOLE
    from producer.table_files import table_writer

    schema = export_schema(store, job)
    stmt = _ranked_select(store, job, False, WHOLE)
    rows = 0
    with store.session() as s, table_writer(out, schema) as writer:
        for part in s.execute(stmt.execution_options(yield_per=50_000)).partitions():
            writer.write_batch(_batch(part, schema))
            rows += len(part)
    return rows


def measure(name: str, fn, backends: BackendCpu, pairs: int, log: list) -> None:  # noqa: ANN001
    c0, b0, t0 = client_cpu(), backends.total(), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    time.sleep(0.3)  # the backends' last readings
    client, backend = client_cpu() - c0, backends.total() - b0
    row = {
        "step": name, "pairs": pairs, "wall_s": round(wall, 2), "client_cpu_s": round(client, 2), "db_cpu_s": round(backend, 2),
        "cpu_s_per_M_pairs": round((client + backend) * 1e6 / pairs, 2), "load1": round(os.getloadavg()[0], 1),
        "result": result if isinstance(result, int | dict) else str(result)[:200],
    }  # fmt: skip
    log.append(row)
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated steps to run (default: all)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from dataclasses import asdict

    from producer.changes import diff, export_changes
    from producer.export import export_file
    from producer.parallel_steps import changes_parallel, diff_parallel, export_parallel
    from rerankq.store.db import get_engine, upgrade
    from rerankq.store.ledger import Ledger

    db, drop = scratch(args.url)
    work = Path(tempfile.mkdtemp(prefix="parallel-bench-"))
    log: list = []
    backends = BackendCpu(db.rsplit("/", 1)[1])
    try:
        upgrade(db)
        t = time.perf_counter()
        old, new = load_nights(db, args.pairs)
        print(json.dumps({"loaded_s": round(time.perf_counter() - t, 1), "pairs": args.pairs}), flush=True)
        get_engine(db).dispose()
        store = Ledger(db)
        steps = {
            "export before": lambda: before_export(store, new, work / "a.parquet"),
            "export columns": lambda: columns_two_sorts(store, new, work / "b.parquet"),
            "export one-sort": lambda: cursor_one_sort(store, new, work / "c.parquet"),
            "export copy-binary": lambda: export_file(store, new, work / "d.parquet"),
            "export parallel-1": lambda: export_parallel(store, new, work / "e1", 1),
            "export parallel-2": lambda: export_parallel(store, new, work / "e2", 2),
            "changes one": lambda: export_changes(store, old, new, work / "f.parquet"),
            "changes parallel-2": lambda: changes_parallel(store, old, new, work / "g", 2),
            "diff one": lambda: asdict(diff(store, old, new)) | {"examples": None},
            "diff parallel-2": lambda: asdict(diff_parallel(store, old, new, parallel=2)) | {"examples": None},
        }
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        for _ in range(args.reps):
            for name, fn in steps.items():
                if only and name not in only:
                    continue
                measure(name, fn, backends, args.pairs, log)
    finally:
        backends.stop()
        get_engine(db).dispose()
        shutil.rmtree(work, ignore_errors=True)
        drop()
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in log))


if __name__ == "__main__":
    main()
