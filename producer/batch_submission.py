"""A batch file's good lines submitted as one job in the memory of a few chunks, whatever the file's size.

Why not through ``submit_pairs``: that holds every pair, chunk row and message at once (2x to 5x the
file's bytes). Here the stored file is read again instead of held. The first pass checks every line
(producer/batch_reading.py, the caps included) and keeps, per good line, only where it lies, its
pairs' sizes and its query texts' heads; with score reuse it also stages the pairs' cache keys
(rerankq/store/reuse_stage.py). Chunks are then planned over that (producer/chunk_plans.py: a line's
pairs together, a repeated query text joining its first chunk, and at most ``CHUNK_CHARS`` of text
in a chunk's plan) and built one at a time while the job is recorded: each of a chunk's lines is
read from the file again and checked by the same reader, so its pairs are those the first pass
checked. The job, its batch row and its chunks commit in one transaction (a failure leaves none of
them and nothing queued); the messages are then read back from the ledger one chunk at a time."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from producer.batch_lines import MAX_ERRORS, BadLine, GoodLine, LineReader
from producer.batch_reading import positioned_request_lines
from producer.chunk_plans import ChunkPacker, text_head
from producer.errors import InputError
from producer.job_control import ledger
from producer.queueing import check_broker, enqueue_pending
from producer.reuse import choose_context
from producer.submission import for_model
from rerankq.routing import normalize_model
from rerankq.score_key import pair_keys
from rerankq.settings import Settings
from rerankq.store.records import NewChunk
from rerankq.store.reuse_stage import STAGE_ROWS, ReuseStage
from schemas import InlinePair, InlineSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Text (characters of query, document and instruction, per pair) in one chunk's plan: a chunk of
# long documents has fewer pairs than RERANKQ_CHUNK_SIZE, so one chunk (its spec, its SQL row and
# its message, each a copy) stays a few tens of MB. A chunk joined by runs of a query text it holds
# may reach GROWTH times this (producer/chunk_plans.py; 2 here, not 4: a file of one query repeated
# stays within the same bound), a line with more text than this is cut into pieces.
CHUNK_CHARS = 4 * 1024 * 1024
GROWTH = 2


@dataclass(slots=True)
class _Line:
    number: int  # 0-based physical line
    offset: int  # where its bytes start in the file
    size: int  # its bytes, without the newline
    first: int  # the submission's index (seq) of its first pair
    pairs: int
    heads: frozenset[bytes]  # its (instruction, query) texts' heads


@dataclass
class Scan:
    """What the first pass keeps: the good lines' places and weights, the bad lines' first errors."""

    lines: list[_Line] = field(default_factory=list)
    chars: array = field(default_factory=lambda: array("Q"))  # per pair (seq), its text's characters
    total: int = 0
    rejected: int = 0
    bad: list[BadLine] = field(default_factory=list)  # the first MAX_ERRORS

    @property
    def pairs(self) -> int:
        return len(self.chars)


class _Keys:
    """The good lines' score-cache keys staged a few thousand pairs at a time (one lookup at recording)."""

    def __init__(self, stage: ReuseStage, context: str):
        self.stage, self.context = stage, context
        self.keys: list[bytes | None] = []
        self.qids: list[str] = []
        self.dids: list[str] = []

    def add(self, pairs: list[InlinePair]) -> None:
        self.keys += pair_keys(self.context, [p.instruction for p in pairs], [p.query for p in pairs], [p.document for p in pairs])
        self.qids += [p.query_id for p in pairs]
        self.dids += [p.doc_id for p in pairs]
        if len(self.keys) >= STAGE_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.keys:
            self.stage.add(self.keys, self.qids, self.dids)
            self.keys, self.qids, self.dids = [], [], []


def scan(f: BinaryIO, reader: LineReader, settings: Settings, on_good: Callable[[GoodLine], None] | None = None) -> Scan:
    """Every line checked (InputError past the caps on lines and pairs); ``on_good`` sees each good line."""
    out = Scan()
    for offset, size, item in positioned_request_lines(f, reader, settings):
        out.total += 1
        if isinstance(item, BadLine):
            out.rejected += 1
            if len(out.bad) < MAX_ERRORS:
                out.bad.append(item)
            continue
        if out.pairs + len(item.pairs) > settings.batch_max_pairs:
            raise InputError(
                f"line {item.number + 1}: more than {settings.batch_max_pairs:,} pairs in one batch "
                "(RERANKQ_BATCH_MAX_PAIRS): split the file"
            )
        heads = frozenset(text_head(p.instruction, p.query) for p in item.pairs)
        out.lines.append(_Line(item.number, offset, size, out.pairs, len(item.pairs), heads))
        out.chars.extend(len(p.query) + len(p.document) + len(p.instruction or "") for p in item.pairs)
        if on_good is not None:
            on_good(item)
    return out


@dataclass(frozen=True, slots=True)
class _Run:
    line: int  # index into Scan.lines
    pairs: tuple[int, ...] | range  # the line's pairs (local indexes) in this run


class _Planner:
    """Runs of lines' pairs packed into chunks (light: line indexes and pair indexes), then built one
    chunk at a time from the file."""

    def __init__(self, found: Scan, chunk_size: int):
        self.found, self.size = found, chunk_size
        self.packer: ChunkPacker[_Run] = ChunkPacker(chunk_size, GROWTH)

    def add(self, line: int, pairs: tuple[int, ...] | range, heads: Iterable[bytes]) -> None:
        """One line's pairs, cut where their text passes CHUNK_CHARS."""
        first, chars = self.found.lines[line].first, self.found.chars
        piece: list[int] = []
        weight = 0
        for i in pairs:
            c = chars[first + i]
            if piece and weight + c > CHUNK_CHARS:
                self._add(line, piece, weight, heads)
                piece, weight = [], 0
            piece.append(i)
            weight += c
        if piece:
            self._add(line, piece, weight, heads)

    def _add(self, line: int, piece: list[int], chars: int, heads: Iterable[bytes]) -> None:
        n = self.found.lines[line].pairs
        run = _Run(line, range(n) if len(piece) == n else tuple(piece))
        # a chunk holds chunk_size of the larger of pairs and text (in CHUNK_CHARS / chunk_size units)
        self.packer.add(run, max(len(piece), -(-chars * self.size // CHUNK_CHARS)), heads)

    def all_lines(self) -> _Planner:
        for i, line in enumerate(self.found.lines):
            self.add(i, range(line.pairs), line.heads)
        return self

    def misses(self, rows: Iterator[tuple[int, str, bytes]]) -> _Planner:
        """The runs of pairs the score cache did not hold (``(seq, query_id, key)`` in seq order)."""
        starts = [line.first for line in self.found.lines]
        current, local, heads = -1, [], set()
        for seq, _, key in rows:
            li = bisect.bisect_right(starts, seq) - 1
            if li != current and local:
                self.add(current, tuple(local), heads)
                local, heads = [], set()
            current = li
            local.append(seq - starts[li])
            heads.add(bytes(key[:8]))
        if local:
            self.add(current, tuple(local), heads)
        return self

    def chunks(self, path: Path, reader: LineReader) -> Iterator[NewChunk]:
        """Each planned chunk's pairs read again from the file, one chunk at a time."""
        last: tuple[int, GoodLine] | None = None
        with open(path, "rb") as f:
            for runs, _ in self.packer.chunks():
                pairs: list[InlinePair] = []
                for run in runs:
                    if last is None or last[0] != run.line:
                        last = (run.line, _read(f, reader, self.found.lines[run.line]))
                    good = last[1].pairs
                    pairs.extend(good if len(run.pairs) == len(good) else [good[i] for i in run.pairs])
                yield NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), len(pairs))


def _read(f: BinaryIO, reader: LineReader, line: _Line) -> GoodLine:
    f.seek(line.offset)
    item = reader.line(line.number, f.read(line.size))
    if not isinstance(item, GoodLine) or len(item.pairs) != line.pairs:  # the stored file changed underneath
        raise RuntimeError(f"line {line.number + 1} of the batch file reads otherwise than when it was checked")
    return item


def submit_lines(
    path: Path,
    reader: LineReader,
    settings: Settings,
    *,
    name: str | None,
    chunk_size: int | None,
    reuse: bool,
    notify: str | None,
    record_batch: Callable[[Scan], Callable[[Session, str], None]],
) -> tuple[str | None, Scan]:
    """The file's good lines as one job of kind ``batch`` (``record_batch(scan)`` records its batch row in
    the job's transaction); None when no line is good (nothing recorded). Returns the job id and the scan."""
    size = chunk_size or settings.chunk_size
    store = ledger(settings)
    stage: ReuseStage | None = None
    staged_for: str | None = None
    keys: _Keys | None = None

    def staged(good: GoodLine) -> None:  # the stage opens at the first good line, under its model's context
        nonlocal stage, staged_for, keys
        if staged_for is None:
            staged_for = normalize_model(reader.model or settings.model)
            context = choose_context(store, for_model(settings, staged_for)).digest
            if context is not None:
                check_broker(settings)
                stage = ReuseStage(store, settings.cache_touch_interval)
                keys = _Keys(stage, context)
        if keys is not None:
            keys.add(good.pairs)

    try:
        with open(path, "rb") as f:
            found = scan(f, reader, settings, staged if reuse else None)
        if not found.lines:
            return None, found
        job_settings = for_model(settings, reader.model)
        if staged_for is not None and staged_for != normalize_model(job_settings.model):
            # a later line named the model the earlier lines left open: stage again under its context
            if stage is not None:
                stage.close()
            stage = keys = None
            context = choose_context(store, job_settings).digest
            if context is not None:
                stage = ReuseStage(store, settings.cache_touch_interval)
                keys = _Keys(stage, context)
                with open(path, "rb") as f:
                    for line in found.lines:
                        keys.add(_read(f, reader, line).pairs)
        job = dict(
            kind="batch", name=name, instruction=None, model=job_settings.model, notify=notify,
            also=record_batch(found), messages=False,
        )  # fmt: skip
        planner = _Planner(found, size)
        if keys is None:
            check_broker(job_settings)
            job_id, _ = store.create_job(chunks=planner.all_lines().chunks(path, reader), **job)  # type: ignore[arg-type]
            enqueue_pending(job_id, store, job_settings)
        else:
            keys.flush()
            assert stage is not None
            job_id, _, _, _ = stage.record(lambda misses: planner.misses(misses).chunks(path, reader), keys.context, **job)
            enqueue_pending(job_id, store, job_settings)
            stage.touch()  # after the job is queued: best effort
    finally:
        if stage is not None:
            stage.close()
    return job_id, found
