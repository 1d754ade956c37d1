"""The vLLM engine (CPU build) against the transformers reference, both float32, on the tiny model."""

from __future__ import annotations

import random

import pytest

from rerankq.model_files import resolve_dtype
from rerankq.prompt import Pair
from rerankq.settings import Settings
from tests.corpus import rows
from worker.engines import load_reranker
from worker.engines.vllm_engine import HF_OVERRIDES, engine_kwargs

pytestmark = pytest.mark.slow
MAX_LENGTH = 512


@pytest.fixture(scope="module")
def engines(tiny_model):
    made = {
        name: load_reranker(Settings(model=str(tiny_model), engine=name, dtype="float32", max_length=MAX_LENGTH, enforce_eager=True))
        for name in ("vllm", "hf")
    }
    yield made
    for reranker in made.values():
        reranker.close()


def varied_pairs(n_queries: int = 25, seed: int = 11) -> list[Pair]:
    columns = rows(n_queries, (4, 16), seed=seed, long_every=6)  # every 6th document is cut at max_length
    return [Pair(q, d, i) for q, d, i in zip(columns["query"], columns["document"], columns["instruction"])]


def test_vllm_matches_transformers_within_1e5(engines):
    pairs = varied_pairs()
    assert len(pairs) >= 200
    vllm_scores = engines["vllm"].score(pairs)
    hf_scores = engines["hf"].score(pairs)
    assert sum(s.truncated for s in vllm_scores) >= 20
    diffs = [abs(a.score - b.score) for a, b in zip(vllm_scores, hf_scores)]
    assert max(diffs) < 1e-5, max(diffs)
    assert len({round(s.score, 6) for s in vllm_scores}) > len(pairs) // 2, "scores vary with the input"


def test_scores_come_back_in_input_order_whatever_the_batch(engines):
    pairs = varied_pairs(n_queries=12, seed=5)
    base = [s.score for s in engines["vllm"].score(pairs)]
    order = list(range(len(pairs)))
    random.Random(1).shuffle(order)
    shuffled = engines["vllm"].score([pairs[i] for i in order])
    for position, i in enumerate(order):
        assert shuffled[position].score == pytest.approx(base[i], abs=1e-6)


def test_pipelined_slices_score_like_one_batch(engines):
    """A chunk larger than pipeline_pairs is tokenized slice by slice on a thread: same results, same order."""
    from worker.engines import Reranker

    whole = engines["vllm"]
    sliced = Reranker(whole.builder, whole.engine, pipeline_pairs=64)
    pairs = varied_pairs(n_queries=25, seed=13) + [Pair("q", "")]
    assert len(pairs) > 3 * 64
    a, b = whole.score(pairs), sliced.score(pairs)
    assert [x.error for x in a] == [y.error for y in b] and a[-1].error == "document is empty"
    assert [x.score for x in a[:-1]] == pytest.approx([y.score for y in b[:-1]], abs=1e-6)


@pytest.mark.parametrize("engine", ["vllm", "hf"])
def test_per_pair_errors_while_the_batch_scores(engines, engine):
    good = varied_pairs(n_queries=3, seed=9)
    bad = [Pair("query", ""), Pair(None, "document"), Pair("too long " * 400, "document")]
    batch = good[:5] + bad + good[5:]
    results = engines[engine].score(batch)
    reference = engines["hf"].score(good)
    errors = [r.error for r in results[5:8]]
    assert errors[0] == "document is empty" and errors[1] == "query is missing" and "instruction and query" in errors[2]
    scored = results[:5] + results[8:]
    assert all(r.error is None for r in scored)
    assert [r.score for r in scored] == pytest.approx([r.score for r in reference], abs=1e-5)


def test_engine_arguments_come_from_settings(monkeypatch):
    for key, value in {
        "RERANKQ_GPU_MEMORY_UTILIZATION": "0.85",
        "RERANKQ_MAX_NUM_BATCHED_TOKENS": "65536",
        "RERANKQ_MAX_NUM_SEQS": "512",
        "RERANKQ_ENABLE_PREFIX_CACHING": "true",
        "RERANKQ_TENSOR_PARALLEL_SIZE": "2",
        "RERANKQ_QUANTIZATION": "awq",
        "RERANKQ_MAX_LENGTH": "4096",
    }.items():
        monkeypatch.setenv(key, value)
    kwargs = engine_kwargs(Settings(), "/models/x", "bfloat16")
    assert kwargs["hf_overrides"] == HF_OVERRIDES and kwargs["runner"] == "pooling"
    assert (kwargs["gpu_memory_utilization"], kwargs["max_num_batched_tokens"], kwargs["max_num_seqs"]) == (0.85, 65536, 512)
    assert (kwargs["enable_prefix_caching"], kwargs["tensor_parallel_size"], kwargs["quantization"]) == (True, 2, "awq")
    assert (kwargs["max_model_len"], kwargs["dtype"]) == (4096, "bfloat16")
    assert "quantization" not in engine_kwargs(Settings(quantization=None), "/m", "float32")
    assert "async_scheduling" not in engine_kwargs(Settings(), "/m", "float32")  # CPU: vLLM's defaults


def test_gpu_defaults_fill_only_unset_knobs():
    on_gpu = engine_kwargs(Settings(), "/m", "bfloat16", on_gpu=True)
    assert (on_gpu["max_num_batched_tokens"], on_gpu["async_scheduling"]) == (65536, True)
    mine = engine_kwargs(Settings(max_num_batched_tokens=8192, async_scheduling=False), "/m", "bfloat16", on_gpu=True)
    assert (mine["max_num_batched_tokens"], mine["async_scheduling"]) == (8192, False)


def test_auto_dtype_is_explicit(tiny_model):
    """vLLM's own "auto" would run a float32 pooling checkpoint in float16: rerankq always names one."""
    assert resolve_dtype("auto", str(tiny_model), "vllm") == "float32"  # no GPU here
    assert resolve_dtype("bfloat16", str(tiny_model), "vllm") == "bfloat16"


def test_log_odds_match_transformers_and_the_probability_is_their_sigmoid(engines):
    """vLLM gives the head's raw output (use_activation off): logit(yes) − logit(no), as transformers does."""
    from rerankq.log_odds import probability

    pairs = varied_pairs(n_queries=8, seed=17)
    vllm_scores, hf_scores = engines["vllm"].score(pairs), engines["hf"].score(pairs)
    assert max(abs(a.logit - b.logit) for a, b in zip(vllm_scores, hf_scores)) < 1e-4
    for s in (*vllm_scores, *hf_scores):
        assert s.score == probability(s.logit)
    assert any(not 0.0 <= s.logit <= 1.0 for s in vllm_scores), "raw log-odds, not probabilities"


def test_the_hf_engine_is_the_model_cards_recipe(engines, tiny_model):
    """Independently of rerankq's engines: the card's code (a causal LM, softmax over the last position's
    no/yes logits, float32) on the same token ids gives the same probability, and yes − no the log-odds."""
    import torch
    from transformers import AutoModelForCausalLM

    pairs = varied_pairs(n_queries=2, seed=23)[:12]
    prompts = engines["hf"].builder.build(pairs)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    got = engines["hf"].score(pairs)
    with torch.inference_mode():
        for prompt, s in zip(prompts, got):
            last = model(input_ids=torch.tensor([prompt.token_ids])).logits[0, -1, :]
            no, yes = last[2152], last[9693]  # the card's token ids of "no" and "yes"
            assert s.score == pytest.approx(torch.softmax(torch.stack([no, yes]), dim=0)[1].item(), abs=1e-6)
            assert s.logit == pytest.approx((yes - no).item(), abs=1e-5)
