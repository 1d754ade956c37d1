"""Incremental nightly re-ranking with real workers (tiny model, vLLM CPU build), SQLite and PostgreSQL:
night 2 sends only its edited and new pairs to the engine (counted there), exports exactly what a
full re-score exports, and `--changes-since` lists exactly what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.counting_engine import count
from tests.nightly import night2
from tests.services import REDIS_URL, redis_client
from tests.workers import WorkerProcess

pytestmark = pytest.mark.slow
MAX_LENGTH = 512


@pytest.fixture(scope="module")
def stacks(tiny_model, pg_url, tmp_path_factory):
    """One counting worker per database, started together."""
    tmp = tmp_path_factory.mktemp("incremental")
    made = {}
    for name, db, redis_db in (("sqlite", f"sqlite:///{tmp / 'ledger.db'}", 11), ("postgresql", pg_url, 12)):
        migrate(db)
        broker = f"{REDIS_URL}/{redis_db}"
        redis_client(broker).flushdb()
        counts = tmp / f"engine-{name}.count"
        env = base_env(
            tiny_model, db, broker, RERANKQ_MAX_LENGTH=MAX_LENGTH, RERANKQ_ENGINE="tests.counting_engine:factory",
            RERANKQ_TEST_COUNT_FILE=str(counts),
        )  # fmt: skip
        made[name] = (env, WorkerProcess(env, tmp / f"worker-{name}.log").start(), counts)
    for _, worker, _ in made.values():
        worker.wait_ready()
    yield made
    for _, worker, _ in made.values():
        worker.terminate()


def run_job(env: dict, worker: WorkerProcess, counts: Path, *args: str) -> tuple[str, int, dict]:
    """Submit, wait; the job id, the prompts that reached the engine meanwhile, and the status."""
    counts.write_text("")
    sub = producer("submit", *args, "--chunk-size", "60", env=env, check=True)
    job = sub.stdout.strip().splitlines()[-1]
    waited = producer("wait", job, "--timeout", "600", env=env, timeout=700)
    assert waited.returncode == 0, waited.stderr + worker.log()[-3000:]
    status = json.loads(producer("status", job, "--json", env=env, check=True).stdout)
    return job, count(str(counts)), status


def export(env: dict, job: str, out: Path, *args: str) -> dict[tuple[str, str], dict]:
    producer("export", job, "--out", str(out), *args, env=env, check=True)
    return {(r["query_id"], r["doc_id"]): r for r in pq.read_table(out).to_pylist()}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_night_two_scores_only_what_changed(db, stacks, tmp_path: Path):
    env, worker, counts = stacks[db]
    cols1 = rows(n_queries=16, docs_per_query=(5, 30), seed=11)
    cols2, changes = night2(cols1)
    m1 = write_manifest(tmp_path / "night1", cols1, files=2)
    m2 = write_manifest(tmp_path / "night2", cols2, files=2)

    job1, engine1, st1 = run_job(env, worker, counts, str(m1))
    assert engine1 == len(cols1["query_id"]) and st1["pairs_reused"] == 0

    job2, engine2, st2 = run_job(env, worker, counts, str(m2))
    changed = changes["edited"] | changes["new"]
    assert engine2 == len(changed), "only the edited and new pairs reach the engine"
    assert (st2["state"], st2["pairs_reused"], st2["pairs_scored"]) == ("completed", len(cols2["query_id"]) - len(changed), len(changed))
    assert st2["chunks_total"] < st1["chunks_total"]

    full, engine_full, st_full = run_job(env, worker, counts, str(m2), "--no-reuse")
    assert engine_full == len(cols2["query_id"]) and st_full["pairs_reused"] == 0

    reused = export(env, job2, tmp_path / "night2.parquet")
    scored = export(env, full, tmp_path / "full.parquet")
    assert reused.keys() == scored.keys() == set(zip(cols2["query_id"], cols2["doc_id"]))
    for key, row in scored.items():
        assert abs(reused[key]["score"] - row["score"]) <= 1e-6, key
        assert reused[key]["rank"] == row["rank"], key

    before = export(env, job1, tmp_path / "night1.parquet")
    moved = {k for k, r in reused.items() if k in before and k not in changed and before[k]["rank"] != r["rank"]}
    delta = export(env, job2, tmp_path / "changes.parquet", "--changes-since", job1)
    assert set(delta) == changes["edited"] | changes["new"] | changes["removed"] | moved
    assert {k for k, r in delta.items() if r["change"] == "removed"} == changes["removed"]
    assert {k for k, r in delta.items() if r["change"] == "new"} == changes["new"]
    assert {k for k, r in delta.items() if r["change"] == "changed"} == changes["edited"]
    for k in moved:
        assert (delta[k]["old_rank"], delta[k]["new_rank"]) == (before[k]["rank"], reused[k]["rank"])
    summary = json.loads(producer("diff", job1, job2, "--json", env=env, check=True).stdout)
    assert (summary["new"], summary["removed"], summary["changed"], summary["moved"]) == (
        len(changes["new"]), len(changes["removed"]), len(changes["edited"]), len(moved),
    )  # fmt: skip

    # another job instruction: rows that have no instruction of their own miss the cache
    _, engine3, st3 = run_job(env, worker, counts, str(m2), "--instruction", "Find passages about GPUs")
    assert engine3 == sum(i is None for i in cols2["instruction"]) == st3["pairs_scored"]
