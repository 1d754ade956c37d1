"""The GPU default, run on CPU: vLLM's engine core in a process of its own (RERANKQ_ENGINE_PROCESS).

Its scores are the reference's, and a worker killed with -9 takes its engine core with it: vLLM
leaves the core running when its parent dies (vllm-project/vllm#55510), so on a GPU it would keep
the memory the restarted worker needs. rerankq ties it to the worker (rerankq/orphans.py, run in
the core through child_guard/sitecustomize.py)."""

from __future__ import annotations

import psutil
import pyarrow.parquet as pq
import pytest

from rerankq.prompt import Pair
from rerankq.settings import Settings
from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.workers import WorkerProcess
from worker.engines import load_reranker

pytestmark = pytest.mark.slow
MAX_LENGTH = 512


def engine_cores(pid: int) -> list[psutil.Process]:
    """vLLM's engine core among a worker's children (vLLM names its process VLLM::EngineCore)."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "EngineCore" in " ".join(child.cmdline()) or "EngineCor" in child.name():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_own_process_engine_scores_like_the_reference_and_dies_with_its_worker(tiny_model, redis_url, sqlite_url, tmp_path):
    columns = rows(6, (3, 9), seed=23, long_every=5)
    manifest = write_manifest(tmp_path / "m.parquet", columns)
    env = base_env(tiny_model, sqlite_url, redis_url, RERANKQ_ENGINE_PROCESS="true", RERANKQ_MAX_LENGTH=str(MAX_LENGTH))
    migrate(sqlite_url)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(300)
        cores = engine_cores(worker.proc.pid)
        assert len(cores) == 1, [c.cmdline() for c in psutil.Process(worker.proc.pid).children()]
        job = producer("submit", str(manifest), "--no-reuse", env=env, check=True).stdout.strip().splitlines()[-1]
        waited = producer("wait", job, "--timeout", "300", env=env, timeout=400)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        out = tmp_path / "scores.parquet"
        producer("export", job, "--out", str(out), env=env, check=True)

        worker.kill9()
        cores[0].wait(15)  # psutil.TimeoutExpired if the engine core outlives its worker
        assert not cores[0].is_running()
    finally:
        if worker.proc.poll() is None:
            worker.kill9()

    got = {(r["query_id"], r["doc_id"]): r["score"] for r in pq.read_table(out).to_pylist()}
    reference = load_reranker(Settings(model=str(tiny_model), engine="hf", dtype="float32", max_length=MAX_LENGTH))
    try:
        expected = reference.score([Pair(q, d, i) for q, d, i in zip(columns["query"], columns["document"], columns["instruction"])])
    finally:
        reference.close()
    keys = list(zip(columns["query_id"], columns["doc_id"]))
    assert len(got) == len(keys) and all(got[k] is not None for k in keys)
    assert max(abs(got[k] - e.score) for k, e in zip(keys, expected)) < 1e-5
