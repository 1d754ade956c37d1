"""Submission time with score reuse vs today's plain submit, same manifest, SQLite and PostgreSQL.

    python bench/reuse_bench.py --pairs 2000000 --unchanged 0.95 [--url sqlite --url postgresql+psycopg://…/test]

Night 1's cache is filled as workers would fill it (every pair's key in the workers' context, bulk
inserted: no engine involved), then night 2 (the same manifest with 5 % of the documents edited) is
submitted twice in fresh processes: ``reuse=False`` (today's path) and ``reuse=True``. Each submit runs
in its own child process so its peak RSS (the memory bound) is measured alone. Needs a Redis (the
chunks are enqueued): RERANKQ_BROKER_URL. Creates and drops a scratch database / file per backend.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.write_bench import scratch  # noqa: E402

WORDS = (
    "search index ranking query document passage relevance vector neural model retrieval answer question "
    "knowledge base nightly batch worker score chunk river mountain village music album protein energy law"
).split()


def write_nights(root: Path, pairs: int, unchanged: float, docs_per_query: int = 100, seed: int = 0) -> tuple[Path, Path]:
    """Night 1 and night 2 manifests (8 files each); night 2 edits 1 - ``unchanged`` of the documents."""
    rng = random.Random(seed)
    n1, n2 = root / "night1", root / "night2"
    n1.mkdir(parents=True, exist_ok=True)
    n2.mkdir(parents=True, exist_ok=True)
    files, per_file = 8, pairs // 8
    row = 0
    for f in range(files):
        cols: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "document": []}
        for _ in range(per_file):
            q = row // docs_per_query
            if row % docs_per_query == 0 or not cols["query"]:
                query = f"query {q} about " + " ".join(rng.choices(WORDS, k=6))
            cols["query_id"].append(f"q{q:07d}")
            cols["query"].append(query)
            cols["doc_id"].append(f"d{row:08d}")
            cols["document"].append(" ".join(rng.choices(WORDS, k=rng.randint(15, 35))))
            row += 1
        table = pa.table(cols)
        pq.write_table(table, n1 / f"part-{f:02d}.parquet", row_group_size=16384)
        docs = cols["document"]
        edit = rng.sample(range(per_file), round(per_file * (1 - unchanged)))
        for i in edit:
            docs[i] = "edited " + docs[i]
        pq.write_table(table.set_column(3, "document", pa.array(docs)), n2 / f"part-{f:02d}.parquet", row_group_size=16384)
    return n1, n2


def fill_cache(url: str, model: str, manifest: Path, age_days: float = 1.0) -> dict:
    """Night 1 as scored by workers: their context recorded, every pair's key cached."""
    from producer.manifest import CheckedManifest
    from rerankq.score_key import DEFAULT_INSTRUCTION, context_for, pair_keys
    from rerankq.settings import Settings
    from rerankq.store.cache_gens import SPREAD_DAYS, day_of
    from rerankq.store.clock import now
    from rerankq.store.contexts import record_worker_context
    from rerankq.store.ledger import Ledger

    settings = Settings(database_url=url, model=model, dtype="float32")
    store = Ledger(url)
    ctx = context_for(settings, model)
    record_worker_context(store, "bench:1", settings, ctx)
    raw_engine = store.session.kw["bind"]
    t0 = time.perf_counter()
    from datetime import timedelta

    t = now() - timedelta(days=age_days)  # night 1 was yesterday (or, for a touch-due night, a week+ ago)
    with raw_engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()

        def add(values: dict) -> None:
            keys = pair_keys(ctx.digest, [None] * len(values["query"]), values["query"], values["document"], DEFAULT_INSTRUCTION)
            # generations spread over the next SPREAD_DAYS days, as workers write them (rerankq/store/cache_gens.py)
            rows = [(k, random.random(), t, day_of(t) + random.randrange(SPREAD_DAYS)) for k in keys]
            if store.dialect == "postgresql":  # noqa: SIM108
                with cur.copy("COPY score_cache (key, score, created_at, gen) FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
            else:
                stamp = t.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's DateTime storage on SQLite
                cur.execute("BEGIN")
                cur.executemany(
                    "INSERT INTO score_cache (key, score, created_at, gen) VALUES (?, ?, ?, ?)",
                    [(k, s, stamp, g) for k, s, _, g in rows],
                )
                cur.execute("COMMIT")

        for values in CheckedManifest(str(manifest), settings).batches():
            add(values)
        raw.commit()
    return {"cache_fill_s": round(time.perf_counter() - t0, 1)}


def set_age(url: str, days: float) -> None:
    from datetime import timedelta

    from sqlalchemy import text

    from rerankq.store.cache_gens import day_of, jittered_gen_sql
    from rerankq.store.clock import now
    from rerankq.store.ledger import Ledger

    store = Ledger(url)
    start = day_of(now() - timedelta(days=days))
    with store.session.begin() as s:  # written ``days`` ago: generations spread from that day on
        s.execute(text(f"UPDATE score_cache SET gen = {jittered_gen_sql(store.dialect, str(start))}"))
    if store.dialect == "postgresql":  # as autovacuum would have, in the week since night 1
        with store.session.kw["bind"].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE score_cache")


def child(url: str, model: str, manifest: str, reuse: bool) -> None:
    """One submit, timed, in this (fresh) process; prints JSON."""
    from producer.job_control import ledger
    from producer.submission import submit_manifest
    from rerankq.logs import configure_logging
    from rerankq.settings import Settings

    configure_logging("INFO", True)

    settings = Settings(database_url=url, model=model, dtype="float32")
    notes: list[str] = []
    t0 = time.perf_counter()
    job = submit_manifest(manifest, settings=settings, reuse=reuse, report=notes.append)
    elapsed = time.perf_counter() - t0
    st = ledger(settings).status(job)
    print(json.dumps({
        "reuse": reuse, "seconds": round(elapsed, 1), "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pairs": st.pairs_total, "reused": st.pairs_reused, "chunks": st.chunks_total, "note": notes[-1] if notes else "",
    }))  # fmt: skip


def run_child(url: str, model: str, manifest: Path, reuse: bool) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, model, str(manifest), "1" if reuse else "0"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO), "RERANKQ_LOG_JSON": "true"},
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for line in out.stderr.splitlines():  # the phases of the reuse path, from its log lines
        if any(f'"{event}"' in line for event in ("reuse_recorded", "reuse_staged", "reuse_rehomed")):
            phases = json.loads(line)
            result.update({k: v for k, v in phases.items() if k.endswith("_s") or k == "entries"})
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, url, model, manifest, reuse = sys.argv
        child(url, model, manifest, reuse == "1")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--unchanged", type=float, default=0.95)
    ap.add_argument("--url", action="append", default=None, help="sqlite (a scratch file) or a PostgreSQL URL")
    ap.add_argument("--model", default=str(Path.home() / ".cache/rerankq/tiny-qwen3-reranker"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cache-age-days", type=float, action="append", default=None,
                    help="days since night 1's cache entries were written: 1 (default) = a usual night; 8 = a 1/7 slice is due "
                         "re-homing (the steady state); 15 = all of them are (after a two-week pause)")
    args = ap.parse_args()
    from rerankq.store.db import upgrade

    work = Path(args.workdir or tempfile.mkdtemp(prefix="reuse-bench-"))
    t0 = time.perf_counter()
    n2 = work / "night2"
    if not (n2 / "part-07.parquet").exists() or pq.ParquetDataset(n2).read(columns=["doc_id"]).num_rows != args.pairs // 8 * 8:
        write_nights(work, args.pairs, args.unchanged)
        print(f"manifests written in {time.perf_counter() - t0:.0f} s under {work}", file=sys.stderr)
    n1 = work / "night1"
    for url in args.url or ["sqlite", "postgresql+psycopg://postgres@127.0.0.1:5432/test"]:
        db, drop = scratch("sqlite:///" if url == "sqlite" else url)
        try:
            upgrade(db)
            info = fill_cache(db, args.model, n1)
            for age in args.cache_age_days or [1.0]:
                set_age(db, age)
                for _ in range(args.rounds):
                    for reuse in (False, True):
                        r = run_child(db, args.model, n2, reuse)
                        print(json.dumps({"backend": db.split(":")[0], "cache_age_days": age, **info, **r}), flush=True)
        finally:
            drop()


if __name__ == "__main__":
    main()
