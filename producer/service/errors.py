"""The core's exceptions as JSON with an HTTP status, in the CLI's words (what `producer` prints after
``error:``; no traceback, no URL with a password).

The API's routes (/v1/…, /score, /rerank, /v2/…) answer in OpenAI's and vLLM's shape, which the openai
SDK reads: ``{"error": {"message", "type", "param", "code"}}`` (vLLM's ErrorResponse), with 400 for a
malformed body as vLLM gives (not FastAPI's 422); ``detail`` repeats the message for rerankq's earlier
clients. Other paths (the console's pages) answer ``{"detail": …}``."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from producer.api_errors import error_body
from producer.errors import BrokerUnavailable, InputError
from rerankq.logs import get_logger
from rerankq.manifest_source import ManifestError
from rerankq.store.db import DatabaseError
from rerankq.store.errors import UnknownJob

log = get_logger("rerankq.service")


class ServiceError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class Overloaded(ServiceError):
    def __init__(self, message: str):
        super().__init__(429, message, {"Retry-After": "1"})


STATUS = {InputError: 400, ManifestError: 400, UnknownJob: 404, BrokerUnavailable: 503, DatabaseError: 503}


API_PREFIXES = ("/v1/", "/v2/", "/score", "/rerank")


def is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def error_content(path: str, status: int, message: str, param: str | None = None) -> dict:
    """The JSON body of an error on ``path``: OpenAI's shape on the API's routes."""
    if not is_api(path):
        return {"detail": message}
    return {**error_body(status, message, param), "detail": message}


def _param(message: str) -> str | None:
    """The field a message names (``field 'documents[1]': …``), as OpenAI's ``param``."""
    m = _FIELD.match(message)
    return m.group(1) if m else None


_FIELD = re.compile(r"^field '([^']+)'")


def _json(status: int, message: str, headers: dict[str, str] | None = None, path: str = "/v1/") -> JSONResponse:
    return JSONResponse(error_content(path, status, message, _param(message)), status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """One line naming the field, like the CLI: ``field 'documents': ...``; invalid JSON says where."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        where = err.get("ctx", {}).get("error", "")
        return f"invalid JSON in the request body: {where or err['msg']}".rstrip(": ")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err.get("type") == "model_attributes_type" or not loc:
        return f"request body: {msg} (expected a JSON object)"
    return f"field {'.'.join(loc)!r}: {msg}"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        path = request.url.path  # vLLM and OpenAI: 400 for a malformed body; FastAPI's 422 elsewhere
        return _json(400 if is_api(path) else 422, validation_message(exc), path=path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # no such route, wrong method
        return _json(exc.status_code, str(exc.detail), exc.headers, request.url.path)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return _json(exc.status, exc.message, exc.headers, request.url.path)

    for kind, status in STATUS.items():

        async def _known(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return _json(status, exc.args[0] if exc.args else str(exc), path=request.url.path)

        app.add_exception_handler(kind, _known)

    @app.exception_handler(TimeoutError)
    async def _timeout(request: Request, exc: TimeoutError) -> JSONResponse:
        return _json(504, str(exc), path=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):  # worded without the URL, as the CLI does
            from rerankq.redact import mask_secrets

            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            return _json(503, f"database: {mask_secrets(reason)}", path=request.url.path)
        log.error("request_failed", path=request.url.path, error=type(exc).__name__)
        return _json(500, f"internal error ({type(exc).__name__}); see the service log", path=request.url.path)
