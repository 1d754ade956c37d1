"""RERANKQ_API_KEY: every endpoint but /healthz and /metrics needs ``Authorization: Bearer <key>``.

Browsers cannot add that header to page loads, so the console's /login form sets the same key as an
HttpOnly, SameSite=Strict cookie. The key is compared in constant time and never logged or echoed."""

from __future__ import annotations

import hmac
import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = ("/healthz", "/metrics", "/login", "/static/")
COOKIE = "rerankq_key"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, has_key: bool) -> str | None:
    """The loud warning `producer serve` prints when it listens beyond this machine without a key."""
    if has_key or is_loopback(host):
        return None
    return (
        f"WARNING: serving on {host} with no RERANKQ_API_KEY: anyone who can reach this address can submit "
        "jobs, read scores and cancel jobs. Set RERANKQ_API_KEY (clients send `Authorization: Bearer <key>`) "
        "or bind to 127.0.0.1."
    )


def key_matches(given: str | None, key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def _presented(scope: Scope) -> tuple[str | None, str | None]:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    auth = headers.get("authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    cookie = None
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            cookie = value
    return bearer, cookie


class ApiKeyGuard:
    """Pure ASGI (covers /docs, /openapi.json and streamed exports alike)."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        bearer, cookie = _presented(scope)
        if key_matches(bearer, self.key) or key_matches(cookie, self.key):
            await self.app(scope, receive, send)
            return
        wants_html = path in ("/", "/try", "/workers", "/nights") or path.startswith("/jobs/")
        if wants_html and scope.get("method") == "GET":
            await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]})
            await send({"type": "http.response.body", "body": b""})
            return
        reason = "a wrong API key" if bearer or cookie else "no API key"
        body = json.dumps(
            {"detail": f"unauthorized: {reason}; send the header `Authorization: Bearer <RERANKQ_API_KEY>`"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})
