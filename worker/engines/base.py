"""The one interface every engine sits behind: ``Reranker.score(pairs) -> results in input order``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from rerankq.families.base import PairBuilder
from rerankq.log_odds import log_odds, probability
from rerankq.prompt import Pair, Prompt
from worker.engines.serial import SerialExecutor
from worker.prompt_pool import PromptPool

# Pairs per slice as a chunk starts: the engine gets its first prompts after a few milliseconds of
# tokenizing instead of a whole slice's worth; later slices are ``pipeline_pairs`` long.
RAMP = (256, 512, 1024, 2048)
# Chunks this small (the health check, tiny inline jobs) are tokenized on the calling thread.
INLINE_PAIRS = 64


class Engine(Protocol):
    """Scores ready-made prompts (token ids, each within max_length): the log-odds of "yes" per prompt,
    logit(yes) − logit(no), in order (rerankq/log_odds.py makes the probability from it).

    Families with token types (BERT, rerankq/families) also pass ``type_starts=`` (per prompt, the
    position where the document's segment starts). An engine may also offer ``submit_log_odds(prompts) -> Future[list[float]]`` (safe from any thread,
    and batches from several calls share the engine, as VllmEngine's loop does) and ``cancel(future)``.
    One without them is called from one thread at a time. An engine that has only
    ``score_prompts(prompts) -> list[float]`` (probabilities: custom engines written before log-odds)
    still works; its log-odds are derived from its probabilities, so they saturate where they do."""

    name: str

    def log_odds(self, prompts: Sequence[list[int]]) -> list[float]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PairScore:
    score: float | None  # P(yes)
    error: str | None = None
    truncated: bool = False
    tokens: int = 0  # prompt tokens scored (worker metrics)
    logit: float | None = None  # log-odds of yes: what ranks follow


@dataclass(eq=False)
class Pending:
    """A request's prompts handed to the engine and not yet collected (``Reranker.start``)."""

    prompts: list[Prompt]
    ok: list[int]
    future: Future[list[float]] | None
    done: bool = field(default=False)


def gives_log_odds(engine: object) -> bool:
    """Whether the engine gives log-odds (else only probabilities, through ``score_prompts``)."""
    return callable(getattr(engine, "log_odds", None)) or callable(getattr(engine, "submit_log_odds", None))


def slices(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of each slice of n pairs: a short ramp, then ``size`` each."""
    out: list[tuple[int, int]] = []
    start = 0
    for step in (*(r for r in RAMP if r < size), size):
        while start < n:
            end = min(n, start + step)
            out.append((start, end))
            start = end
            if step != size:
                break
    return out


class Reranker:
    """Prompt building plus an engine. Pairs that cannot be built get an error; the rest are scored.

    ``score`` is safe to call from several threads at once (Celery's threads pool runs a few chunks over
    one Reranker): each call streams its chunk through the helper tokenizer processes slice by slice,
    and hands every slice to the engine as soon as it is tokenized, without waiting for earlier slices
    to be scored. With VllmEngine all calls feed one engine loop, so the batch never drains between
    slices or chunks; other engines are called one slice at a time."""

    def __init__(self, builder: PairBuilder, engine: Engine, pipeline_pairs: int = 4096):
        self.builder = builder
        self.engine = engine
        self.pipeline_pairs = pipeline_pairs
        self._lock = threading.Lock()
        self._pool: PromptPool | None = None
        self._pool_broken = False
        self._serial: SerialExecutor | None = None
        self._raw = gives_log_odds(engine)
        # an engine's submit_log_odds takes ``priority`` when it says so (VllmEngine); serial engines always do
        self._priorities = bool(getattr(engine, "priorities", False))
        if not callable(getattr(engine, "submit_log_odds", None)):
            self._serial = SerialExecutor()

    # ---------------------------------------------------------------- scoring
    def score(self, pairs: Sequence[Pair]) -> list[PairScore]:
        if not pairs:
            return []
        pool = self._get_pool() if len(pairs) > INLINE_PAIRS and self.pipeline_pairs else None
        bounds = slices(len(pairs), self.pipeline_pairs or len(pairs)) if pool else [(0, len(pairs))]
        tokenized: list[Future[list[Prompt]] | None] = [pool.submit(pairs[a:b]) if pool else None for a, b in bounds]
        submitted: list[tuple[list[Prompt], list[int], Future[list[float]] | None]] = []
        try:
            for (a, b), upcoming in zip(bounds, tokenized):
                prompts = self._take(upcoming, pairs[a:b])
                ok = [i for i, p in enumerate(prompts) if p.token_ids is not None]
                starts = [prompts[i].token_type_start for i in ok] if self.builder.token_types else None
                future = self._submit([prompts[i].token_ids for i in ok], starts) if ok else None  # type: ignore[misc]
                submitted.append((prompts, ok, future))
            out: list[PairScore] = []
            for prompts, ok, future in submitted:
                out.extend(self._collect(prompts, ok, future))
            return out
        except BaseException:
            for upcoming in tokenized:
                if upcoming is not None:
                    upcoming.cancel()
            for _, _, future in submitted:
                if future is not None and not future.done():
                    self._cancel(future)
            raise

    # ---------------------------------------------------------------- the live lane (worker/live_lane.py)
    def start(self, pairs: Sequence[Pair], priority: int = 0) -> Pending:
        """Build a few pairs' prompts on the calling thread (the recipe ``score`` uses) and hand them to the
        engine at once, at ``priority`` (below 0: ahead of batch prompts); ``collect`` waits for the scores."""
        prompts = self.builder.build(pairs)
        ok = [i for i, p in enumerate(prompts) if p.token_ids is not None]
        starts = [prompts[i].token_type_start for i in ok] if self.builder.token_types else None
        future = self._submit([prompts[i].token_ids for i in ok], starts, priority) if ok else None  # type: ignore[misc]
        return Pending(prompts, ok, future)

    def collect(self, pending: Pending, timeout: float | None = None) -> list[PairScore]:
        """The scores of ``start``'s pairs, in order (raises what the engine raised, or CancelledError/
        EngineClosed after ``abort``; TimeoutError after ``timeout`` seconds, the request still running)."""
        if pending.future is not None:
            pending.future.result(timeout)
        pending.done = True
        return self._collect(pending.prompts, pending.ok, pending.future)

    def abort(self, pending: Pending) -> None:
        """Stop spending the engine's time on ``start``'s prompts: dropped if not begun, aborted if running
        (vLLM); a serial engine's call that already runs finishes."""
        if pending.future is not None and not pending.future.done():
            self._cancel(pending.future)

    def _submit(
        self, prompts: list[list[int]], type_starts: list[int | None] | None = None, priority: int = 0
    ) -> Future[list[float]]:
        """``type_starts``: families with token types (BERT) say where each prompt's document starts; the
        engine takes them as ``type_starts=`` (the vLLM and transformers engines do)."""
        extra = {"type_starts": type_starts} if type_starts is not None else {}
        if self._serial is not None:
            call = self.engine.log_odds if self._raw else self.engine.score_prompts  # type: ignore[attr-defined]
            return self._serial.submit(call, prompts, priority=priority, **extra)
        if priority and self._priorities:
            extra["priority"] = priority
        return self.engine.submit_log_odds(prompts, **extra)  # type: ignore[attr-defined]

    def _cancel(self, future: Future[list[float]]) -> None:
        cancel = getattr(self.engine, "cancel", None)
        if self._serial is None and callable(cancel):
            cancel(future)
        else:
            future.cancel()

    def _collect(self, prompts: list[Prompt], ok: list[int], future: Future[list[float]] | None) -> list[PairScore]:
        scores = future.result() if future is not None else []
        if len(scores) != len(ok):
            raise RuntimeError(f"engine {self.engine.name} returned {len(scores)} scores for {len(ok)} prompts")
        out = [PairScore(None, p.error) for p in prompts]
        for i, s in zip(ok, scores):
            if self._raw:  # the engine's log-odds, and their probability
                raw = float(s)
                p = probability(raw)
            else:  # a probability-only engine's score, and log-odds derived from it
                p = float(s)
                raw = log_odds(p)
            out[i] = PairScore(p, None, prompts[i].truncated, len(prompts[i].token_ids), raw)  # type: ignore[arg-type]
        return out

    # ---------------------------------------------------------------- tokenizing
    def _get_pool(self) -> PromptPool | None:
        with self._lock:
            if self._pool is None and not self._pool_broken:
                self._pool = PromptPool(self.builder)
            return self._pool

    def _take(self, upcoming: Future[list[Prompt]] | None, pairs: Sequence[Pair]) -> list[Prompt]:
        if upcoming is None:
            return self.builder.build(pairs)
        try:
            return upcoming.result()
        except Exception:  # a helper died (BrokenProcessPool): tokenize here from now on
            with self._lock:
                if self._pool is not None:
                    self._pool.close()
                self._pool, self._pool_broken = None, True
            return self.builder.build(pairs)

    def warm(self) -> None:
        """Start the tokenizer helpers in the background, so the first chunk does not wait for them."""
        if self.pipeline_pairs:
            pool = self._get_pool()
            if pool is not None:
                pool.warm()

    def close(self) -> None:
        """Helpers stopped, engine shut down (its loop thread joined). Safe to call twice."""
        with self._lock:
            pool, self._pool, self._pool_broken = self._pool, None, True
        if pool is not None:
            pool.close()
        if self._serial is not None:
            self._serial.shutdown(wait=True, cancel_futures=True)
        self.engine.close()
