"""The engine that the test engines (counting, poisonable) wrap: RERANKQ_TEST_INNER_ENGINE, by default ``hf``.

A wrapping engine offers only ``log_odds`` (no ``submit_log_odds``), so the worker calls it one chunk slice at a
time whichever engine is inside, and these tests see the same worker, ledger and broker either way. The default
is the transformers engine because it loads in about a third of vLLM's CPU time (~14 s of a core against
~42 s on the 2-core CI VM); vLLM's own paths are tested where they are the subject (tests/test_engines.py,
test_engine_loop.py, test_e2e.py, test_chaos.py, …). ``RERANKQ_TEST_INNER_ENGINE=vllm`` runs these tests on vLLM."""

from __future__ import annotations

import os

from rerankq.families import builder_for, family_of, max_length_for
from rerankq.settings import Settings
from worker.engines import Engine, build_engine


def inner_engine(settings: Settings, model_path: str) -> Engine:
    family = family_of(model_path)
    family.prepare()
    builder = builder_for(model_path, max_length_for(model_path, settings.max_length))
    name = os.environ.get("RERANKQ_TEST_INNER_ENGINE", "hf")
    return build_engine(settings.model_copy(update={"engine": name}), model_path, family, builder)
