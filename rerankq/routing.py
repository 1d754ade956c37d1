"""Which broker queue a chunk goes to, so that a job's chunks reach only workers of its model and,
once its scoring context is pinned, only workers scoring in that context.

A worker started with ``-Q gpu`` also consumes ``gpu.<model>`` and ``gpu.<model>.<context>`` for
its own model and context (worker/tasks.py adds them before it starts consuming): users type the
same command whatever the model. Queue names are readable and collision-free: a slug of the model
name plus 8 hex characters of its hash. ``gpu`` itself carries jobs recorded before jobs named a
model (any worker scores those)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

_SLUG = re.compile(r"[^a-z0-9._-]+")


def normalize_model(model: str) -> str:
    """The model name as jobs and workers compare it: a hub id or a directory, without trailing slashes."""
    name = model.strip()
    return name.rstrip("/") or name


def model_queue(base: str, model: str) -> str:
    name = normalize_model(model)
    slug = _SLUG.sub("-", name.lower())[-40:].strip("-.") or "model"
    return f"{base}.{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def context_queue(base: str, model: str, context: str) -> str:
    return f"{model_queue(base, model)}.{context[:16]}"


def job_queue(base: str, model: str | None, context: str | None) -> str:
    """The queue a job's chunks are published on."""
    if model is None:
        return base
    return context_queue(base, model, context) if context else model_queue(base, model)


def worker_queues(base: str, model: str, context: str | None) -> list[str]:
    """The queues a worker of ``model`` scoring in ``context`` consumes, besides ``base``."""
    return [model_queue(base, model), *([context_queue(base, model, context)] if context else [])]


def served_names(names: str | None) -> list[str]:
    """RERANKQ_SERVED_MODEL_NAME's names (comma-separated), normalized, in order."""
    return [normalize_model(n) for n in (names or "").split(",") if n.strip()]


def resolve_model(name: str, model: str, served: str | None, workers: Iterable[Any] = ()) -> str:
    """The model a request naming ``name`` is scored by: this process's ``model`` when ``name`` is one
    of its served names; else the model of a worker that runs it under that name (its registry
    ``engine["served_model_names"]``); else ``name`` itself."""
    wanted = normalize_model(name)
    if wanted in served_names(served):
        return normalize_model(model)
    if any(w.model == wanted for w in workers):
        return wanted
    for w in workers:
        if wanted in ((w.engine or {}).get("served_model_names") or ()):
            return w.model
    return wanted
