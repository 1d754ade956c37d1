"""The OpenAI Files API for batch files: upload (multipart, ``purpose=batch``), metadata, content
(streamed from disk) and delete. The bytes live under RERANKQ_FILES_DIR (producer/batch_files.py says why)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from producer.batch_files import batch_store, delete_file, file_path
from producer.service.errors import ServiceError
from producer.service.tenancy import audit, viewer
from producer.service.uploads import receive_upload
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


_UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object", "required": ["file", "purpose"],
                    "properties": {"file": {"type": "string", "format": "binary"}, "purpose": {"type": "string", "enum": ["batch"]}},
                }
            }
        },
    }
}  # fmt: skip


@router.post("/files", responses={400: {}, 413: {}, 507: {}}, openapi_extra=_UPLOAD_FORM)
async def upload_file(request: Request) -> dict:
    """A batch input file (JSONL, ``vllm run-batch`` lines), multipart fields ``file`` and ``purpose=batch``:
    written once, straight into RERANKQ_FILES_DIR as it arrives (producer/service/uploads.py)."""
    settings = request.app.state.settings
    try:
        row = await receive_upload(request.stream(), request.headers.get("content-type", ""), settings)
    except OSError as exc:  # the disk, not the client: nothing of the upload is left
        raise ServiceError(507, f"file: cannot be stored in RERANKQ_FILES_DIR: {exc.strerror or type(exc).__name__}") from None
    audit(request, "file.upload", row.id)
    return file_object(row)


@router.get("/files")
def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int = Query(10_000, ge=1, le=10_000),
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    """OpenAI's file list, a page at a time: ``after`` the previous page's last id, ``has_more`` while more
    remain (the openai SDK's auto-paging follows it); newest first unless ``order=asc``."""
    rows = batch_store(request.app.state.settings).files(
        limit=limit + 1, purpose=purpose, actor=viewer(request), after=after, order=order
    )
    data = [file_object(r) for r in rows[:limit]]
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit,
    }  # fmt: skip


@router.get("/files/{file_id}", responses={404: {}})
def get_file(file_id: str, request: Request) -> dict:
    return file_object(_found(request, file_id))


@router.get("/files/{file_id}/content", response_class=FileResponse, responses={404: {}, 410: {}})
def file_content(file_id: str, request: Request) -> FileResponse:
    """The file's bytes, streamed from disk; its name in Content-Disposition as RFC 6266 has it
    (``filename*=utf-8''…`` percent-encoded whenever it is not plain: a quote cannot add parameters)."""
    row = _found(request, file_id)
    path = file_path(row, request.app.state.settings)
    if not path.exists():
        raise ServiceError(410, f"file {file_id!r}: its bytes are gone from RERANKQ_FILES_DIR")
    return FileResponse(path, media_type="application/jsonl", filename=row.filename)


@router.delete("/files/{file_id}", responses={404: {}, 409: {}})
def remove_file(file_id: str, request: Request) -> dict:
    try:
        deleted = delete_file(batch_store(request.app.state.settings), request.app.state.settings, file_id)
    except FileInUse as exc:
        raise ServiceError(409, str(exc)) from None
    if not deleted:
        raise ServiceError(404, f"no file {file_id!r}")
    audit(request, "file.delete", file_id)
    return {"id": file_id, "object": "file", "deleted": True}
