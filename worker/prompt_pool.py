"""Tokenize chunks in helper processes, slice by slice, ahead of the engine.

A thread does not overlap with vLLM's in-process engine loop (measured on an H100: no gain, see
bench/RESULTS.md); a process does. The helpers are spawned once per worker, hold their own copy of
the prompt builder, and are killed by the kernel when the worker dies, even by SIGKILL. Slices are
taken in submission order, so the chunk that entered first is tokenized first.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from tokenizers import Tokenizer

from rerankq.families import PairBuilder, family_named
from rerankq.orphans import die_with_parent
from rerankq.prompt import Pair, Prompt

_builder: PairBuilder | None = None


def _init(parent_pid: int, family: str, tokenizer_json: str, max_length: int, default_instruction: str) -> None:
    global _builder
    die_with_parent(parent_pid)
    if os.getppid() != parent_pid:  # the worker is already gone
        os._exit(0)
    _builder = family_named(family).builder(Tokenizer.from_str(tokenizer_json), max_length, default_instruction, owned=True)


def _build(pairs: Sequence[Pair]) -> list[Prompt]:
    assert _builder is not None
    return _builder.build(pairs)


def default_processes() -> int:
    """One helper tokenizes ~6,000 pairs/s, several times what one GPU scores; two on a roomy host."""
    return 2 if (os.cpu_count() or 1) >= 8 else 1


class PromptPool:
    def __init__(self, builder: PairBuilder, processes: int | None = None):
        self._pool = ProcessPoolExecutor(
            max_workers=processes or default_processes(),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(os.getpid(), builder.family, builder.tokenizer_json(), builder.max_length, builder.default_instruction),
        )

    def warm(self) -> None:
        """Start the helpers now (each loads its tokenizer) rather than on a chunk's first slice."""
        for _ in range(self._pool._max_workers):
            self._pool.submit(_build, [Pair("warm", "up")])

    def submit(self, pairs: Sequence[Pair]) -> Future[list[Prompt]]:
        return self._pool.submit(_build, list(pairs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
