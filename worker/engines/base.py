"""The one interface every engine sits behind: ``Reranker.score(pairs) -> results in input order``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.prompt import Pair, PromptBuilder


class Engine(Protocol):
    """Scores ready-made prompts (token ids, each within max_length): P(yes) per prompt, in order."""

    name: str

    def score_prompts(self, prompts: Sequence[list[int]]) -> list[float]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PairScore:
    score: float | None
    error: str | None = None
    truncated: bool = False


class Reranker:
    """Prompt building plus an engine. Pairs that cannot be built get an error; the rest are scored."""

    def __init__(self, builder: PromptBuilder, engine: Engine):
        self.builder = builder
        self.engine = engine

    def score(self, pairs: Sequence[Pair]) -> list[PairScore]:
        prompts = self.builder.build(pairs)
        ok = [i for i, p in enumerate(prompts) if p.token_ids is not None]
        scores = self.engine.score_prompts([prompts[i].token_ids for i in ok]) if ok else []  # type: ignore[misc]
        if len(scores) != len(ok):
            raise RuntimeError(f"engine {self.engine.name} returned {len(scores)} scores for {len(ok)} prompts")
        out = [PairScore(None, p.error) for p in prompts]
        for i, s in zip(ok, scores):
            out[i] = PairScore(float(s), None, prompts[i].truncated)
        return out

    def close(self) -> None:
        self.engine.close()
