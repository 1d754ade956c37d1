"""One engine loop per worker: several threads score through one Reranker at once (Celery's threads pool),
and a pair's score does not depend on order, batch or chunking; close() shuts the engine down."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from rerankq.prompt import Pair, PromptBuilder
from rerankq.settings import Settings
from tests.test_engines import MAX_LENGTH, varied_pairs
from worker.engines import Reranker, load_reranker
from worker.engines.base import slices
from worker.engines.engine_loop import EngineClosed


@pytest.mark.slow
def test_concurrent_chunks_score_as_one_call_then_close(tiny_model):
    reranker = load_reranker(
        Settings(model=str(tiny_model), dtype="float32", max_length=MAX_LENGTH, enforce_eager=True, pipeline_pairs=64)
    )
    try:
        pairs = varied_pairs(n_queries=25, seed=21) + [Pair("q", ""), Pair("too long " * 400, "document")]
        whole = Reranker(reranker.builder, reranker.engine, pipeline_pairs=0).score(pairs)  # one batch, no slices
        assert whole[-2].error == "document is empty" and "instruction and query" in whole[-1].error
        assert sum(r.truncated for r in whole) >= 20
        order = list(range(len(pairs)))
        random.Random(3).shuffle(order)
        jobs = {
            "same": pairs,
            "shuffled": [pairs[i] for i in order],
            "first half": pairs[: len(pairs) // 2],
            "second half": pairs[len(pairs) // 2 :],
        }
        with ThreadPoolExecutor(4) as pool:  # four chunks in flight over one engine loop
            results = dict(zip(jobs, pool.map(reranker.score, jobs.values())))
        halves = results["first half"] + results["second half"]
        shuffled = [None] * len(pairs)
        for position, i in enumerate(order):
            shuffled[i] = results["shuffled"][position]
        for other in (results["same"], halves, shuffled):
            assert [r.error for r in other] == [r.error for r in whole]
            assert [r.truncated for r in other] == [r.truncated for r in whole]
            diffs = [abs(a.score - b.score) for a, b in zip(other, whole) if a.score is not None]
            assert len(diffs) == len(pairs) - 2 and max(diffs) <= 1e-6, max(diffs)
    finally:
        reranker.close()
    loop = reranker.engine.loop
    assert not loop.alive and loop.llm is None
    with pytest.raises(EngineClosed):
        reranker.engine.score_prompts([[1, 2, 3]])


class _OneAtATime:
    """An engine without submit(): the Reranker must never call it from two threads at once."""

    name = "serial"

    def __init__(self) -> None:
        self.busy = threading.Lock()
        self.overlaps = 0
        self.calls = 0

    def score_prompts(self, prompts):  # noqa: ANN001, ANN201
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            self.busy.acquire()
        try:
            self.calls += 1
            return [len(p) / 1000 for p in prompts]
        finally:
            self.busy.release()

    def close(self) -> None:
        pass


def test_engines_without_submit_are_called_one_slice_at_a_time(tiny_model):
    builder = PromptBuilder.from_model(tiny_model, MAX_LENGTH)
    engine = _OneAtATime()
    reranker = Reranker(builder, engine, pipeline_pairs=64)
    try:
        pairs = varied_pairs(n_queries=10, seed=4) + [Pair(None, "document")]
        expected = [len(p.token_ids) / 1000 if p.token_ids else None for p in builder.build(pairs)]
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(reranker.score, [pairs] * 3))
        for result in results:
            assert [r.score for r in result] == expected
            assert result[-1].error == "query is missing"
        assert len(slices(len(pairs), 64)) >= 2
        assert engine.overlaps == 0 and engine.calls == 3 * len(slices(len(pairs), 64))  # every slice, never two at once
    finally:
        reranker.close()


def test_gpu_default_is_batch_invariant_prefix_reuse(monkeypatch):
    from worker.engines.vllm_engine import engine_kwargs, set_vllm_env

    assert engine_kwargs(Settings(), "/m", "bfloat16", on_gpu=True)["enable_prefix_caching"] is True
    assert engine_kwargs(Settings(), "/m", "float32", on_gpu=False)["enable_prefix_caching"] is False
    assert engine_kwargs(Settings(batch_invariant=False), "/m", "bfloat16", on_gpu=True)["enable_prefix_caching"] is False
    assert engine_kwargs(Settings(enable_prefix_caching=False), "/m", "bfloat16", on_gpu=True)["enable_prefix_caching"] is False
    import os

    keys = ("VLLM_BATCH_INVARIANT", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_WORKER_MULTIPROC_METHOD", "RERANKQ_DIE_WITH_PARENT")
    for key in (*keys, "PYTHONPATH"):
        monkeypatch.setenv(key, os.environ.get(key, ""))  # each restored as it was after the test
    for key in keys:
        monkeypatch.delenv(key)
    set_vllm_env(Settings(), gpu=False)
    assert "VLLM_BATCH_INVARIANT" not in os.environ and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert "RERANKQ_DIE_WITH_PARENT" not in os.environ
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    set_vllm_env(Settings(), gpu=True)
    assert os.environ["VLLM_BATCH_INVARIANT"] == "1"
    # GPU: the engine core in its own process, spawned (so child_guard runs in it) and tied to this one
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1" and os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert os.environ["RERANKQ_DIE_WITH_PARENT"] == str(os.getpid())
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0].endswith("child_guard")
    # an explicit RERANKQ_ENGINE_PROCESS wins over an inherited VLLM_ENABLE_V1_MULTIPROCESSING
    set_vllm_env(Settings(engine_process=False), gpu=True)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    set_vllm_env(Settings(engine_process=True), gpu=False)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
