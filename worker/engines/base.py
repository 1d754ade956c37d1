"""The one interface every engine sits behind: ``Reranker.score(pairs) -> results in input order``."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from worker.prompt import Pair, Prompt, PromptBuilder


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
    """Prompt building plus an engine. Pairs that cannot be built get an error; the rest are scored.

    A large chunk goes to the engine in slices of ``pipeline_pairs``, the next slice tokenized on a
    thread meanwhile (the tokenizer releases the GIL): tokenizing first and scoring after left an H100
    idle for a fifth of the time with the 0.6B model (bench/RESULTS.md)."""

    def __init__(self, builder: PromptBuilder, engine: Engine, pipeline_pairs: int = 4096):
        self.builder = builder
        self.engine = engine
        self.pipeline_pairs = pipeline_pairs

    def score(self, pairs: Sequence[Pair]) -> list[PairScore]:
        n = self.pipeline_pairs
        if len(pairs) < 2 * n:
            return self._score_prompts(self.builder.build(pairs))
        slices = [pairs[i : i + n] for i in range(0, len(pairs), n)]
        out: list[PairScore] = []
        with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
            upcoming = pool.submit(self.builder.build, slices[0])
            for k in range(len(slices)):
                prompts = upcoming.result()
                if k + 1 < len(slices):
                    upcoming = pool.submit(self.builder.build, slices[k + 1])
                out.extend(self._score_prompts(prompts))
        return out

    def _score_prompts(self, prompts: list[Prompt]) -> list[PairScore]:
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
