"""A finished batch's output and error files: one line per request, in input order, as ``vllm
run-batch -o`` writes them (``{id, custom_id, response: {status_code, request_id, body}, error}``),
written once when the job has ended by whoever first looks (the service or ``producer export``)."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from producer.api_errors import error_body
from producer.batch_files import NOT_WRITTEN, batch_store, file_path, files_dir, more_errors, status
from producer.batch_lines import BadLine, GoodLine, LineReader, query_id
from producer.batch_reading import request_lines
from producer.errors import InputError
from producer.scoring import Scored, rerank_response, score_response
from rerankq.logs import get_logger
from rerankq.routing import normalize_model
from rerankq.settings import Settings, get_settings
from rerankq.store.batches import EXPIRED, BatchRow, BatchStore, FileRow, new_file_id
from rerankq.store.clock import now
from schemas import JobState, RerankBody

log = get_logger("rerankq.batches")


# --- output -----------------------------------------------------------------------------------------
@dataclass
class _Outcome:
    ok: bool
    line: str


def _response(good: GoodLine, ranked: list[dict], model: str, request_id: str) -> dict:
    """The body the service's route for the line's url answers (producer/scoring.py builds both)."""
    scored = [Scored(int(r["doc_id"]), r["score"], r["logit"]) for r in ranked]
    assert good.scoring is not None
    if isinstance(good.body, RerankBody):
        return rerank_response(good.scoring, scored, model, f"rerank-{request_id}", good.url)
    return score_response(good.scoring, scored, model, f"score-{request_id}")


def _line(custom_id: str | None, status_code: int, request_id: str, body: dict | None, error: dict | None) -> str:
    out = {
        "id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body}, "error": error,
    }  # fmt: skip
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def _error(message: str, param: str | None, code: int = 400) -> dict:
    """vLLM's ErrorResponse, as ``vllm run-batch`` puts it in a failed line's ``error``."""
    return error_body(code, message, param)


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
        for item in request_lines(f, reader, settings):
            request_id = f"{row.id}-{item.number + 1}"
            if isinstance(item, BadLine):
                yield _Outcome(False, _line(item.custom_id, item.status, request_id, None, _error(item.message, item.param, item.status)))
                continue
            qid, rows = query_id(item.number), []
            while pending is not None and pending["query_id"] < qid:
                pending = next(ranked, None)
            while pending is not None and pending["query_id"] == qid:
                rows.append(pending)
                pending = next(ranked, None)
            failed = next((r for r in rows if r["error"] is not None), None)
            if failed is not None:
                side = "documents" if isinstance(item.body, RerankBody) else item.body.form[1]
                param = f"body.{side}[{failed['doc_id']}]"
                message = f"line {item.number + 1} (custom_id {item.custom_id!r}) field {param!r}: {failed['error']}"
                yield _Outcome(False, _line(item.custom_id, 400, request_id, None, _error(message, param)))
            elif len(rows) < len(item.pairs):
                why = "its completion window ended" if row.job_error == EXPIRED else f"the batch {row.state.value}"
                if row.state == JobState.failed and row.job_error:
                    why = f"the batch failed: {row.job_error}"
                message = f"line {item.number + 1} (custom_id {item.custom_id!r}): not scored, {why}"
                yield _Outcome(False, _line(item.custom_id, 500, request_id, None, _error(message, None, 500)))
            else:
                body = _response(item, rows, item.model or model, request_id)
                yield _Outcome(True, _line(item.custom_id, 200, request_id, body, None))


def write_outputs(store: BatchStore, row: BatchRow, settings: Settings) -> None:
    """The output and error files, written beside each other and recorded with the batch in one transaction.
    The error file holds the first RERANKQ_BATCH_MAX_ERROR_LINES failed lines; the batch's errors count the rest."""
    directory = files_dir(settings)
    ids = {True: new_file_id(), False: new_file_id()}
    parts = {ok: directory / f"{ids[ok]}.jsonl.part" for ok in ids}
    counts = {True: 0, False: 0}
    sizes = {True: 0, False: 0}
    cap = settings.batch_max_error_lines
    try:
        with open(parts[True], "wb") as good, open(parts[False], "wb") as bad:
            for outcome in output_lines(row, settings):
                counts[outcome.ok] += 1
                if not outcome.ok and counts[False] > cap:
                    continue
                data = (outcome.line + "\n").encode()
                (good if outcome.ok else bad).write(data)
                sizes[outcome.ok] += len(data)
        written = {True: counts[True], False: min(counts[False], cap)}
        rows: dict[bool, FileRow | None] = {}
        for ok in (True, False):
            if written[ok]:
                name = f"{ids[ok]}.jsonl"
                parts[ok].replace(directory / name)
                kind = "output" if ok else "errors"
                rows[ok] = FileRow(ids[ok], "batch_output", f"{row.id}_{kind}.jsonl", sizes[ok], name, now())
            else:
                parts[ok].unlink(missing_ok=True)
                rows[ok] = None
        left_out = counts[False] - written[False]
        note = more_errors(left_out, "the error file (RERANKQ_BATCH_MAX_ERROR_LINES)") if left_out else None
        store.finalized(row.id, rows[True], rows[False], counts[True], counts[False], note=note)
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
    refreshed(store, row, settings)  # its output files, once, and so its webhook event (waiting for them), as a look would
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


def refreshed(store: BatchStore, row: BatchRow, settings: Settings) -> BatchRow:
    """The batch after what is due on a look: expiry once its window ended, its output files once its
    job ended (written here, once; another looker meanwhile sees ``finalizing``). If they cannot be
    written (a full disk, the input's bytes gone), the claim is released, so the next look retries,
    and this look's batch says why in its errors, still ``finalizing``: never an error for the looker."""
    if not row.state.terminal and now() >= row.expires_at and store.expire(row.job_id):
        row = store.batch(row.id)  # type: ignore[assignment]
    if row.state.terminal and row.live_chunks == 0 and row.completed_at is None:
        if store.claim_finalizing(row.id, stale_after=600):
            try:
                write_outputs(store, row, settings)
            except Exception as exc:  # noqa: BLE001 - any failure: release the claim, say why, retry on the next look
                return _not_written(store, row, exc)
        row = store.batch(row.id)  # type: ignore[assignment]
    return row


def finalize_ended(store: BatchStore, settings: Settings, waits: dict[str, tuple[float, float]]) -> int:
    """The output files of every batch whose job has ended, looked at or not: its webhook event is sent
    only once they exist (rerankq/store/webhooks.py). A batch whose files could not be written waits
    before its next try (``waits``: batch id -> (monotonic time, pause), the pause doubling from 5 s to
    10 min), so a full disk is not rewritten in a loop. The number of batches finalized."""
    t, done = time.monotonic(), 0
    for row in store.unwritten():
        when, pause = waits.get(row.id, (0.0, 0.0))
        if t < when:
            continue
        after = refreshed(store, row, settings)
        if after.completed_at is None and any(e.get("code") == NOT_WRITTEN for e in after.errors or ()):
            pause = min(max(pause * 2, 5.0), 600.0)
            waits[row.id] = (t + pause, pause)
        else:
            waits.pop(row.id, None)
            done += after.completed_at is not None
    return done


def _not_written(store: BatchStore, row: BatchRow, exc: Exception) -> BatchRow:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    log.warning("batch_output_failed", batch=row.id, error=type(exc).__name__, reason=reason)
    try:
        store.release_finalizing(row.id)
    except Exception as again:  # noqa: BLE001 - the claim then goes stale and is taken over
        log.warning("batch_claim_not_released", batch=row.id, error=type(again).__name__)
    row = store.batch(row.id) or row
    why = {"code": NOT_WRITTEN, "message": f"the output files are not written yet ({reason}): retried on the next look",
           "param": None, "line": None}  # fmt: skip
    return dataclasses.replace(row, errors=[*(row.errors or []), why])
