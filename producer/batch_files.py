"""Batch files in ``vllm run-batch``'s format (OpenAI's batch JSONL): one request a line,
``{custom_id, method, url, body}`` for ``/v1/rerank`` or ``/v1/score``; output lines
``{id, custom_id, response: {status_code, request_id, body}, error}``.

A batch is a rerankq job of kind ``batch``: each good line becomes one query's inline pairs (query id
= the line's number), checked with ``submit_pairs``' own checks and submitted a chunk at a time by
producer/batch_submission.py (chunking, score reuse and model pinning as for any job, in the memory of a
few chunks), so a batch heals like any job. A bad line fails only itself, reported in the error file
with its line and field.

Files live under RERANKQ_FILES_DIR, not in the ledger: batch files reach gigabytes, and are streamed
from the upload to disk and from disk to the client; the ledger keeps their metadata, so a batch's
status and the files' retention stay transactional. The output files are written once, when the job
has ended, by whoever first looks (the service or ``producer export``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from producer.batch_lines import ENDPOINTS, MAX_ERRORS, LineReader, known_url
from producer.batch_reading import physical_lines
from producer.batch_submission import submit_lines
from producer.errors import InputError
from producer.submission import notify_url
from rerankq.routing import normalize_model
from rerankq.settings import Settings, get_settings
from rerankq.store.batches import EXPIRED, BatchRow, BatchStore, FileRow, new_file_id
from rerankq.store.clock import now
from rerankq.store.webhooks import batch_id
from schemas import JobState

_WINDOW = re.compile(r"^(\d+)([hd])$")  # completion_window: 24h, 2d


def files_dir(settings: Settings) -> Path:
    path = Path(settings.files_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_path(row: FileRow, settings: Settings) -> Path:
    return Path(settings.files_dir).expanduser() / row.path


_MAX_FILENAME = 255  # characters


def check_filename(filename: str) -> str:
    """A client's filename is kept as metadata only (the bytes are stored under the file's id): refused
    if it holds control characters (NUL, CR, LF, …: PostgreSQL refuses NUL, headers refuse CR/LF) or is too long."""
    bad = next((c for c in filename if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise InputError(f"field 'file': filename holds the control character {bad!r}")
    if len(filename) > _MAX_FILENAME:
        raise InputError(f"field 'file': filename of {len(filename):,} characters, over the limit of {_MAX_FILENAME}")
    return filename


class FileWriter:
    """One upload written once, straight into RERANKQ_FILES_DIR: to ``<id>.jsonl.part`` as its bytes
    arrive (the size cap checked as they do), renamed and recorded by ``commit``; ``abort`` (or any
    failure in ``commit``) leaves neither bytes nor a row."""

    def __init__(self, settings: Settings, purpose: str = "batch"):
        self.settings, self.purpose = settings, purpose
        self.id = new_file_id()
        self.name = f"{self.id}.jsonl"
        self.target = files_dir(settings) / self.name
        self.part = self.target.with_name(self.name + ".part")
        self.size = 0
        self._f: BinaryIO | None = open(self.part, "wb")  # noqa: SIM115 - closed by commit or abort

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.settings.max_file_bytes:
            raise InputError(f"file: over the limit of {self.settings.max_file_bytes:,} bytes (RERANKQ_MAX_FILE_BYTES)")
        assert self._f is not None
        self._f.write(data)

    def commit(self, store: BatchStore, filename: str) -> FileRow:
        assert self._f is not None
        try:
            self._f.close()
            self._f = None
            self.part.replace(self.target)
            return store.add_file(self.purpose, filename, self.size, self.name, file_id=self.id)
        except BaseException:
            self.target.unlink(missing_ok=True)
            self.abort()
            raise

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self.part.unlink(missing_ok=True)


def store_file(store: BatchStore, settings: Settings, chunks: Iterable[bytes], filename: str, purpose: str = "batch") -> FileRow:
    """Stream ``chunks`` to a new file under RERANKQ_FILES_DIR and record it; nothing is left if anything fails."""
    check_filename(filename)
    writer = FileWriter(settings, purpose)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.commit(store, filename)


def delete_file(store: BatchStore, settings: Settings, file_id: str) -> bool:
    row = store.delete_file(file_id)
    if row is None:
        return False
    file_path(row, settings).unlink(missing_ok=True)
    return True


# --- submitting -----------------------------------------------------------------------------------
def window_seconds(completion_window: str) -> float:
    m = _WINDOW.match(completion_window)
    if m is None or int(m.group(1)) < 1:
        raise InputError(f"field 'completion_window': {completion_window!r}: expected hours or days, e.g. 24h")
    return int(m.group(1)) * (3600 if m.group(2) == "h" else 86400)


def _first_endpoint(path: Path, settings: Settings) -> str:
    """The url of the first line that names one, looking at no more lines than the file may hold."""
    with open(path, "rb") as f:
        for number, raw in physical_lines(f, settings.batch_max_line_bytes):
            if number >= settings.batch_max_lines:
                break
            try:
                url = json.loads(raw).get("url") if isinstance(raw, bytes) else None
            except (ValueError, AttributeError):
                continue
            if isinstance(url, str) and known_url(url):
                return url
    return ENDPOINTS[0]


def batch_store(settings: Settings) -> BatchStore:
    return BatchStore(settings.database, settings.connect_timeout, dead_after=settings.worker_dead_after)


def submit_batch(
    input_file: FileRow,
    *,
    endpoint: str | None = None,
    completion_window: str = "24h",
    metadata: dict | None = None,
    notify: str | None = None,
    name: str | None = None,
    chunk_size: int | None = None,
    reuse: bool = True,
    settings: Settings | None = None,
) -> BatchRow:
    """Check every line of a stored batch file, then submit its good lines as one job; the batch.
    ``endpoint`` None (the CLI): the first line's url; a line for another endpoint fails."""
    settings = settings or get_settings()
    if not file_path(input_file, settings).is_file():
        raise InputError(f"field 'input_file_id': file {input_file.id}: its bytes are gone from RERANKQ_FILES_DIR")
    endpoint = endpoint or _first_endpoint(file_path(input_file, settings), settings)
    if not known_url(endpoint):  # recorded for the batch object; each line is routed by its own url, as in vLLM
        raise InputError(f"field 'endpoint': {endpoint!r}: expected a path ending in /rerank or /score, e.g. {', '.join(ENDPOINTS)}")
    window = window_seconds(completion_window)
    notify = notify_url(notify, settings)
    store = batch_store(settings)
    reader = LineReader(settings, endpoint)
    recorded = dict(
        endpoint=endpoint, completion_window=completion_window, window_seconds=window, metadata=metadata,
        input_file_id=input_file.id,
    )  # fmt: skip
    job_id, found = submit_lines(
        file_path(input_file, settings), reader, settings, name=name or input_file.filename, chunk_size=chunk_size,
        reuse=reuse, notify=notify,
        record_batch=lambda scan: store.batch_recorder(**recorded, lines_total=scan.total, lines_rejected=scan.rejected),
    )  # fmt: skip
    if job_id is not None:
        return store.batch(batch_id(job_id))  # type: ignore[return-value]
    errors = [
        {"code": "invalid_request", "message": b.message, "param": b.param, "line": b.number + 1}
        for b in found.bad[:MAX_ERRORS]
    ] or [{"code": "empty_file", "message": "the file has no request lines", "param": None, "line": None}]
    if found.rejected > len(found.bad):
        errors.append(more_errors(found.rejected - len(found.bad), "the batch's errors"))
    batch = store.record_failed_batch(
        **recorded, lines_total=found.total, errors=errors, notify=notify,
        model=reader.model or normalize_model(settings.model), name=name,
    )  # fmt: skip
    return store.batch(batch)  # type: ignore[return-value]


def submit_batch_path(path: str | Path, *, settings: Settings | None = None, **options: Any) -> BatchRow:
    """``producer submit batch.jsonl``: the file is copied under RERANKQ_FILES_DIR (as an upload would be), then submitted."""
    settings = settings or get_settings()
    source = Path(path)
    try:
        with open(source, "rb") as f:
            row = store_file(batch_store(settings), settings, iter(lambda: f.read(1 << 20), b""), source.name)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return submit_batch(row, settings=settings, **options)


# --- status ---------------------------------------------------------------------------------------
MORE_ERRORS = "more_errors"  # the code of the note that says how many failed lines a list leaves out
NOT_WRITTEN = "output_not_written"  # a look's note: the output files could not be written (retried)


def more_errors(count: int, where: str) -> dict:
    """OpenAI's batch error shape for "and N more": ``errors.data`` can only hold what one error is."""
    return {"code": MORE_ERRORS, "message": f"{count:,} more failed lines are not in {where}", "param": None, "line": None}


def fatal_errors(row: BatchRow) -> list:
    """The batch's errors that failed it (not the note counting failed lines left out of its error file)."""
    return [e for e in row.errors or () if e.get("code") not in (MORE_ERRORS, NOT_WRITTEN)]


def status(row: BatchRow) -> str:
    if not row.state.terminal:
        return "in_progress"
    if row.state == JobState.cancelled and row.live_chunks:
        return "cancelling"
    if row.completed_at is None:
        return "finalizing"
    if row.state == JobState.cancelled:
        return "expired" if row.job_error == EXPIRED else "cancelled"
    if fatal_errors(row) or (row.state == JobState.failed and not row.lines_completed):
        return "failed"
    return "completed"


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def batch_object(row: BatchRow, store: BatchStore) -> dict:
    """OpenAI's batch object."""
    st = status(row)
    if row.completed_at is not None:
        completed, failed = row.lines_completed or 0, row.lines_failed or 0
    else:
        done, with_errors = store.line_progress(row.job_id)
        completed, failed = done, with_errors + row.lines_rejected
    ended = row.finished_at
    errors = {"object": "list", "data": row.errors} if row.errors else None
    return {
        "id": row.id, "object": "batch", "endpoint": row.endpoint, "errors": errors, "input_file_id": row.input_file_id,
        "completion_window": row.completion_window, "status": st, "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id, "created_at": _ts(row.created_at),
        "in_progress_at": _ts(row.started_at or row.created_at) if not fatal_errors(row) else None,
        "expires_at": _ts(row.expires_at), "finalizing_at": _ts(row.finalizing_at),
        "completed_at": _ts(row.completed_at) if st == "completed" else None,
        "failed_at": _ts(ended) if st == "failed" else None,
        "expired_at": _ts(ended) if st == "expired" else None,
        "cancelling_at": _ts(ended) if row.state == JobState.cancelled and row.job_error != EXPIRED else None,
        "cancelled_at": _ts(row.completed_at) if st == "cancelled" else None,
        "request_counts": {"total": row.lines_total, "completed": completed, "failed": failed},
        "metadata": row.metadata, "model": row.model, "job_id": row.job_id,
    }  # fmt: skip


def prune_files(settings: Settings, older_than: float, dry_run: bool = False) -> tuple[int, int]:
    """Files (uploads and outputs) older than ``older_than`` seconds that no unfinished batch reads:
    removed from the ledger and the disk, with the part files of writers that died (a service killed
    mid-upload) untouched that long, an hour at least. Returns (files, bytes)."""
    store = batch_store(settings)
    rows = store.prunable_files(now() - timedelta(seconds=older_than))
    directory = Path(settings.files_dir).expanduser()
    stale = time.time() - max(older_than, 3600.0)
    parts = [p for p in directory.glob("*.part") if p.stat().st_mtime < stale] if directory.is_dir() else []
    part_bytes = sum(p.stat().st_size for p in parts)
    if not dry_run:
        if rows:
            store.forget_files([r.id for r in rows])
        for path in [file_path(r, settings) for r in rows] + parts:
            path.unlink(missing_ok=True)
    return len(rows) + len(parts), sum(r.bytes for r in rows) + part_bytes
