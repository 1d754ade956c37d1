"""Ledger write path: rows/s of `Ledger.finish_chunk` (one transaction per chunk, bulk upsert).

    python bench/write_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test --chunks 20 --chunk-size 16384

A GPU scores ~1,000-1,300 pairs/s with the 0.6B model (bench/RESULTS.md): the write path must be far faster.
Creates a scratch database (PostgreSQL) or file (SQLite), drops it afterwards.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid

import psycopg

from rerankq.store.db import upgrade
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from schemas import InlinePair, InlineSpec


def scratch(url: str) -> tuple[str, callable]:
    if url.startswith("sqlite"):
        path = tempfile.mktemp(suffix=".db")
        return f"sqlite:///{path}", lambda: None
    admin = url.replace("+psycopg", "")
    name = f"rq_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    return url.rsplit("/", 1)[0] + f"/{name}", drop


def run(url: str, chunks: int, chunk_size: int, copy: bool = True) -> dict:
    db, drop = scratch(url)
    try:
        upgrade(db)
        store = Ledger(db)
        store.copy_scores = copy
        spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
        job, messages = store.create_job(kind="inline", chunks=[NewChunk(spec, chunk_size)] * chunks)
        rng = random.Random(0)
        times = []
        for c, m in enumerate(messages):
            rows = [ScoreRow(f"q{c:04d}-{i // 100:04d}", f"doc-{i:06d}", rng.random(), None) for i in range(chunk_size)]
            store.begin_chunk(job, m.chunk_id, "bench", "none")
            t0 = time.perf_counter()
            store.finish_chunk(job, m.chunk_id, rows)
            times.append(time.perf_counter() - t0)
        assert store.score_count(job) == chunks * chunk_size
        per = statistics.median(times)
        backend = db.split(":")[0] + ("" if copy or not db.startswith("postgresql") else " (INSERT, no COPY)")
        return {"backend": backend, "chunk_size": chunk_size, "chunks": chunks, "median_s_per_chunk": round(per, 4), "rows_per_s": round(chunk_size / per)}
    finally:
        drop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", default=None)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--chunk-size", type=int, default=16384)
    args = ap.parse_args()
    urls = args.url or ["postgresql+psycopg://postgres@127.0.0.1:5432/test", "sqlite:///"]
    print("| backend | rows/chunk | chunks | median s/chunk | rows/s |\n|---|---|---|---|---|")
    runs = [(u, True) for u in urls] + [(u, False) for u in urls if u.startswith("postgresql")]
    for url, copy in runs:
        r = run(url, args.chunks, args.chunk_size, copy)
        print(f"| {r['backend']} | {r['chunk_size']} | {r['chunks']} | {r['median_s_per_chunk']} | {r['rows_per_s']:,} |")


if __name__ == "__main__":
    main()
