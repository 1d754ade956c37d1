"""Which pairs share a chunk: query runs packed into chunks of about ``chunk_size`` pairs, never split,
and every run whose (instruction, query) text an earlier chunk holds put into that chunk.

Why: identical pairs (the same instruction, query and document, under any ids) must be scored once
and fanned out, so that they get the same score bit for bit (without batch invariance, two copies
scored in different batches differ in the last bits, and the score cache, which keeps one value per
text, would then make the next night report unedited pairs as changed). A pair's score-cache key
starts with its (instruction, query) text, so pairs that share a key share that text; with every run
of one text in one chunk, the worker sees all copies of a key together and scores it once
(``worker/tasks.py``). A run of one query id is contiguous and never split (as before); a query text
repeated under other query ids joins its first chunk, which may then exceed ``chunk_size`` by those
runs, up to ``GROWTH`` times: a text repeated beyond that (say, one query under thousands of ids)
goes on in a chunk of its own, and its copies in two chunks are scored once per chunk (bit for bit
alike under batch invariance, the GPU default; within the last bits otherwise)."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rerankq.settings import DEFAULT_INSTRUCTION
from rerankq.store.records import NewChunk
from schemas import InlinePair, InlineSpec

Run = TypeVar("Run")
# A chunk takes runs of texts it holds up to GROWTH x chunk_size pairs: past that (one query text under
# very many query ids) a run starts its text's next chunk, so chunks stay bounded.
GROWTH = 4


def text_head(instruction: str | None, query: str | None) -> bytes:
    """16 bytes standing for an (instruction, query) text (None: the default instruction): the part of
    a score-cache key that a chunk plan groups by, without needing a scoring context."""
    h = hashlib.blake2b(digest_size=16)
    for part in (DEFAULT_INSTRUCTION if instruction is None else instruction, query or ""):
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(8, "little") + raw)
    return h.digest()


@dataclass
class _Chunk(Generic[Run]):
    runs: list[Run] = field(default_factory=list)
    pairs: int = 0
    heads: set = field(default_factory=set)  # the texts it holds (kept only where chunks are taken out early)


class ChunkPacker(Generic[Run]):
    """Runs (opaque to it: segments, row numbers or pairs) with their pair count and text heads, in
    submission order, packed into chunks; see the module docstring."""

    def __init__(self, chunk_size: int, growth: int = GROWTH, streaming: bool = False):
        self.size = chunk_size
        self.cap = growth * chunk_size
        self._chunks: list[_Chunk[Run] | None] = []
        self._parent: list[int] = []  # union-find over chunk indexes: a merged chunk points to its survivor
        self._home: dict[Hashable, int] = {}  # text head -> (a chunk merged into) the chunk holding it
        self._open: int | None = None
        self._live: dict[int, None] = {}  # chunks not merged away nor taken out, in order
        self._track = streaming  # heads kept per chunk, to forget those of chunks ``take_closed`` takes out

    def _find(self, i: int) -> int:
        while self._parent[i] != i:
            self._parent[i] = self._parent[self._parent[i]]
            i = self._parent[i]
        return i

    def _new(self) -> int:
        self._chunks.append(_Chunk())
        self._parent.append(len(self._parent))
        self._live[len(self._chunks) - 1] = None
        return len(self._chunks) - 1

    def add(self, run: Run, pairs: int, heads: Iterable[Hashable]) -> None:
        heads = set(heads)
        homes = sorted({c for c in (self._find(self._home[h]) for h in heads if h in self._home) if self._chunks[c] is not None})
        room = [c for c in homes if self._pairs(c) + pairs <= self.cap]
        if room:  # its text is in an earlier chunk (two, for a run of several instructions: they merge)
            target = room[0]
            for other in room[1:]:
                if self._pairs(target) + self._pairs(other) + pairs <= self.cap:
                    self._merge(other, target)
        else:
            current = self._chunks[self._open] if self._open is not None else None
            if current is None or (current.pairs and current.pairs + pairs > self.size):
                self._open = self._new()
            target = self._open  # type: ignore[assignment]
        chunk = self._chunks[target]
        assert chunk is not None
        chunk.runs.append(run)
        chunk.pairs += pairs
        if self._track:
            chunk.heads |= heads
        for h in heads:  # a text whose chunk was full starts again here: later runs of it join this one
            self._home[h] = target

    def _pairs(self, i: int) -> int:
        return self._chunks[i].pairs  # type: ignore[union-attr]

    def _merge(self, other: int, target: int) -> None:
        merged, into = self._chunks[other], self._chunks[target]
        assert merged is not None and into is not None
        into.runs.extend(merged.runs)
        into.pairs += merged.pairs
        into.heads |= merged.heads
        self._chunks[other], self._parent[other] = None, target
        self._live.pop(other, None)
        if self._open == other:
            self._open = target

    def take_closed(self) -> list[tuple[list[Run], int]]:
        """The chunks no later run can join but by its text (all but the open one, and that one too once
        full), taken out for a streaming submission to send now (producer/streaming.py). A later run of a
        text one of them holds starts that text's next chunk, as a text past ``GROWTH`` does: its copies
        are then scored once per chunk (bit for bit alike under batch invariance, the GPU default)."""
        out = []
        for i in list(self._live):
            chunk = self._chunks[i]
            if chunk is None or (i == self._open and chunk.pairs < self.size):
                continue
            if chunk.pairs:
                out.append((chunk.runs, chunk.pairs))
            for h in chunk.heads:
                if h in self._home and self._find(self._home[h]) == i:
                    del self._home[h]
            self._chunks[i] = None
            self._live.pop(i)
            if self._open == i:
                self._open = None
        return out

    def chunks(self) -> list[tuple[list[Run], int]]:
        """Each chunk's runs (in the order added, merged chunks after) and its number of pairs."""
        return [(c.runs, c.pairs) for c in self._chunks if c is not None and c.pairs]


def inline_chunks(runs: Iterable[list[InlinePair]], chunk_size: int) -> list[NewChunk]:
    """Inline pairs' chunks, from their query runs (each one query id's pairs, instructions resolved)."""
    packer: ChunkPacker[list[InlinePair]] = ChunkPacker(chunk_size)
    for run in runs:
        packer.add(run, len(run), {text_head(p.instruction, p.query) for p in run})
    return [
        NewChunk(InlineSpec(pairs=[p for run in runs for p in run]).model_dump(mode="json"), pairs)
        for runs, pairs in packer.chunks()
    ]
