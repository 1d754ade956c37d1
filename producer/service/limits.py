"""Request bodies over RERANKQ_MAX_REQUEST_BYTES get 413 before they are read into memory."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _message(max_bytes: int, request: bool = True) -> str:
    setting = "RERANKQ_MAX_REQUEST_BYTES" if request else "RERANKQ_MAX_FILE_BYTES"
    return f"request body: over the limit of {max_bytes:,} bytes ({setting})"


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on (as 413) instead of making it a 400."""

    def __init__(self, max_bytes: int):
        super().__init__(413, _message(max_bytes))


class BodyLimit:
    """Pure ASGI: checks Content-Length up front and counts the bytes of chunked bodies as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}  # path: its own limit (uploads of batch files: RERANKQ_MAX_FILE_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(send, limit, scope.get("path", ""))
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send, limit, scope.get("path", ""))

    async def _refuse(self, send: Send, limit: int, path: str) -> None:
        from producer.service.errors import error_content  # OpenAI's shape on the API's routes

        body = json.dumps(error_content(path, 413, _message(limit, limit == self.max_bytes))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
