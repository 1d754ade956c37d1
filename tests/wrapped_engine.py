"""The engine that the test engines (counting, poisonable) wrap: RERANKQ_TEST_INNER_ENGINE, by default ``vllm``.

A wrapping engine offers only ``log_odds`` (no ``submit_log_odds``), so the worker calls it one chunk slice at a
time whichever engine is inside, and these tests see the same worker, ledger and broker either way. vLLM by
default: an hf worker starts in ~14 s of a core against vLLM's ~42 s on the 2-core CI VM, but scores a 1,000-pair
chunk of the tiny model many times slower (24 s on a loaded VM), and these tests score thousands of pairs each.
``RERANKQ_TEST_INNER_ENGINE=hf`` runs them on transformers."""

from __future__ import annotations

import os

from rerankq.families import builder_for, family_of, max_length_for
from rerankq.settings import Settings
from worker.engines import Engine, build_engine


def inner_engine(settings: Settings, model_path: str) -> Engine:
    family = family_of(model_path)
    builder = builder_for(model_path, max_length_for(model_path, settings.max_length))
    name = os.environ.get("RERANKQ_TEST_INNER_ENGINE", "vllm")
    return build_engine(settings.model_copy(update={"engine": name}), model_path, family, builder)
