"""A cascade with real workers (vLLM CPU build, counting what reaches each engine): stage 1 scores every
pair with the small model, stage 2 re-scores each query's top k with the large one, ranks follow stage
2 for those and stage 1 for the rest, and a second submission of the same manifest reuses both stages."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from producer.tiny_model import ensure_tiny_model
from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.counting_engine import count
from tests.services import REDIS_URL, redis_client
from tests.workers import WorkerProcess

pytestmark = pytest.mark.slow
MAX_LENGTH = 256
TOP = 4


def reference(model: Path, columns: dict) -> dict[tuple[str, str], tuple[float, float]]:
    """The transformers engine's (probability, log-odds) of every pair."""
    from rerankq.prompt import Pair
    from rerankq.settings import Settings
    from worker.engines import load_reranker

    reranker = load_reranker(Settings(model=str(model), engine="hf", dtype="float32", max_length=MAX_LENGTH))
    try:
        pairs = [Pair(q, d, i) for q, d, i in zip(columns["query"], columns["document"], columns["instruction"])]
        return dict(zip(zip(columns["query_id"], columns["doc_id"]), ((r.score, r.logit) for r in reranker.score(pairs))))
    finally:
        reranker.close()


@pytest.fixture(scope="module")
def stack(pg_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cascade")
    root = Path.home() / ".cache" / "rerankq"
    models = {"small": ensure_tiny_model(root / "tiny-qwen3-reranker-seed1", 1), "large": ensure_tiny_model(root / "tiny-qwen3-reranker-seed2", 2)}
    migrate(pg_url)
    broker = f"{REDIS_URL}/8"
    redis_client(broker).flushdb()
    envs, workers, counts = {}, {}, {}
    for name, path in models.items():
        counts[name] = tmp / f"{name}.count"
        envs[name] = base_env(
            path, pg_url, broker, RERANKQ_MAX_LENGTH=MAX_LENGTH, RERANKQ_ENGINE="tests.counting_engine:factory",
            RERANKQ_TEST_COUNT_FILE=str(counts[name]),
        )  # fmt: skip
        workers[name] = WorkerProcess(envs[name], tmp / f"worker-{name}.log").start()
    for w in workers.values():
        w.wait_ready()
    yield models, envs, workers, counts
    for w in workers.values():
        w.terminate()


def test_cascade_two_stages_in_one_job(stack, tmp_path):
    models, envs, workers, counts = stack
    env = envs["small"]
    columns = rows(n_queries=7, docs_per_query=(2, 15), seed=5)
    manifest = write_manifest(tmp_path / "m", columns, files=2)
    per_query = Counter(columns["query_id"])

    def run() -> tuple[str, dict[str, int]]:
        for c in counts.values():
            c.write_text("")
        sub = producer(
            "submit", str(manifest), "--model", str(models["small"]), "--then", f"{models['large']}:top={TOP}",
            "--chunk-size", "30", env=env, check=True,
        )  # fmt: skip
        job = sub.stdout.strip().splitlines()[-1]
        waited = producer("wait", job, "--timeout", "600", env=env, timeout=700)
        assert waited.returncode == 0, waited.stderr + workers["large"].log()[-3000:]
        return job, {name: count(str(c)) for name, c in counts.items()}

    job, seen = run()
    assert seen == {"small": len(columns["query_id"]), "large": sum(min(TOP, n) for n in per_query.values())}

    out = tmp_path / "cascade.parquet"
    producer("export", job, "--out", str(out), env=env, check=True)
    table = pq.read_table(out)
    assert table.schema.names == [
        "query_id", "doc_id", "score", "logit", "rank", "error", "stage2_score", "stage2_logit", "ranked_by_stage", "stage2_error",
    ]  # fmt: skip
    assert table.schema.metadata[b"rerankq.then_model"].decode() == str(models["large"])
    small, large = reference(models["small"], columns), reference(models["large"], columns)
    exported = table.to_pylist()
    for qid, n in per_query.items():
        group = sorted((r for r in exported if r["query_id"] == qid), key=lambda r: r["rank"])
        assert [r["rank"] for r in group] == list(range(1, n + 1))
        k = min(TOP, n)
        top_by_small = sorted(group, key=lambda r: (-small[qid, r["doc_id"]][1], r["doc_id"]))[:k]
        assert {r["doc_id"] for r in group[:k]} == {r["doc_id"] for r in top_by_small}, "stage 2 re-scores stage 1's top k"
        assert [r["ranked_by_stage"] for r in group] == [2] * k + [1] * (n - k)
        assert [r["stage2_score"] for r in group[:k]] == sorted((r["stage2_score"] for r in group[:k]), reverse=True)
        assert [r["stage2_logit"] for r in group[:k]] == sorted((r["stage2_logit"] for r in group[:k]), reverse=True)
        assert [r["logit"] for r in group[k:]] == sorted((r["logit"] for r in group[k:]), reverse=True)
        for r in group:
            assert r["score"] == pytest.approx(small[qid, r["doc_id"]][0], abs=1e-5)
            assert r["logit"] == pytest.approx(small[qid, r["doc_id"]][1], abs=1e-4)
            if r["stage2_score"] is not None:
                assert r["stage2_score"] == pytest.approx(large[qid, r["doc_id"]][0], abs=1e-5)
                assert r["stage2_logit"] == pytest.approx(large[qid, r["doc_id"]][1], abs=1e-4)
    status = json.loads(producer("status", job, "--json", env=env, check=True).stdout)
    assert status["state"] == "completed" and status["pairs_scored"] == status["pairs_total"] == len(exported)
    assert status["then_model"] == str(models["large"]) and status["then_top"] == TOP and status["then_context"]

    # The same manifest again: both stages find their scores in the cache, no engine sees a pair.
    again, seen = run()
    assert seen == {"small": 0, "large": 0}
    st = json.loads(producer("status", again, "--json", env=env, check=True).stdout)
    assert (st["pairs_scored"], st["pairs_reused"], st["pairs_total"]) == (0, len(exported), len(exported)), "issue 27: reused"
    out2 = tmp_path / "again.parquet"
    producer("export", again, "--out", str(out2), env=env, check=True)
    assert pq.read_table(out2).to_pylist() == exported
