"""The one interface every engine sits behind: ``Reranker.score(pairs) -> results in input order``."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from worker.prompt import Pair, Prompt, PromptBuilder
from worker.prompt_pool import PromptPool


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
    tokens: int = 0  # prompt tokens scored (worker metrics)


class Reranker:
    """Prompt building plus an engine. Pairs that cannot be built get an error; the rest are scored.

    A chunk of at least 2 x ``pipeline_pairs`` goes to the engine in slices of that size while a
    helper process tokenizes the next ones: tokenizing first and scoring after left an H100 idle for
    14 % of a 0.6B chunk, and a thread does not overlap with vLLM's in-process engine (bench/RESULTS.md)."""

    def __init__(self, builder: PromptBuilder, engine: Engine, pipeline_pairs: int = 4096):
        self.builder = builder
        self.engine = engine
        self.pipeline_pairs = pipeline_pairs
        self._pool: PromptPool | None = None

    def score(self, pairs: Sequence[Pair]) -> list[PairScore]:
        n = self.pipeline_pairs
        if not n or len(pairs) < 2 * n:
            return self._score_prompts(self.builder.build(pairs))
        if self._pool is None:
            self._pool = PromptPool(self.builder)
        slices = [pairs[i : i + n] for i in range(0, len(pairs), n)]
        upcoming: Future[list[Prompt]] | None = self._pool.submit(slices[1])
        prompts = self.builder.build(slices[0])  # here, while the helper does the second slice
        out: list[PairScore] = []
        for k, piece in enumerate(slices):
            if k:  # the helper stays one slice ahead of the engine
                prompts = self._take(upcoming, piece) if upcoming is not None else self.builder.build(piece)
                upcoming = self._pool.submit(slices[k + 1]) if self._pool and k + 1 < len(slices) else None
            out.extend(self._score_prompts(prompts))
        return out

    def _take(self, upcoming: Future[list[Prompt]], pairs: Sequence[Pair]) -> list[Prompt]:
        try:
            return upcoming.result()
        except Exception:  # the helper died (BrokenProcessPool): tokenize here from now on
            if self._pool is not None:
                self._pool.close()
            self._pool, self.pipeline_pairs = None, 0
            return self.builder.build(pairs)

    def _score_prompts(self, prompts: list[Prompt]) -> list[PairScore]:
        ok = [i for i, p in enumerate(prompts) if p.token_ids is not None]
        scores = self.engine.score_prompts([prompts[i].token_ids for i in ok]) if ok else []  # type: ignore[misc]
        if len(scores) != len(ok):
            raise RuntimeError(f"engine {self.engine.name} returned {len(scores)} scores for {len(ok)} prompts")
        out = [PairScore(None, p.error) for p in prompts]
        for i, s in zip(ok, scores):
            out[i] = PairScore(float(s), None, prompts[i].truncated, len(prompts[i].token_ids))  # type: ignore[arg-type]
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self.engine.close()
