"""The OpenAI Files API for batch files: upload (multipart, ``purpose=batch``), metadata, content
(streamed from disk) and delete. The bytes live under RERANKQ_FILES_DIR (producer/batch_files.py says why)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse

from producer.batch_files import batch_store, delete_file, file_path, iter_file, store_file
from producer.errors import InputError
from producer.service.errors import ServiceError
from rerankq.store.batches import FileInUse, FileRow

router = APIRouter(prefix="/v1", tags=["files"])


def file_object(row: FileRow) -> dict:
    return {
        "id": row.id, "object": "file", "bytes": row.bytes, "created_at": int(row.created_at.timestamp()),
        "filename": row.filename, "purpose": row.purpose, "status": "processed", "expires_at": None, "status_details": None,
    }  # fmt: skip


def _found(request: Request, file_id: str) -> FileRow:
    row = batch_store(request.app.state.settings).file(file_id)
    if row is None:
        raise ServiceError(404, f"no file {file_id!r}")
    return row


@router.post("/files", responses={400: {}, 413: {}})
async def upload_file(request: Request, file: UploadFile = File(...), purpose: str = Form(...)) -> dict:
    """A batch input file (JSONL, ``vllm run-batch`` lines), streamed to disk."""
    if purpose != "batch":
        raise InputError(f"field 'purpose': {purpose!r}: only 'batch' files are kept here")
    settings = request.app.state.settings
    chunks = iter(lambda: file.file.read(1 << 20), b"")
    row = await asyncio.to_thread(store_file, batch_store(settings), settings, chunks, file.filename or "batch.jsonl")
    return file_object(row)


@router.get("/files")
def list_files(request: Request, purpose: str | None = None, limit: int = 100) -> dict:
    rows = batch_store(request.app.state.settings).files(limit=min(max(limit, 1), 10_000), purpose=purpose)
    return {"object": "list", "data": [file_object(r) for r in rows], "has_more": False}


@router.get("/files/{file_id}", responses={404: {}})
def get_file(file_id: str, request: Request) -> dict:
    return file_object(_found(request, file_id))


@router.get("/files/{file_id}/content", response_class=StreamingResponse, responses={404: {}})
def file_content(file_id: str, request: Request) -> StreamingResponse:
    """The file's bytes, streamed from disk a MiB at a time."""
    row = _found(request, file_id)
    path = file_path(row, request.app.state.settings)
    if not path.exists():
        raise ServiceError(410, f"file {file_id!r}: its bytes are gone from RERANKQ_FILES_DIR")
    return StreamingResponse(
        iter_file(path), media_type="application/jsonl",
        headers={"content-length": str(row.bytes), "content-disposition": f'attachment; filename="{row.filename}"'},
    )  # fmt: skip


@router.delete("/files/{file_id}", responses={404: {}, 409: {}})
def remove_file(file_id: str, request: Request) -> dict:
    try:
        deleted = delete_file(batch_store(request.app.state.settings), request.app.state.settings, file_id)
    except FileInUse as exc:
        raise ServiceError(409, str(exc)) from None
    if not deleted:
        raise ServiceError(404, f"no file {file_id!r}")
    return {"id": file_id, "object": "file", "deleted": True}
