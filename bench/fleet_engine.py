"""An instant stand-in engine for fleet runs (RERANKQ_ENGINE=bench.fleet_engine:factory): a score from
the prompt's token ids, no model; each call appends the number of prompts it scored to the file
RERANKQ_FLEET_COUNT_DIR/<pid>, so a run can count what the engines saw (re-scored chunks included)."""

from __future__ import annotations

import os
import zlib
from array import array
from collections.abc import Sequence


class InstantEngine:
    name = "instant"

    def __init__(self) -> None:
        folder = os.environ.get("RERANKQ_FLEET_COUNT_DIR")
        self.path = os.path.join(folder, str(os.getpid())) if folder else None

    def score_prompts(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        scores = [zlib.crc32(array("l", p).tobytes()) / 2**32 for p in prompts]
        if self.path:
            with open(self.path, "a") as f:
                f.write(f"{len(prompts)}\n")
        return scores

    def close(self) -> None:
        pass


def factory(settings: object, model_path: str) -> InstantEngine:
    return InstantEngine()
