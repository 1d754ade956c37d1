"""POST /v1/files' multipart body parsed as it streams (python-multipart's parser): the file part goes
straight into RERANKQ_FILES_DIR (producer/batch_files.FileWriter), written once. FastAPI's UploadFile
would spool it whole to TMPDIR first, then be copied: twice the disk, and TMPDIR may be small."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import unquote

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from producer.batch_files import FileWriter, batch_store, check_filename
from producer.errors import InputError
from rerankq.settings import Settings
from rerankq.store.batches import FileRow

_MAX_HEADER = 16 * 1024  # bytes of one part header
_MAX_FIELD = 1024  # bytes of a form field (purpose)
_MAX_PARTS = 8
_FEED = 1 << 20  # bytes handed to the parser (and the disk) at a time, off the event loop
_EXTENDED = re.compile(rb";\s*filename\*\s*=\s*([^;\s]+)", re.IGNORECASE)  # RFC 5987 (python-multipart drops it)


class _Upload:
    """The parser's callbacks: form fields kept (small), the one file part written as it arrives."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.fields: dict[str, str] = {}
        self.writer: FileWriter | None = None
        self.filename: str | None = None
        self.parts = 0
        self._header = self._value = b""
        self._disposition = b""
        self._field: str | None = None  # the form field being read, None for the file part
        self._data = bytearray()
        self._in_file = False
        self.ended = False  # the closing boundary was seen: the body is whole

    # --- callbacks -----------------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > _MAX_PARTS:
            raise InputError(f"request body: more than {_MAX_PARTS} multipart parts (expected 'file' and 'purpose')")
        self._disposition, self._field, self._in_file = b"", None, False
        self._data.clear()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]
        self._bounded(self._header)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self._bounded(self._value)

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = _filename(self._disposition, options)
        if filename is None:
            self._field = name
            return
        if name != "file" or self.writer is not None:
            raise InputError("request body: expected one file, in the multipart field 'file'")
        self.filename = check_filename(filename or "batch.jsonl")
        self.writer = FileWriter(self.settings)  # only once the name is known to be fine: no orphaned bytes
        self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            assert self.writer is not None
            self.writer.write(data[start:end])
            return
        self._data += data[start:end]
        if len(self._data) > _MAX_FIELD:
            raise InputError(f"field {self._field!r}: over {_MAX_FIELD} bytes")

    def on_part_end(self) -> None:
        if not self._in_file and self._field is not None:
            self.fields[self._field] = self._data.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    @staticmethod
    def _bounded(value: bytes) -> None:
        if len(value) > _MAX_HEADER:
            raise InputError(f"request body: a multipart header over {_MAX_HEADER:,} bytes")

    def callbacks(self) -> dict:
        return {
            name: getattr(self, name)
            for name in (
                "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value", "on_header_end",
                "on_headers_finished", "on_end",
            )
        }  # fmt: skip


def _filename(disposition: bytes, options: dict[bytes, bytes]) -> str | None:
    """The part's filename: RFC 5987's ``filename*=utf-8''…`` if given, else ``filename``; None: not a file."""
    extended = _EXTENDED.search(disposition)
    if extended is not None:
        charset, _, rest = extended.group(1).decode("latin-1").partition("'")
        encoding = "iso-8859-1" if charset.lower() == "iso-8859-1" else "utf-8"  # the two RFC 5987 names
        return unquote(rest.partition("'")[2], encoding=encoding, errors="replace")
    plain = options.get(b"filename")
    return plain.decode("utf-8", "replace") if plain is not None else None


def _boundary(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise InputError("request body: expected multipart/form-data with fields 'file' and 'purpose'")
    return params[b"boundary"]


async def receive_upload(stream: AsyncIterator[bytes], content_type: str, settings: Settings) -> FileRow:
    """The upload's file written into RERANKQ_FILES_DIR and recorded; nothing is left behind if the
    body, its fields or the disk fail (InputError for what the client sent)."""
    upload = _Upload(settings)
    parser = MultipartParser(_boundary(content_type), upload.callbacks())

    def feed(data: bytes) -> None:
        try:
            parser.write(data)
        except FormParserError as exc:
            raise InputError(f"request body: not valid multipart data ({exc})") from None

    try:
        pending = bytearray()
        async for chunk in stream:
            pending += chunk
            if len(pending) >= _FEED:
                await asyncio.to_thread(feed, bytes(pending))
                pending.clear()
        await asyncio.to_thread(feed, bytes(pending))
        parser.finalize()
        if not upload.ended:
            raise InputError("request body: the multipart body ends before its closing boundary")
        purpose = upload.fields.get("purpose")
        if purpose is None:
            raise InputError("field 'purpose': required ('batch')")
        if purpose != "batch":
            raise InputError(f"field 'purpose': {purpose!r}: only 'batch' files are kept here")
        if upload.writer is None or upload.filename is None:
            raise InputError("field 'file': required (the batch file, as a multipart file part)")
        writer, filename = upload.writer, upload.filename
        upload.writer = None  # commit cleans up after itself
        return await asyncio.to_thread(writer.commit, batch_store(settings), filename)
    finally:
        if upload.writer is not None:
            upload.writer.abort()
