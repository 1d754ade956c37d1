"""The core's exceptions as JSON ``{"detail": "<the CLI's one-line message>"}`` with an HTTP status.

Same words as `producer` prints after ``error:``; no traceback, no URL with a password."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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


def _json(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


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
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, validation_message(exc))

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return _json(exc.status, exc.message, exc.headers)

    for kind, status in STATUS.items():

        async def _known(_: Request, exc: Exception, status: int = status) -> JSONResponse:
            return _json(status, exc.args[0] if exc.args else str(exc))

        app.add_exception_handler(kind, _known)

    @app.exception_handler(TimeoutError)
    async def _timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        return _json(504, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):  # worded without the URL, as the CLI does
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            return _json(503, f"database: {reason}")
        log.error("request_failed", path=request.url.path, error=type(exc).__name__)
        return _json(500, f"internal error ({type(exc).__name__}); see the service log")
