"""The product end to end: `celery -A worker worker -Q gpu` on the tiny model (vLLM CPU build),
`producer submit` a manifest, `producer wait`, `producer export`, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.services import REDIS_URL, redis_client
from tests.workers import WorkerProcess

pytestmark = pytest.mark.slow
MAX_LENGTH = 512


@pytest.fixture(scope="module")
def reference(tiny_model):
    """The transformers engine (float32): the card's recipe, scoring the same pairs in this process."""
    from rerankq.settings import Settings
    from worker.engines import load_reranker

    reranker = load_reranker(Settings(model=str(tiny_model), engine="hf", dtype="float32", max_length=MAX_LENGTH))
    yield reranker
    reranker.close()


@pytest.fixture(scope="module")
def stacks(tiny_model, pg_url, tmp_path_factory):
    """One worker per database, started together (the engine loads once per worker)."""
    tmp = tmp_path_factory.mktemp("e2e")
    sqlite_url = f"sqlite:///{tmp / 'ledger.db'}"
    made = {}
    for name, db, redis_db in (("sqlite", sqlite_url, 13), ("postgresql", pg_url, 14)):
        migrate(db)
        broker = f"{REDIS_URL}/{redis_db}"

        redis_client(broker).flushdb()
        env = base_env(tiny_model, db, broker, RERANKQ_MAX_LENGTH=MAX_LENGTH)
        made[name] = (env, WorkerProcess(env, tmp / f"worker-{name}.log").start())
    for _, worker in made.values():
        worker.wait_ready()
    yield made
    for _, worker in made.values():
        worker.terminate()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_manifest_job_end_to_end(db, stacks, reference, tmp_path: Path):
    from rerankq.prompt import Pair

    env, worker = stacks[db]
    columns = rows(n_queries=12, docs_per_query=(5, 30), seed=42)
    manifest = write_manifest(tmp_path / "manifest", columns, files=3)

    sub = producer("submit", str(manifest), "--chunk-size", "60", "--name", f"e2e-{db}", env=env, check=True)
    job_id = sub.stdout.strip().splitlines()[-1]
    waited = producer("wait", job_id, "--timeout", "600", env=env, timeout=700)
    assert waited.returncode == 0, waited.stderr + worker.log()[-3000:]

    out = tmp_path / "scores.parquet"
    producer("export", job_id, "--out", str(out), env=env, check=True)
    exported = pq.read_table(out).to_pylist()

    keys = list(zip(columns["query_id"], columns["doc_id"]))
    assert sorted((r["query_id"], r["doc_id"]) for r in exported) == sorted(keys), "every pair exactly once"
    expected = reference.score(
        [Pair(q, d, i) for q, d, i in zip(columns["query"], columns["document"], columns["instruction"])]
    )
    by_key = {(r["query_id"], r["doc_id"]): r for r in exported}
    for key, exp in zip(keys, expected):
        assert exp.error is None
        assert by_key[key]["score"] == pytest.approx(exp.score, abs=1e-5), key
        assert by_key[key]["logit"] == pytest.approx(exp.logit, abs=1e-4), key
        assert by_key[key]["error"] is None
    for qid in set(columns["query_id"]):
        group = sorted((r for r in exported if r["query_id"] == qid), key=lambda r: (-r["logit"], r["doc_id"]))
        assert [r["rank"] for r in group] == list(range(1, len(group) + 1)), qid

    status = json.loads(producer("status", job_id, "--json", env=env, check=True).stdout)
    assert status["state"] == "completed"
    assert status["pairs_scored"] == status["pairs_total"] == len(keys)
    assert status["chunks"]["done"] == status["chunks_total"] > 3
    listed = producer("list", "--json", env=env, check=True).stdout
    assert job_id in {j["job_id"] for j in json.loads(listed)}


def test_rerank_command_ranks_inline_documents(stacks, reference):
    from rerankq.prompt import Pair

    env, _ = stacks["postgresql"]
    docs = ["Beijing is the capital of China.", "量子计算", "🚀 rockets", "A doc with <|im_end|> inside"]
    result = producer("rerank", "--query", "capital of China?", *[a for d in docs for a in ("--doc", d)], "--json", env=env, check=True)
    ranked = json.loads(result.stdout)
    assert sorted(r["document"] for r in ranked) == sorted(docs)
    expected = {d: s.score for d, s in zip(docs, reference.score([Pair("capital of China?", d) for d in docs]))}
    for position, r in enumerate(ranked, start=1):
        assert r["rank"] == position
        assert r["score"] == pytest.approx(expected[r["document"]], abs=1e-5)
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_python_api_rerank_and_per_pair_errors(stacks, reference):
    from producer import rerank, submit_pairs, wait
    from rerankq.settings import Settings

    env, _ = stacks["sqlite"]
    settings = Settings(database_url=env["RERANKQ_DATABASE_URL"], broker_url=env["RERANKQ_BROKER_URL"], model=env["RERANKQ_MODEL"], max_length=MAX_LENGTH)
    ranked = rerank("what is a reranker?", ["a reranker orders passages", "bananas"], settings=settings)
    assert [r.rank for r in ranked] == [1, 2] and all(r.score is not None for r in ranked)

    # An over-long query is a per-pair error; the other pairs of the same chunk score normally.
    long_query = "word " * (MAX_LENGTH + 50)
    job = submit_pairs(
        [
            {"query_id": "ok", "doc_id": "a", "query": "fine query", "document": "fine document"},
            {"query_id": "long", "doc_id": "b", "query": long_query, "document": "document"},
        ],
        settings=settings,
        chunk_size=10,
    )
    status = wait(job, timeout=300, settings=settings)
    assert status.state.value == "completed_with_errors"
    assert (status.pairs_scored, status.pairs_failed) == (1, 1)
