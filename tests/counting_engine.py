"""The real vLLM engine, counting the prompts that reach it: proof of what reuse kept off the GPU.

Loaded by real workers through the custom-engine setting (RERANKQ_ENGINE=tests.counting_engine:factory);
each call appends the number of prompts scored to the file named by RERANKQ_TEST_COUNT_FILE."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rerankq.model_files import resolve_dtype
from rerankq.settings import Settings
from worker.engines.vllm_engine import VllmEngine


class CountingEngine:
    name = "vllm+count"

    def __init__(self, settings: Settings, model_path: str):
        self.inner = VllmEngine(settings, model_path, resolve_dtype(settings.dtype, model_path, "vllm"))
        self.path = os.environ["RERANKQ_TEST_COUNT_FILE"]

    def score_prompts(self, prompts: Sequence[list[int]]) -> list[float]:
        scores = self.inner.score_prompts(prompts)
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
