"""Faults that cannot be caused for real: an engine that raises for some chunks.

Loaded by real workers through the custom-engine setting (RERANKQ_ENGINE=tests.fault_engines:poisonable).
It wraps a real engine (tests/wrapped_engine.py) and raises for any chunk holding the marker text while the file named
by RERANKQ_TEST_POISON_FILE exists, and for every call (a dead engine) while RERANKQ_TEST_DEAD_FILE exists."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from rerankq.settings import Settings
from tests.wrapped_engine import inner_engine

MARKER = "POISONPILL"


class PoisonableEngine:
    name = "poison"

    def __init__(self, settings: Settings, model_path: str):
        self.inner = inner_engine(settings, model_path)
        self.tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        self.flag = os.environ.get("RERANKQ_TEST_POISON_FILE", "")
        self.dead = os.environ.get("RERANKQ_TEST_DEAD_FILE", "")

    def log_odds(self, prompts: Sequence[list[int]], **kwargs) -> list[float]:
        if self.dead and os.path.exists(self.dead):
            raise RuntimeError("engine dead: every call fails")
        if self.flag and os.path.exists(self.flag):
            if any(MARKER in text for text in self.tokenizer.decode_batch([list(p) for p in prompts])):
                raise RuntimeError(f"poisoned chunk: the engine fails on {MARKER}")
        return self.inner.log_odds(prompts, **kwargs)

    def close(self) -> None:
        self.inner.close()


def poisonable(settings: Settings, model_path: str) -> PoisonableEngine:
    return PoisonableEngine(settings, model_path)
