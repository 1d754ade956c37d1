"""A real engine (tests/wrapped_engine.py), counting the prompts that reach it: proof of what reuse kept off the GPU.

Loaded by real workers through the custom-engine setting (RERANKQ_ENGINE=tests.counting_engine:factory);
each call appends the number of prompts scored to the file named by RERANKQ_TEST_COUNT_FILE."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rerankq.settings import Settings
from tests.wrapped_engine import inner_engine


class CountingEngine:
    name = "count"

    def __init__(self, settings: Settings, model_path: str):
        self.inner = inner_engine(settings, model_path)
        self.path = os.environ["RERANKQ_TEST_COUNT_FILE"]

    def log_odds(self, prompts: Sequence[list[int]], **kwargs) -> list[float]:
        scores = self.inner.log_odds(prompts, **kwargs)
        with open(self.path, "a") as f:
            f.write(f"{len(prompts)}\n")
        return scores

    def close(self) -> None:
        self.inner.close()


def factory(settings: Settings, model_path: str) -> CountingEngine:
    return CountingEngine(settings, model_path)


def count(path: str) -> int:
    """Prompts scored since the file was last emptied."""
    return sum(int(line) for line in open(path)) if os.path.exists(path) else 0
