"""vLLM pooling engine: Qwen3-Reranker as a yes/no sequence classifier over token-id prompts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from worker.settings import Settings

HF_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


# Measured on an H100 (bench/RESULTS.md): 0.6B scores 892-959 pairs/s with vLLM's defaults for pooling
# models and 1,193-1,232 with these. Settings override them.
GPU_DEFAULTS: dict[str, Any] = {"max_num_batched_tokens": 65536, "async_scheduling": True}


def engine_kwargs(settings: Settings, model_path: str, dtype: str, on_gpu: bool = False) -> dict[str, Any]:
    """``vllm.LLM`` arguments from settings; unset knobs take GPU_DEFAULTS on a GPU, else vLLM's defaults."""
    kwargs: dict[str, Any] = dict(
        model=model_path,
        runner="pooling",
        hf_overrides=HF_OVERRIDES,
        dtype=dtype,
        max_model_len=settings.max_length,
        seed=settings.seed,
        tensor_parallel_size=settings.tensor_parallel_size,
        enable_prefix_caching=settings.enable_prefix_caching,
        enforce_eager=settings.enforce_eager,
        use_tqdm_on_load=False,  # a progress bar is no log line (worker logs are JSON lines)
    )
    optional = {
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "max_num_seqs": settings.max_num_seqs,
        "quantization": settings.quantization,
        "async_scheduling": settings.async_scheduling,
    }
    if on_gpu:
        optional = {k: GPU_DEFAULTS[k] if v is None and k in GPU_DEFAULTS else v for k, v in optional.items()}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    return kwargs


class VllmEngine:
    name = "vllm"

    def __init__(self, settings: Settings, model_path: str, dtype: str):
        # The engine core runs in this process (vLLM's default spawns it): a worker killed with -9
        # then leaves no orphaned engine holding the GPU's memory. VLLM_ENABLE_V1_MULTIPROCESSING=1 overrides.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import torch
        from vllm import LLM

        self.llm = LLM(**engine_kwargs(settings, model_path, dtype, on_gpu=torch.cuda.is_available()))

    def score_prompts(self, prompts: Sequence[list[int]]) -> list[float]:
        # One classify call for the whole chunk: vLLM's scheduler keeps the batch full.
        outputs = self.llm.classify([{"prompt_token_ids": list(p)} for p in prompts], use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outputs]

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del self.llm
