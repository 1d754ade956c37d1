"""Build the configured engine for the checkpoint's family (rerankq/families): ``vllm`` (default), ``hf``
(reference), or ``module:factory``."""

from __future__ import annotations

import importlib

from rerankq.families import Family, builder_for, family_of, max_length_for
from rerankq.families.base import PairBuilder
from rerankq.model_files import resolve_dtype, resolve_model
from rerankq.settings import Settings
from worker.engines.base import Engine, PairScore, Reranker

__all__ = ["Engine", "PairScore", "Reranker", "build_engine", "load_reranker"]


def load_reranker(settings: Settings) -> Reranker:
    """The checkpoint's family decides the recipe and the engine call; a checkpoint of no supported family
    raises UnsupportedModel naming the families (the worker then records ``failed`` with it)."""
    model_path = resolve_model(settings.model)
    family = family_of(model_path)
    max_length = max_length_for(model_path, settings.max_length)
    if max_length != settings.max_length:
        settings = settings.model_copy(update={"max_length": max_length})
    builder = builder_for(model_path, max_length)
    reranker = Reranker(builder, build_engine(settings, model_path, family, builder), settings.pipeline_pairs)
    reranker.warm()
    return reranker


def build_engine(settings: Settings, model_path: str, family: Family, builder: PairBuilder) -> Engine:
    """The engine ``settings.engine`` names, for a checkpoint of ``family`` (test engines wrap it too)."""
    family.prepare()  # e.g. mGTE's config class, so no engine runs code shipped with the checkpoint
    if settings.engine == "vllm":
        from worker.engines.vllm_engine import VllmEngine

        return VllmEngine(settings, model_path, resolve_dtype(settings.dtype, model_path, "vllm"), family)
    if settings.engine == "hf":
        from worker.engines.hf_engine import HfEngine

        dtype = resolve_dtype(settings.dtype, model_path, "hf")
        ids = (getattr(builder, "yes_id", None), getattr(builder, "no_id", None))
        return HfEngine(settings, model_path, dtype, *ids, family=family)
    if ":" in settings.engine:
        module, _, attr = settings.engine.partition(":")
        return getattr(importlib.import_module(module), attr)(settings, model_path)
    raise ValueError(f"RERANKQ_ENGINE={settings.engine!r}: expected vllm, hf or module:factory")
