"""An engine that takes its time and knows nothing: plumbing tests need a chunk to be caught running
(a worker killed mid-chunk) without loading a model. Loaded by real workers through
RERANKQ_ENGINE=tests.slow_engine:factory; each call sleeps RERANKQ_TEST_SECONDS_PER_CALL (default 1)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

from rerankq.settings import Settings


class SlowEngine:
    name = "slow"

    def __init__(self, settings: Settings, model_path: str):
        self.delay = float(os.environ.get("RERANKQ_TEST_SECONDS_PER_CALL", "1"))

    def score_prompts(self, prompts: Sequence[list[int]]) -> list[float]:
        time.sleep(self.delay)
        return [int.from_bytes(hashlib.sha256(bytes(str(list(p)), "ascii")).digest()[:4], "big") / 2**32 for p in prompts]

    def close(self) -> None:
        pass


def factory(settings: Settings, model_path: str) -> SlowEngine:
    return SlowEngine(settings, model_path)
