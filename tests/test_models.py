"""One job, one model (issue 16), with real workers (`celery -A worker worker -Q gpu`) and two tiny
models of different seeds as two "models", on SQLite and PostgreSQL: each job is scored only by
workers of its model, a job for a model nobody runs says so, a checkpoint replaced in place mid-job
never mixes its scores, and reuse works per model. The workers use the transformers engine (`hf`):
this is about routing, and it starts in seconds; tests/test_e2e.py covers vLLM."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from producer.tiny_model import ensure_tiny_model, write_tiny_model
from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.services import REDIS_URL, redis_client
from tests.workers import WorkerProcess

pytestmark = pytest.mark.slow
MAX_LENGTH = 256


def hf_reference(model: Path, columns: dict) -> dict[tuple[str, str], float]:
    """The transformers engine in this process: the model card's recipe for these pairs."""
    from rerankq.prompt import Pair
    from rerankq.settings import Settings
    from worker.engines import load_reranker

    reranker = load_reranker(Settings(model=str(model), engine="hf", dtype="float32", max_length=MAX_LENGTH))
    try:
        pairs = [Pair(q, d, i) for q, d, i in zip(columns["query"], columns["document"], columns["instruction"])]
        scores = [r.score for r in reranker.score(pairs)]
    finally:
        reranker.close()
    return dict(zip(zip(columns["query_id"], columns["doc_id"]), scores))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = Path.home() / ".cache" / "rerankq"
    return {name: ensure_tiny_model(root / f"tiny-qwen3-reranker-seed{seed}", seed=seed) for name, seed in (("a", 1), ("b", 2))}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(request, models, pg_url, tmp_path_factory):
    """One worker per model on one broker and one ledger."""
    tmp = tmp_path_factory.mktemp(f"models-{request.param}")
    db = f"sqlite:///{tmp / 'ledger.db'}" if request.param == "sqlite" else pg_url
    migrate(db)
    broker = f"{REDIS_URL}/{5 if request.param == 'sqlite' else 6}"
    redis_client(broker).flushdb()
    envs = {
        name: base_env(path, db, broker, RERANKQ_ENGINE="hf", RERANKQ_MAX_LENGTH=MAX_LENGTH, RERANKQ_HEARTBEAT_INTERVAL=1)
        for name, path in models.items()
    }
    workers = {name: WorkerProcess(env, tmp / f"worker-{name}.log").start() for name, env in envs.items()}
    for w in workers.values():
        w.wait_ready(180)
    yield envs, workers, tmp
    for w in workers.values():
        w.terminate()


def submit(env: dict, manifest: Path, model: Path | str, *args: str) -> str:
    sub = producer("submit", str(manifest), "--model", str(model), "--chunk-size", "40", *args, env=env, check=True)
    return sub.stdout.strip().splitlines()[-1]


def exported(env: dict, job: str, out: Path) -> tuple[dict[tuple[str, str], float], dict[bytes, bytes]]:
    producer("export", job, "--out", str(out), env=env, check=True)
    table = pq.read_table(out)
    return {(r["query_id"], r["doc_id"]): r["score"] for r in table.to_pylist()}, table.schema.metadata or {}


def test_two_models_share_one_broker_and_never_mix(fleet, models, tmp_path):
    envs, workers, _ = fleet
    columns = rows(n_queries=8, docs_per_query=(4, 12), seed=7)
    manifest = write_manifest(tmp_path / "m", columns, files=2)
    jobs = {name: submit(envs["a"], manifest, models[name], "--no-reuse") for name in ("a", "b")}
    for name, job in jobs.items():
        waited = producer("wait", job, "--timeout", "300", env=envs["a"], timeout=400)
        assert waited.returncode == 0, waited.stderr + workers[name].log()[-3000:]

    refs = {name: hf_reference(path, columns) for name, path in models.items()}
    assert max(abs(refs["a"][k] - refs["b"][k]) for k in refs["a"]) > 1e-3, "the two seeds must score differently"
    for name, job in jobs.items():
        scores, meta = exported(envs["a"], job, tmp_path / f"{name}.parquet")
        assert scores.keys() == refs[name].keys()
        for key, score in scores.items():
            assert score == pytest.approx(refs[name][key], abs=1e-5), (name, key)
        status = json.loads(producer("status", job, "--json", env=envs["a"], check=True).stdout)
        assert status["model"] == str(models[name])
        assert status["score_context"] and len(status["score_context"]) == 64
        assert meta[b"rerankq.model"].decode() == str(models[name])
        assert meta[b"rerankq.score_context"].decode() == status["score_context"]
    for name, job in jobs.items():  # no chunk was scored by the other model's worker (a reroute is allowed)
        other = "b" if name == "a" else "a"
        done_by_other = [
            line for line in workers[other].log().splitlines() if '"chunk_done"' in line and job in line
        ]
        assert not done_by_other, f"a worker of model {other} scored a chunk of the {name} job"

    # Reuse per model: both models' contexts are recorded, and each job reuses under its own.
    for name in ("a", "b"):
        again = producer("submit", str(manifest), "--model", str(models[name]), env=envs["a"], check=True)
        job = again.stdout.strip().splitlines()[-1]
        assert "reused" in again.stderr, again.stderr
        status = json.loads(producer("status", job, "--json", env=envs["a"], check=True).stdout)
        assert status["state"] == "completed" and status["pairs_reused"] == status["pairs_total"] == len(refs[name])
        scores, _ = exported(envs["a"], job, tmp_path / f"{name}-again.parquet")
        assert all(scores[k] == pytest.approx(refs[name][k], abs=1e-5) for k in scores)


def test_a_model_no_worker_runs_waits_and_says_why(fleet, tmp_path):
    envs, _, _ = fleet
    columns = rows(n_queries=2, docs_per_query=3, seed=3)
    manifest = write_manifest(tmp_path / "m", columns)
    job = submit(envs["a"], manifest, "Qwen/Qwen3-Reranker-8B")
    waited = producer("wait", job, "--timeout", "3", env=envs["a"], timeout=60)
    assert waited.returncode == 2
    assert "no worker runs Qwen/Qwen3-Reranker-8B" in waited.stderr, waited.stderr
    status = producer("status", job, env=envs["a"], check=True).stdout
    assert "no worker runs Qwen/Qwen3-Reranker-8B" in status
    status = json.loads(producer("status", job, "--json", env=envs["a"], check=True).stdout)
    assert status["state"] == "queued" and "no worker runs Qwen/Qwen3-Reranker-8B" in status["waiting"]
    ranked = producer("rerank", "--model", "Qwen/Qwen3-Reranker-8B", "-q", "q", "-d", "d", "--timeout", "3", env=envs["a"], timeout=60)
    assert ranked.returncode == 3
    lines = ranked.stderr.strip().splitlines()
    assert lines[0].startswith("queued: no worker runs Qwen/Qwen3-Reranker-8B"), ranked.stderr  # while it waits
    assert lines[-1].endswith("so it was cancelled; " + lines[0].removeprefix("queued: ")), ranked.stderr
    producer("cancel", job, env=envs["a"], check=True)


def test_checkpoint_replaced_in_place_mid_job_never_mixes(models, pg_url, tmp_path):
    """A rolling upgrade: the worker stops mid-job, the checkpoint at the same path is replaced, a
    worker starts on the new files. The job waits for its own context, says so, and `producer rescore`
    re-scores the whole job under the new one."""
    model = tmp_path / "model"
    shutil.copytree(models["a"], model)
    db = pg_url
    migrate(db)
    broker = f"{REDIS_URL}/7"
    redis_client(broker).flushdb()
    env = base_env(
        model, db, broker, RERANKQ_ENGINE="hf", RERANKQ_MAX_LENGTH=MAX_LENGTH, RERANKQ_CHUNKS_IN_FLIGHT=1,
        RERANKQ_HEARTBEAT_INTERVAL=1,
    )  # fmt: skip
    columns = rows(n_queries=30, docs_per_query=20, seed=11)
    manifest = write_manifest(tmp_path / "m", columns, files=3)
    old = WorkerProcess(env, tmp_path / "old.log").start()
    old.wait_ready(180)
    job = producer("submit", str(manifest), "--chunk-size", "20", env=env, check=True).stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 120
    while json.loads(producer("status", job, "--json", env=env, check=True).stdout)["chunks"]["done"] < 2:
        assert time.monotonic() < deadline, old.log()[-3000:]
        time.sleep(0.5)
    assert old.terminate() == 0  # warm shutdown: the running chunk finishes
    before = json.loads(producer("status", job, "--json", env=env, check=True).stdout)
    assert before["state"] == "running" and before["chunks"]["pending"] > 0

    write_tiny_model(model, seed=2)  # the new checkpoint, at the same path
    new = WorkerProcess(env, tmp_path / "new.log").start()
    try:
        new.wait_ready(180)
        waited = producer("wait", job, "--timeout", "8", env=env, timeout=60)
        assert waited.returncode == 2
        assert f"waiting for a worker running {model} with context {before['score_context'][:12]}" in waited.stderr, waited.stderr
        assert f"producer rescore {job[:8]}" in waited.stderr or "producer rescore" in waited.stderr
        after = json.loads(producer("status", job, "--json", env=env, check=True).stdout)
        assert after["chunks"]["done"] == before["chunks"]["done"], "the new worker scored the old job"
        assert '"chunk_done"' not in new.log()

        old_ref = hf_reference(models["a"], columns)
        partial, _ = exported(env, job, tmp_path / "partial.parquet")
        scored = {k: v for k, v in partial.items() if v is not None}
        assert scored and all(v == pytest.approx(old_ref[k], abs=1e-5) for k, v in scored.items())

        again = producer("rescore", job, env=env, check=True)
        new_job = again.stdout.strip().splitlines()[-1]
        assert new_job != job
        assert json.loads(producer("status", job, "--json", env=env, check=True).stdout)["state"] == "cancelled"
        waited = producer("wait", new_job, "--timeout", "300", env=env, timeout=400)
        assert waited.returncode == 0, waited.stderr + new.log()[-3000:]
        new_ref = hf_reference(model, columns)
        scores, meta = exported(env, new_job, tmp_path / "rescored.parquet")
        assert scores.keys() == new_ref.keys()
        assert all(v == pytest.approx(new_ref[k], abs=1e-5) for k, v in scores.items())
        assert meta[b"rerankq.score_context"].decode() != before["score_context"]
    finally:
        new.terminate()
