"""Batch files in ``vllm run-batch``'s format (OpenAI's batch JSONL): one request a line,
``{custom_id, method, url, body}`` for ``/v1/rerank`` or ``/v1/score``; output lines
``{id, custom_id, response: {status_code, request_id, body}, error}``.

A batch is a rerankq job of kind ``batch``: each good line becomes one query's inline pairs (query id
= the line's number), submitted through ``submit_pairs`` (its validation, chunking, score reuse and
model pinning), so a batch heals like any job. A bad line fails only itself: it is checked here, with
``submit_pairs``' own checks, and reported in the error file with its line and field.

Files live under RERANKQ_FILES_DIR, not in the ledger: batch files reach gigabytes, and are streamed
from the upload to disk and from disk to the client; the ledger keeps their metadata, so a batch's
status and the files' retention stay transactional. The output files are written once, when the job
has ended, by whoever first looks (the service or ``producer export``)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from producer.errors import InputError
from producer.interactive import check_rerank
from producer.submission import checked_pairs, notify_url, submit_pairs
from rerankq.routing import normalize_model
from rerankq.settings import Settings, get_settings
from rerankq.store.batches import EXPIRED, BatchRow, BatchStore, FileRow, new_file_id
from rerankq.store.clock import now
from schemas import InlinePair, JobState, RerankBody

ENDPOINTS = ("/v1/rerank", "/v1/score")
MAX_ERRORS = 50  # in a batch's ``errors`` when no line could run
_WINDOW = re.compile(r"^(\d+)([hd])$")
_PAIR_ERROR = re.compile(r"^pair (\d+) field '(\w+)': (.*)$")
_FIELD_ERROR = re.compile(r"^field '([\w.]+)': (.*)$")


# --- the lines --------------------------------------------------------------------------------
class _Line(BaseModel):
    model_config = ConfigDict(extra="ignore")

    custom_id: StrictStr
    method: StrictStr
    url: StrictStr
    body: dict


class ScoreLine(BaseModel):
    """vLLM's /v1/score request: ``text_1`` (queries) against ``text_2`` (documents), one to many or pairwise."""

    model_config = ConfigDict(extra="ignore")

    text_1: StrictStr | list[StrictStr]
    text_2: StrictStr | list[StrictStr]
    model: StrictStr | None = None
    instruction: StrictStr | None = None


@dataclass(frozen=True, slots=True)
class GoodLine:
    number: int  # 0-based physical line; the job's query id is ``query_id(number)``
    custom_id: str
    url: str
    body: RerankBody | ScoreLine
    pairs: list[InlinePair]


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    custom_id: str | None
    param: str
    message: str


def query_id(number: int) -> str:
    """Zero-padded, so the ledger's byte order of query ids is the file's order of lines."""
    return f"{number:09d}"


def _pairs(number: int, url: str, body: RerankBody | ScoreLine) -> list[InlinePair]:
    qid = query_id(number)
    if isinstance(body, RerankBody):
        return [
            InlinePair(query_id=qid, doc_id=str(i), query=body.query, document=d, instruction=body.instruction)
            for i, d in enumerate(body.documents)
        ]
    queries = [body.text_1] if isinstance(body.text_1, str) else body.text_1
    docs = [body.text_2] if isinstance(body.text_2, str) else body.text_2
    if len(queries) == 1:
        queries = queries * len(docs)
    if len(queries) != len(docs):
        raise InputError(f"body.text_1: {len(queries)} texts for {len(docs)} in text_2 (one, or as many)")
    return [
        InlinePair(query_id=qid, doc_id=str(i), query=q, document=d, instruction=body.instruction)
        for i, (q, d) in enumerate(zip(queries, docs))
    ]


def _field_error(exc: ValidationError, prefix: str) -> tuple[str, str]:
    err = exc.errors()[0]
    param = ".".join([prefix, *map(str, err["loc"])]) if prefix else ".".join(map(str, err["loc"]))
    return param, str(err["msg"]).removeprefix("Value error, ")


class LineReader:
    """Checks each line on its own; the first good line that names a model fixes the batch's model
    (a batch is one job, pinned to one model): a line naming another model fails."""

    def __init__(self, settings: Settings, endpoint: str | None = None):
        self.settings, self.endpoint = settings, endpoint
        self.model: str | None = None
        self.seen: dict[str, int] = {}

    def read(self, lines: Iterable[bytes]) -> Iterator[GoodLine | BadLine]:
        for number, raw in enumerate(lines):
            if raw.strip():
                yield self.line(number, raw)

    def line(self, number: int, raw: bytes) -> GoodLine | BadLine:
        where = f"line {number + 1}"
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return BadLine(number, None, "line", f"{where}: not a JSON object ({exc})")
        try:
            line = _Line.model_validate(data)
        except ValidationError as exc:
            param, msg = _field_error(exc, "")
            cid = data.get("custom_id") if isinstance(data, dict) and isinstance(data.get("custom_id"), str) else None
            return BadLine(number, cid, param, f"{where} field {param!r}: {msg}")
        cid = line.custom_id

        def bad(param: str, msg: str) -> BadLine:
            return BadLine(number, cid, param, f"{where} (custom_id {cid!r}) field {param!r}: {msg}")

        if cid in self.seen:
            return bad("custom_id", f"already used on line {self.seen[cid] + 1} (custom ids must be unique)")
        self.seen[cid] = number
        if line.method.upper() != "POST":
            return bad("method", f"{line.method!r}: only POST")
        if line.url not in ENDPOINTS:
            return bad("url", f"{line.url!r}: expected one of {', '.join(ENDPOINTS)}")
        if self.endpoint is not None and line.url != self.endpoint:
            return bad("url", f"{line.url!r}: this batch's endpoint is {self.endpoint}")
        try:
            body = (RerankBody if line.url == "/v1/rerank" else ScoreLine).model_validate(line.body)
        except ValidationError as exc:
            return bad(*_field_error(exc, "body"))
        if isinstance(body, RerankBody) and body.max_tokens_per_doc is not None:
            return bad("body.max_tokens_per_doc", "not supported in batch files (cut the documents in the file)")
        model = normalize_model(body.model) if body.model else None
        if model is not None and self.model is not None and model != self.model:
            return bad("body.model", f"{body.model!r}: this batch is scored by {self.model} (one model per batch)")
        try:
            if isinstance(body, RerankBody):  # /v1/rerank's own checks, then submit_pairs', line by line
                check_rerank(body.query, body.documents, body.instruction, self.settings)
            pairs = _pairs(number, line.url, body)
            checked_pairs(pairs, None, self.settings)
        except InputError as exc:
            param, msg = _pair_param(str(exc), body)
            return bad(param, msg)
        if model is not None:
            self.model = model
        return GoodLine(number, cid, line.url, body, pairs)


def _pair_param(message: str, body: RerankBody | ScoreLine) -> tuple[str, str]:
    """``pair 3 field 'document': …`` (submit_pairs' words) as the line's own field: ``body.documents[3]``."""
    m = _PAIR_ERROR.match(message)
    field = _FIELD_ERROR.match(message)
    if m is None and field is not None:  # check_rerank's words: field 'documents': …
        return f"body.{field.group(1)}", field.group(2)
    if m is None:
        return ("body.text_1" if message.startswith("body.text_1") else "body"), message.removeprefix("body.text_1: ")
    i, name, msg = m.groups()
    if isinstance(body, RerankBody):
        return ("body.query", msg) if name == "query" else (f"body.documents[{i}]", msg)
    if name == "query":
        return ("body.text_1" if isinstance(body.text_1, str) else f"body.text_1[{i}]"), msg
    return ("body.text_2" if isinstance(body.text_2, str) else f"body.text_2[{i}]"), msg


# --- files on disk ------------------------------------------------------------------------------
def files_dir(settings: Settings) -> Path:
    path = Path(settings.files_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_path(row: FileRow, settings: Settings) -> Path:
    return Path(settings.files_dir).expanduser() / row.path


def store_file(store: BatchStore, settings: Settings, chunks: Iterable[bytes], filename: str, purpose: str = "batch") -> FileRow:
    """Stream ``chunks`` to a new file under RERANKQ_FILES_DIR and record it; nothing is recorded if writing fails."""
    file_id = new_file_id()
    name = f"{file_id}.jsonl"
    target = files_dir(settings) / name
    part = target.with_name(name + ".part")
    size = 0
    try:
        with open(part, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if size > settings.max_file_bytes:
                    raise InputError(f"file: over the limit of {settings.max_file_bytes:,} bytes (RERANKQ_MAX_FILE_BYTES)")
                f.write(chunk)
        part.replace(target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return store.add_file(purpose, filename, size, name, file_id=file_id)


def delete_file(store: BatchStore, settings: Settings, file_id: str) -> bool:
    row = store.delete_file(file_id)
    if row is None:
        return False
    file_path(row, settings).unlink(missing_ok=True)
    return True


def iter_file(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


# --- submitting -----------------------------------------------------------------------------------
def window_seconds(completion_window: str) -> float:
    m = _WINDOW.match(completion_window)
    if m is None or int(m.group(1)) < 1:
        raise InputError(f"field 'completion_window': {completion_window!r}: expected hours or days, e.g. 24h")
    return int(m.group(1)) * (3600 if m.group(2) == "h" else 86400)


def _first_endpoint(path: Path) -> str:
    with open(path, "rb") as f:
        for raw in f:
            try:
                url = json.loads(raw).get("url")
            except (ValueError, AttributeError):
                continue
            if url in ENDPOINTS:
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
    endpoint = endpoint or _first_endpoint(file_path(input_file, settings))
    if endpoint not in ENDPOINTS:
        raise InputError(f"field 'endpoint': {endpoint!r}: expected one of {', '.join(ENDPOINTS)}")
    window = window_seconds(completion_window)
    notify = notify_url(notify, settings)
    store = batch_store(settings)
    reader = LineReader(settings, endpoint)
    pairs: list[InlinePair] = []
    bad: list[BadLine] = []
    total = 0
    with open(file_path(input_file, settings), "rb") as f:
        for item in reader.read(f):
            total += 1
            if isinstance(item, BadLine):
                bad.append(item)
            else:
                pairs.extend(item.pairs)
                if len(pairs) > settings.batch_max_pairs:
                    raise InputError(
                        f"line {item.number + 1}: more than {settings.batch_max_pairs:,} pairs in one batch "
                        "(RERANKQ_BATCH_MAX_PAIRS): split the file"
                    )
    recorded = dict(
        endpoint=endpoint, completion_window=completion_window, window_seconds=window, metadata=metadata,
        input_file_id=input_file.id, lines_total=total,
    )  # fmt: skip
    if not pairs:
        errors = [
            {"code": "invalid_request", "message": b.message, "param": b.param, "line": b.number + 1}
            for b in bad[:MAX_ERRORS]
        ] or [{"code": "empty_file", "message": "the file has no request lines", "param": None, "line": None}]
        batch = store.record_failed_batch(
            **recorded, errors=errors, notify=notify, model=reader.model or normalize_model(settings.model), name=name,
        )  # fmt: skip
        return store.batch(batch)  # type: ignore[return-value]
    pinned = {"model": reader.model} if reader.model else {}  # the job's model: its workers only score it
    job_id = submit_pairs(
        pairs, settings=settings.model_copy(update={"max_inline_pairs": settings.batch_max_pairs, **pinned}),
        notify=notify or "", kind="batch", name=name or input_file.filename, chunk_size=chunk_size,
        reuse=reuse,
    )  # fmt: skip
    return store.batch(store.record_batch(job_id, **recorded, lines_rejected=len(bad)))  # type: ignore[return-value]


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
def refreshed(store: BatchStore, row: BatchRow, settings: Settings) -> BatchRow:
    """The batch after what is due on a look: expiry once its window ended, its output files once its
    job ended (written here, once; another looker meanwhile sees ``finalizing``)."""
    if not row.state.terminal and now() >= row.expires_at and store.expire(row.job_id):
        row = store.batch(row.id)  # type: ignore[assignment]
    if row.state.terminal and row.live_chunks == 0 and row.completed_at is None:
        if store.claim_finalizing(row.id, stale_after=600):
            write_outputs(store, row, settings)
        row = store.batch(row.id)  # type: ignore[assignment]
    return row


def status(row: BatchRow) -> str:
    if not row.state.terminal:
        return "in_progress"
    if row.state == JobState.cancelled and row.live_chunks:
        return "cancelling"
    if row.completed_at is None:
        return "finalizing"
    if row.state == JobState.cancelled:
        return "expired" if row.job_error == EXPIRED else "cancelled"
    if row.errors or (row.state == JobState.failed and not row.lines_completed):
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
        "in_progress_at": _ts(row.started_at or row.created_at) if not row.errors else None,
        "expires_at": _ts(row.expires_at), "finalizing_at": _ts(row.finalizing_at),
        "completed_at": _ts(row.completed_at) if st == "completed" else None,
        "failed_at": _ts(ended) if st == "failed" else None,
        "expired_at": _ts(ended) if st == "expired" else None,
        "cancelling_at": _ts(ended) if row.state == JobState.cancelled and row.job_error != EXPIRED else None,
        "cancelled_at": _ts(row.completed_at) if st == "cancelled" else None,
        "request_counts": {"total": row.lines_total, "completed": completed, "failed": failed},
        "metadata": row.metadata, "model": row.model, "job_id": row.job_id,
    }  # fmt: skip


# --- output -----------------------------------------------------------------------------------------
@dataclass
class _Outcome:
    ok: bool
    line: str


def _tokens(settings: Settings):  # noqa: ANN202 - producer.service.tokens.Tokens | None
    """The service's token counter (``usage``, as /v1/rerank reports it) when the service extra and the
    model's files are here; else usage says 0."""
    try:
        from producer.service.tokens import tokens_for
    except ImportError:
        return None
    return tokens_for(settings)


def _response(good: GoodLine, ranked: list[dict], model: str, settings: Settings, request_id: str) -> dict:
    tokens = _tokens(settings)
    if isinstance(good.body, RerankBody):
        used = tokens.prompt_tokens(good.body.query, good.body.documents, good.body.instruction) if tokens else 0
        top = ranked[: good.body.top_n] if good.body.top_n else ranked
        results = []
        for r in top:
            item: dict = {"index": int(r["doc_id"]), "relevance_score": r["score"]}
            if good.body.return_documents:
                item["document"] = {"text": good.body.documents[int(r["doc_id"])]}
            results.append(item)
        return {"id": f"rerank-{request_id}", "model": model, "usage": {"prompt_tokens": used, "total_tokens": used}, "results": results}
    used = sum(tokens.prompt_tokens(p.query, [p.document], p.instruction) for p in good.pairs) if tokens else 0
    data = [{"index": int(r["doc_id"]), "object": "score", "score": r["score"]} for r in sorted(ranked, key=lambda r: int(r["doc_id"]))]
    return {
        "id": f"score-{request_id}", "object": "list", "created": int(time.time()), "model": model, "data": data,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }  # fmt: skip


def _line(custom_id: str | None, status_code: int, request_id: str, body: dict | None, error: dict | None) -> str:
    out = {
        "id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body}, "error": error,
    }  # fmt: skip
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def _error(message: str, param: str | None, code: int = 400) -> dict:
    kind = "BadRequestError" if code == 400 else "InternalServerError"
    return {"object": "error", "message": message, "type": kind, "param": param, "code": code}


def output_lines(row: BatchRow, settings: Settings) -> Iterator[_Outcome]:
    """Each request line's outcome, in the input's order: its response, or its error with the field."""
    from producer.export import iter_ranked

    store = batch_store(settings)
    input_row = store.file(row.input_file_id)
    if input_row is None:
        raise InputError(f"batch {row.id}: its input file {row.input_file_id} was deleted; the output cannot be written")
    from producer.job_control import ledger

    ranked = iter_ranked(ledger(settings), row.job_id)  # by query id = line order, then rank
    pending = next(ranked, None)
    model = row.model or normalize_model(settings.model)
    reader = LineReader(settings, row.endpoint)
    with open(file_path(input_row, settings), "rb") as f:
        for item in reader.read(f):
            request_id = f"{row.id}-{item.number + 1}"
            if isinstance(item, BadLine):
                yield _Outcome(False, _line(item.custom_id, 400, request_id, None, _error(item.message, item.param)))
                continue
            qid, rows = query_id(item.number), []
            while pending is not None and pending["query_id"] < qid:
                pending = next(ranked, None)
            while pending is not None and pending["query_id"] == qid:
                rows.append(pending)
                pending = next(ranked, None)
            failed = next((r for r in rows if r["error"] is not None), None)
            if failed is not None:
                param = f"body.documents[{failed['doc_id']}]" if item.url == "/v1/rerank" else f"body.text_2[{failed['doc_id']}]"
                message = f"line {item.number + 1} (custom_id {item.custom_id!r}) field {param!r}: {failed['error']}"
                yield _Outcome(False, _line(item.custom_id, 400, request_id, None, _error(message, param)))
            elif len(rows) < len(item.pairs):
                why = "its completion window ended" if row.job_error == EXPIRED else f"the batch {row.state.value}"
                if row.state == JobState.failed and row.job_error:
                    why = f"the batch failed: {row.job_error}"
                message = f"line {item.number + 1} (custom_id {item.custom_id!r}): not scored, {why}"
                yield _Outcome(False, _line(item.custom_id, 500, request_id, None, _error(message, None, 500)))
            else:
                body = _response(item, rows, model, settings, request_id)
                yield _Outcome(True, _line(item.custom_id, 200, request_id, body, None))


def write_outputs(store: BatchStore, row: BatchRow, settings: Settings) -> None:
    """The output and error files, written beside each other and recorded with the batch in one transaction."""
    directory = files_dir(settings)
    ids = {True: new_file_id(), False: new_file_id()}
    parts = {ok: directory / f"{ids[ok]}.jsonl.part" for ok in ids}
    counts = {True: 0, False: 0}
    sizes = {True: 0, False: 0}
    try:
        with open(parts[True], "wb") as good, open(parts[False], "wb") as bad:
            for outcome in output_lines(row, settings):
                data = (outcome.line + "\n").encode()
                (good if outcome.ok else bad).write(data)
                counts[outcome.ok] += 1
                sizes[outcome.ok] += len(data)
        rows: dict[bool, FileRow | None] = {}
        for ok in (True, False):
            if counts[ok]:
                name = f"{ids[ok]}.jsonl"
                parts[ok].replace(directory / name)
                kind = "output" if ok else "errors"
                rows[ok] = FileRow(ids[ok], "batch_output", f"{row.id}_{kind}.jsonl", sizes[ok], name, now())
            else:
                parts[ok].unlink(missing_ok=True)
                rows[ok] = None
        store.finalized(row.id, rows[True], rows[False], counts[True], counts[False])
    except BaseException:
        for ok in ids:
            parts[ok].unlink(missing_ok=True)
        raise


def export_jsonl(job: str, out: Path | None, settings: Settings | None = None) -> int:
    """``producer export JOB --format jsonl``: one line per request, in the input's order, failed ones in
    place, to ``out`` (``-`` or None: stdout), as ``vllm run-batch -o`` writes them; the number of lines."""
    import sys

    settings = settings or get_settings()
    from producer.job_control import ledger

    store = batch_store(settings)
    row = store.batch(ledger(settings).resolve_job(job))
    if row is None:
        raise InputError(f"job {job} is not a batch: --format jsonl writes a batch file's output (submit a .jsonl)")
    if not row.state.terminal:
        raise InputError(f"batch {row.id} is {status(row)}: its output is written once it ends (producer wait {row.job_id})")
    lines = 0
    target = None if out is None or str(out) == "-" else Path(out)
    part = target.with_name(target.name + ".part") if target else None
    stream = open(part, "w", encoding="utf-8") if part else sys.stdout  # noqa: SIM115
    try:
        for outcome in output_lines(row, settings):  # streamed, in the input's order, errors in place: run-batch's file
            stream.write(outcome.line + "\n")
            lines += 1
    except BaseException:
        if part:
            stream.close()
            part.unlink(missing_ok=True)
        raise
    if part and target:
        stream.close()
        part.replace(target)
    return lines


def prune_files(settings: Settings, older_than: float, dry_run: bool = False) -> tuple[int, int]:
    """Files (uploads and outputs) older than ``older_than`` seconds that no unfinished batch reads:
    removed from the ledger and the disk. Returns (files, bytes)."""
    store = batch_store(settings)
    rows = store.prunable_files(now() - timedelta(seconds=older_than))
    if not dry_run and rows:
        store.forget_files([r.id for r in rows])
        for r in rows:
            file_path(r, settings).unlink(missing_ok=True)
    return len(rows), sum(r.bytes for r in rows)
