"""Build the configured engine: ``vllm`` (default), ``hf`` (reference), or ``module:factory``."""

from __future__ import annotations

import importlib

from rerankq.model_files import resolve_dtype, resolve_model
from rerankq.prompt import PromptBuilder
from rerankq.settings import Settings
from worker.engines.base import Engine, PairScore, Reranker

__all__ = ["Engine", "PairScore", "Reranker", "load_reranker"]


def load_reranker(settings: Settings) -> Reranker:
    model_path = resolve_model(settings.model)
    builder = PromptBuilder.from_model(model_path, settings.max_length)
    if settings.engine == "vllm":
        from worker.engines.vllm_engine import VllmEngine

        engine: Engine = VllmEngine(settings, model_path, resolve_dtype(settings.dtype, model_path, "vllm"))
    elif settings.engine == "hf":
        from worker.engines.hf_engine import HfEngine

        dtype = resolve_dtype(settings.dtype, model_path, "hf")
        engine = HfEngine(settings, model_path, dtype, builder.yes_id, builder.no_id)
    elif ":" in settings.engine:
        module, _, attr = settings.engine.partition(":")
        engine = getattr(importlib.import_module(module), attr)(settings, model_path)
    else:
        raise ValueError(f"RERANKQ_ENGINE={settings.engine!r}: expected vllm, hf or module:factory")
    reranker = Reranker(builder, engine, settings.pipeline_pairs)
    reranker.warm()
    return reranker
