"""Partitioned scores on PostgreSQL (issue 17): `producer prune` time for small and large jobs, with
the rows PostgreSQL deleted (pg_stat_database.tup_deleted) and a worker's write latency to another job
while the prune runs; and migration 0005's time to convert a ledger.

    PYTHONPATH=. python bench/partition_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --prune-rows 10000 --prune-rows 1000000 --migrate-rows 1000000

Scratch databases are created and dropped. Rows are loaded with COPY (no engine, no worker): this
measures the ledger only."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import libpq  # noqa: E402
from bench.write_bench import scratch  # noqa: E402


def _rows(job_id: str, n: int, queries: int = 100):
    per_query = max(1, n // queries)
    for k in range(n):
        yield (job_id, f"q{k // per_query:07d}", f"d{k:09d}", 1, (k * 7919 % 10007) / 10007, None)


def _load(url: str, table: str, job_id: str, n: int) -> None:
    with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} (job_id, query_id, doc_id, chunk_id, score, error) FROM STDIN") as cp:
            for r in _rows(job_id, n):
                cp.write_row(r)


def _tup_deleted(url: str) -> int:
    time.sleep(1.2)  # backends report their counters at most once a second
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT tup_deleted FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def prune_once(url: str, rows: int) -> dict:
    """One finished job of ``rows`` scores, pruned while a writer keeps finishing chunks of another job."""
    from sqlalchemy import update

    from rerankq.store.clock import now
    from rerankq.store.db import get_engine
    from rerankq.store.ledger import Ledger
    from rerankq.store.models import Chunk, Job
    from rerankq.store.partitions import partition_name
    from rerankq.store.records import NewChunk
    from rerankq.store.retention import prune_jobs
    from schemas import InlinePair, InlineSpec

    store = Ledger(url)
    spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
    job, _ = store.create_job(kind="inline", chunks=[NewChunk(spec, rows)])
    other, _ = store.create_job(kind="inline", chunks=[NewChunk(spec, 1)])
    _load(url, partition_name(job), job, rows)
    old = now() - timedelta(days=40)
    with store.session.begin() as s:
        s.execute(update(Job).where(Job.id == job).values(state="completed", created_at=old, finished_at=old))
        s.execute(update(Chunk).where(Chunk.job_id == job).values(state="done", scored=rows))
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {partition_name(job)}")  # as autovacuum would have, after the night
    get_engine(url).dispose()
    deleted0 = _tup_deleted(url)
    stop, waits = threading.Event(), []

    def writer() -> None:  # a worker finishing small chunks of another job, back to back
        with psycopg.connect(libpq(url)) as conn:
            k = 0
            while not stop.is_set():
                t = time.perf_counter()
                conn.execute(
                    "INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score) VALUES (%s, 'q', %s, 1, 0.5)",
                    (other, f"d{k}"),
                )
                conn.commit()
                waits.append(time.perf_counter() - t)
                k += 1
                time.sleep(0.005)

    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    report = prune_jobs(store, 30 * 86400)
    seconds = time.perf_counter() - t0
    time.sleep(0.3)
    stop.set()
    w.join()
    get_engine(url).dispose()
    assert report.jobs == [job], report
    return {
        "rows": rows, "prune_s": round(seconds, 3), "tup_deleted": _tup_deleted(url) - deleted0,
        "writes_during": len(waits), "write_p50_ms": round(statistics.median(waits) * 1000, 2),
        "write_max_ms": round(max(waits) * 1000, 2),
    }  # fmt: skip


def migrate_once(url: str, rows: int, jobs: int) -> dict:
    """A ledger at 0004 holding ``rows`` scores over ``jobs`` jobs, upgraded to 0005."""
    from alembic import command

    from rerankq.store.db import alembic_config, get_engine

    cfg = alembic_config(url)
    command.upgrade(cfg, "0004_job_model")
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    with psycopg.connect(libpq(url)) as conn:
        for j in ids:
            conn.execute(
                "INSERT INTO jobs (id, kind, state, pairs_total, chunks_total, created_at, pairs_reused) "
                "VALUES (%s, 'manifest', 'completed', %s, 1, now(), 0)",
                (j, rows // jobs),
            )
    for j in ids:
        _load(url, "scores", j, rows // jobs)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE scores")
        size = conn.execute("SELECT pg_total_relation_size('scores')").fetchone()[0]
    t0 = time.perf_counter()
    command.upgrade(cfg, "head")
    seconds = time.perf_counter() - t0
    get_engine(url).dispose()
    return {
        "rows": rows, "jobs": jobs, "migrate_s": round(seconds, 1), "table_mb": round(size / 2**20),
        "s_per_10M_rows_extrapolated": round(seconds * 10_000_000 / rows, 1),
    }  # fmt: skip


def many_jobs(url: str, jobs: int) -> dict:
    """What a partition per job costs as jobs accumulate (interactive `/v1/rerank` jobs are jobs too): the
    time to create a one-chunk job (its partition included), and the reads of one job with ``jobs``
    partitions present: status, score_count, the export's ranked rows, diff."""
    from producer.changes import diff
    from producer.export import iter_ranked
    from rerankq.store.ledger import Ledger
    from rerankq.store.records import NewChunk, ScoreRow
    from schemas import InlinePair, InlineSpec

    store = Ledger(url)
    spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
    create: list[float] = []
    for _ in range(jobs):
        t = time.perf_counter()
        store.create_job(kind="inline", chunks=[NewChunk(spec, 16)])
        create.append(time.perf_counter() - t)
    pair = []
    for _ in range(2):  # two finished jobs of 16 pairs, as /v1/rerank leaves them
        job, (m,) = store.create_job(kind="inline", chunks=[NewChunk(spec, 16)])
        store.begin_chunk(job, m.chunk_id, "w", "m")
        store.finish_chunk(job, m.chunk_id, [ScoreRow("q", f"d{k}", k / 16, None) for k in range(16)])
        pair.append(job)

    def timed(fn) -> float:  # noqa: ANN001 - median of 5, in ms
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return round(statistics.median(runs) * 1000, 1)

    return {
        "partitions": jobs + 2, "create_job_ms_p50": round(statistics.median(create) * 1000, 1),
        "create_job_ms_first_100": round(statistics.median(create[:100]) * 1000, 1),
        "create_job_ms_last_100": round(statistics.median(create[-100:]) * 1000, 1),
        "status_ms": timed(lambda: store.status(pair[1])), "score_count_ms": timed(lambda: store.score_count(pair[1])),
        "export_rows_ms": timed(lambda: list(iter_ranked(store, pair[1]))),
        "diff_ms": timed(lambda: diff(store, pair[0], pair[1])),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--prune-rows", type=int, action="append", default=[])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--migrate-rows", type=int, action="append", default=[])
    ap.add_argument("--migrate-jobs", type=int, default=10)
    ap.add_argument("--many-jobs", type=int, action="append", default=[])
    args = ap.parse_args()
    from rerankq.store.db import upgrade

    if args.prune_rows:
        db, drop = scratch(args.url)
        try:
            upgrade(db)
            for rows in args.prune_rows:
                for _ in range(args.reps):
                    print(json.dumps({"bench": "prune", **prune_once(db, rows)}), flush=True)
        finally:
            from rerankq.store.db import get_engine

            get_engine(db).dispose()
            drop()
    for n in args.many_jobs:
        db, drop = scratch(args.url)
        try:
            upgrade(db)
            print(json.dumps({"bench": "many_jobs", **many_jobs(db, n)}), flush=True)
        finally:
            from rerankq.store.db import get_engine

            get_engine(db).dispose()
            drop()
    for rows in args.migrate_rows:
        db, drop = scratch(args.url)
        try:
            print(json.dumps({"bench": "migrate", **migrate_once(db, rows, args.migrate_jobs)}), flush=True)
        finally:
            drop()


if __name__ == "__main__":
    main()
