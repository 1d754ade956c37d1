"""Tokenize the next slice of a chunk in a helper process while the engine scores this one.

A thread does not overlap with vLLM's in-process engine loop (measured on an H100: no gain, see
bench/RESULTS.md); a process does. The helper is spawned once per worker, holds its own copy of the
prompt builder, and exits on its own when the worker dies (its pipe to the parent closes).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from tokenizers import Tokenizer

from worker.prompt import Pair, Prompt, PromptBuilder

_builder: PromptBuilder | None = None


def _init(tokenizer_json: str, max_length: int, default_instruction: str) -> None:
    global _builder
    _builder = PromptBuilder(Tokenizer.from_str(tokenizer_json), max_length, default_instruction)


def _build(pairs: Sequence[Pair]) -> list[Prompt]:
    assert _builder is not None
    return _builder.build(pairs)


class PromptPool:
    def __init__(self, builder: PromptBuilder):
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(builder.tokenizer_json(), builder.max_length, builder.default_instruction),
        )

    def submit(self, pairs: Sequence[Pair]) -> Future[list[Prompt]]:
        return self._pool.submit(_build, list(pairs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
