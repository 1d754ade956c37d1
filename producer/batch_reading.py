"""A batch file's lines read in bounded blocks, with the caps every reader of it applies (submission,
output, the CLI's export): at most RERANKQ_BATCH_MAX_LINES request lines, each held only up to
RERANKQ_BATCH_MAX_LINE_BYTES. The rest of an over-long line is skipped (counted, never kept), and the
line fails alone; so memory while reading is one line at most, whatever the file's shape. What one line
means is producer/batch_lines.py's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from producer.batch_lines import BadLine, GoodLine, LineReader
from producer.errors import InputError
from rerankq.settings import Settings

BLOCK = 1 << 20  # bytes read at a time
_ID_PREFIX = 64 * 1024  # an over-long line's first bytes, kept to name its custom_id
_FIRST_ID = re.compile(rb'^\s*\{\s*"custom_id"\s*:\s*("(?:[^"\\]|\\.){0,1024}")')


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line over the cap: its size and first bytes, not its content."""

    size: int
    head: bytes


def physical_lines(f: BinaryIO, max_line_bytes: int, block: int = BLOCK) -> Iterator[tuple[int, bytes | LongLine]]:
    """(0-based line number, its bytes without the newline, or LongLine), reading ``block`` bytes at a time."""
    for number, _, raw in _lines(f, max_line_bytes, block):
        yield number, raw


def _lines(f: BinaryIO, max_line_bytes: int, block: int = BLOCK) -> Iterator[tuple[int, int, bytes | LongLine]]:
    """(line number, the offset of its first byte, its bytes or LongLine)."""
    number, buf, skipped, head, at, begin = 0, bytearray(), 0, b"", 0, 0
    while data := f.read(block):
        start = 0
        while True:
            nl = data.find(b"\n", start)
            end = nl if nl >= 0 else len(data)
            if skipped:
                skipped += end - start
            elif len(buf) + end - start > max_line_bytes:
                head = bytes(buf[:_ID_PREFIX]) + data[start : start + max(0, _ID_PREFIX - len(buf))]
                skipped = len(buf) + end - start
                buf.clear()
            else:
                buf += data[start:end]
            if nl < 0:
                break
            yield number, begin, (LongLine(skipped, head) if skipped else bytes(buf))
            number, skipped, head, start = number + 1, 0, b"", nl + 1
            begin = at + start
            buf.clear()
        at += len(data)
    if skipped:
        yield number, begin, LongLine(skipped, head)
    elif buf:
        yield number, begin, bytes(buf)


def _custom_id(head: bytes) -> str | None:
    """The custom_id of an over-long line, when it is the line's first key (it usually is)."""
    m = _FIRST_ID.match(head)
    if m is None:
        return None
    try:
        value = json.loads(m.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def request_lines(f: BinaryIO, reader: LineReader, settings: Settings) -> Iterator[GoodLine | BadLine]:
    """Each non-blank line checked by ``reader``; a line over RERANKQ_BATCH_MAX_LINE_BYTES fails alone;
    InputError past RERANKQ_BATCH_MAX_LINES request lines (before the next one is parsed)."""
    for _, _, item in positioned_request_lines(f, reader, settings):
        yield item


def positioned_request_lines(
    f: BinaryIO, reader: LineReader, settings: Settings
) -> Iterator[tuple[int, int, GoodLine | BadLine]]:
    """``request_lines`` with each line's offset and size in bytes (where to read it again)."""
    cap, count = settings.batch_max_line_bytes, 0
    for number, offset, raw in _lines(f, cap):
        if isinstance(raw, bytes) and not raw.strip():
            continue
        count += 1
        if count > settings.batch_max_lines:
            raise InputError(
                f"line {number + 1}: more than {settings.batch_max_lines:,} request lines in one batch file "
                "(RERANKQ_BATCH_MAX_LINES): split the file"
            )
        if isinstance(raw, LongLine):
            cid = _custom_id(raw.head)
            named = f" (custom_id {cid[:64]!r})" if cid is not None else ""
            yield offset, raw.size, BadLine(
                number, cid, "line",
                f"line {number + 1}{named}: {raw.size:,} bytes, over the limit of {cap:,} (RERANKQ_BATCH_MAX_LINE_BYTES)",
            )  # fmt: skip
        else:
            yield offset, len(raw), reader.line(number, raw)
