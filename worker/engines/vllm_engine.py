"""vLLM pooling engine over token-id prompts: Qwen3-Reranker as a yes/no sequence classifier, cross-encoders
through their own one-logit heads (the family, rerankq/families, says which)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from rerankq.families import Family, family_of, model_config
from rerankq.families.qwen3_reranker import FAMILY as QWEN3
from rerankq.log_odds import probability
from rerankq.logs import get_logger
from rerankq.numerics import CUBLAS_MIN_TOKENS, Numerics, resolve, vllm_version
from rerankq.settings import Settings

log = get_logger("rerankq.vllm_engine")

# Qwen3-Reranker's: its causal LM read as a no/yes classifier (each family's are in rerankq/families).
HF_OVERRIDES = QWEN3.hf_overrides


# Measured on an H100 (bench/RESULTS.md): 0.6B scores 892-959 pairs/s with vLLM's defaults for pooling
# models and 1,193-1,232 with these. Settings override them.
GPU_DEFAULTS: dict[str, Any] = {"max_num_batched_tokens": 65536, "async_scheduling": True}


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def deterministic_mode(settings: Settings, gpu: bool) -> bool:
    """Batch-invariant kernels: RERANKQ_NUMERICS=deterministic, the default with a GPU (rerankq/numerics.py).

    With them a pair's score does not depend on what else is in the batch, so cached query prefixes
    can be reused without moving scores (bench/RESULTS.md: bitwise equal across order, batch size,
    cold/warm cache and processes on vLLM 0.26, H100)."""
    return resolve(settings, gpu).batch_invariant


def prefix_caching(settings: Settings, gpu: bool) -> bool:
    """Prefix reuse: in both named modes; unnamed, exactly when batch-invariant mode is on."""
    return resolve(settings, gpu).prefix_caching


def engine_process(settings: Settings, gpu: bool) -> bool:
    """vLLM's engine core in its own process: by default exactly on a GPU (RERANKQ_ENGINE_PROCESS overrides).

    In the worker's process the core's scheduling loop shares the GIL with the chunk threads (reading
    rows, results, SQL writes) and the GPU waits whenever they hold it. In its own process it keeps the
    GPU fed from the queue of requests the engine loop keeps full. On a small CPU host the second busy
    process costs more than it saves (bench/RESULTS.md)."""
    return settings.engine_process if settings.engine_process is not None else gpu


def set_vllm_env(settings: Settings, gpu: bool) -> None:
    """Environment vLLM reads at import: must run before the first ``import vllm`` in this process."""
    wanted = "1" if engine_process(settings, gpu) else "0"
    if settings.engine_process is not None:  # asked for explicitly: wins over an inherited vLLM variable
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = wanted
    else:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", wanted)
    if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":  # however it was chosen, the core gets its own process
        # spawn, not fork: the worker has threads, and a spawned child runs child_guard/sitecustomize.py,
        # which ties the engine core to this worker (kill -9 of the worker must free the GPU).
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from rerankq.torch_compat import guard_children

        guard_children(die_with=os.getpid())
    numerics = resolve(settings, gpu, vllm_version())
    if numerics.batch_invariant:
        os.environ.setdefault("VLLM_BATCH_INVARIANT", "1")
    elif settings.numerics == "fast":  # asked for by name: an inherited VLLM_BATCH_INVARIANT must not undo it
        os.environ["VLLM_BATCH_INVARIANT"] = "0"
    route_linear_layers(numerics)


def route_linear_layers(numerics: Numerics) -> None:
    """Deterministic mode's linear layers on cuBLAS (worker/engines/bi_linear.py) here and in the engine
    core's process, or vLLM's own kernels, as ``numerics`` (and so the scoring context) says."""
    from worker.engines import bi_linear

    if numerics.linear == "cublas":
        bi_linear.export_to_children(CUBLAS_MIN_TOKENS)
        bi_linear.install(CUBLAS_MIN_TOKENS)
        log.info("bi_linear", kernels="cublas", min_tokens=CUBLAS_MIN_TOKENS, numerics=numerics.label)
        return
    bi_linear.export_to_children(None)
    if numerics.linear == "triton":
        log.warning("bi_linear", kernels="triton", vllm=vllm_version(), numerics=numerics.label,
                    reason="RERANKQ_BI_LINEAR=triton, or a vLLM other than 0.26: vLLM's own batch-invariant kernel")  # fmt: skip
    elif numerics.batch_invariant:
        log.info("bi_linear", kernels="vllm", reason="no GPU: vLLM's CPU kernels", numerics=numerics.label)


def engine_kwargs(settings: Settings, model_path: str, dtype: str, on_gpu: bool = False, family: Family = QWEN3) -> dict[str, Any]:
    """``vllm.LLM`` arguments from settings; unset knobs take GPU_DEFAULTS on a GPU, else vLLM's defaults.
    The family adds its ``hf_overrides`` (Qwen3-Reranker's head; cross-encoders load as they are)."""
    kwargs: dict[str, Any] = dict(
        model=model_path,
        runner="pooling",
        dtype=dtype,
        max_model_len=settings.max_length,
        seed=settings.seed,
        tensor_parallel_size=settings.tensor_parallel_size,
        # Bidirectional (encoder-only) cross-encoders have no prefix to reuse: vLLM warns it may give wrong outputs.
        enable_prefix_caching=prefix_caching(settings, on_gpu) and family.prefix_caching,
        enforce_eager=settings.enforce_eager,
        use_tqdm_on_load=False,  # a progress bar is no log line (worker logs are JSON lines)
    )
    if settings.scheduling_policy != "fcfs":  # live requests go ahead of batch prompts waiting in the engine
        kwargs["scheduling_policy"] = settings.scheduling_policy
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
    if family.hf_overrides:
        kwargs["hf_overrides"] = family.hf_overrides
    return kwargs


class VllmEngine:
    """Thread-safe: every call goes to one engine loop that keeps the batch full across calls."""

    name = "vllm"

    def __init__(self, settings: Settings, model_path: str, dtype: str, family: Family | None = None):
        """``family``: the checkpoint's (rerankq/families), read from its config.json when not given."""
        family = family or family_of(model_path)
        gpu = on_gpu()
        set_vllm_env(settings, gpu)
        from worker.engines.engine_loop import EngineLoop

        kwargs = engine_kwargs(settings, model_path, dtype, on_gpu=gpu, family=family)

        def make_llm() -> Any:
            from vllm import LLM

            return LLM(**kwargs)

        self.loop = EngineLoop(make_llm)
        self._family = family
        self._vocab_size = int(model_config(model_path).get("vocab_size") or 51000)
        if gpu and settings.warm_up:
            self._warm_up()

    def _warm_up(self) -> None:
        """One full batch before the first chunk: kernels that JIT-compile on first use (batch-invariant
        matmuls, slot mapping) would otherwise stall the first chunk on an H100 by seconds."""
        vocab = self._vocab_size
        if vocab > 51000:
            ids = [[1000 + (i * 7919 + j * 13) % 50000 for j in range(400)] for i in range(192)]
        else:  # a cross-encoder's smaller vocabulary (BERT: 30,522)
            ids = [[5 + (i * 7919 + j * 13) % (vocab - 5) for j in range(400)] for i in range(192)]
        starts = [200] * len(ids) if self._family.token_types else None
        self.loop.submit(ids, starts).result()

    @property
    def llm(self) -> Any:
        return self.loop.llm

    priorities = True  # submit_log_odds takes ``priority`` (the live lane's prompts go first)

    def submit_log_odds(
        self, prompts: Sequence[list[int]], type_starts: Sequence[int | None] | None = None, priority: int = 0
    ) -> Future[list[float]]:
        return self.loop.submit(prompts, type_starts, priority)

    def cancel(self, future: Future[list[float]]) -> None:
        self.loop.cancel(future)

    def log_odds(self, prompts: Sequence[list[int]], type_starts: Sequence[int | None] | None = None) -> list[float]:
        return self.loop.submit(prompts, type_starts).result()

    def score_prompts(self, prompts: Sequence[list[int]], type_starts: Sequence[int | None] | None = None) -> list[float]:
        """Probabilities (the benchmarks' and older callers' form), made from the log-odds."""
        return [probability(x) for x in self.log_odds(prompts, type_starts)]

    def close(self) -> None:
        self.loop.close()
