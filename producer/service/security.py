"""Who may do what: API keys with scopes and tenants, console sessions, cross-site refusal.

* Keys: ``Authorization: Bearer rq_…`` (`producer keys create`), or RERANKQ_API_KEY, one admin key of no
  tenant. Once any key is in force every endpoint but /healthz, /login and /static needs one.
  GET/HEAD need the ``read`` scope, any other method ``submit``, /v1/audit ``admin``, /metrics ``metrics``
  (every tenant's counts and model names: not for a tenant's read key; RERANKQ_METRICS_OPEN keeps it open).
* Tenants: a key that is not admin sees and changes only its tenant's jobs, batches and files; anything
  else answers 404 exactly as an unknown id does (existence never leaks). A job id prefix is resolved among
  the key's own jobs and the path rewritten to the full id, so no route can resolve it to another's job.
* The console: /login takes a key and sets a cookie holding a random session token (the ledger keeps
  its SHA-256, rerankq/store/keys.py), never the key. Requests that change something with that cookie
  need the page's CSRF token in ``X-CSRF-Token``.
* Cross-site: a state-changing request whose ``Sec-Fetch-Site`` is neither same-origin nor none, or whose
  ``Origin`` is not this host, is refused whatever it carries (another site, another port of localhost).
* No key in force: the service is open to whoever reaches it. `producer serve` refuses to listen beyond
  loopback so unless told it is meant to be open (RERANKQ_OPEN / ``--open``); for the same reason a request
  that came through a proxy (X-Forwarded-For, Forwarded, X-Real-IP) is refused then.

Keys and tokens are compared in constant time (digests, rerankq/store/keys.py) and never logged or echoed."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from urllib.parse import urlsplit

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from producer.api_errors import error_body
from rerankq.store.actor import OPEN, Actor, acting
from rerankq.store.batches import BatchStore
from rerankq.store.errors import UnknownJob
from rerankq.store.keys import KeyStore, env_actor
from rerankq.store.ledger import Ledger

OPEN_PATHS = ("/healthz", "/login")
COOKIE = "rerankq_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host")
HTML_PAGES = ("/", "/try", "/workers", "/nights")
ADMIN_PATHS = ("/v1/audit",)
METRICS_PATH = "/metrics"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_refusal(host: str, has_key: bool, open_: bool) -> str | None:
    """Why `producer serve` will not start: beyond loopback with no key, unless meant to be open."""
    if has_key or open_ or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} with no API key: anyone who can reach this address could submit, read and "
        "cancel jobs. Create a key (`producer keys create NAME`; clients send `Authorization: Bearer <key>`), "
        "bind to 127.0.0.1, or, if it is meant to be open, pass --open (RERANKQ_OPEN=true)."
    )


def key_matches(given: str | None, key: str) -> bool:
    return given is not None and hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(key.encode()).digest())


def csrf_token(session_token: str) -> str:
    """The page's CSRF token: derived from the session's (which another site can neither read nor guess)."""
    return hmac.new(session_token.encode(), b"rerankq csrf", hashlib.sha256).hexdigest()


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookie(headers: dict[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def cross_site(method: str, headers: dict[str, str]) -> str | None:
    """Why a state-changing request comes from another site (None: it does not, as far as it says)."""
    if method in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()):
        return "an Origin other than this host"
    return None


class Guard:
    """Pure ASGI, outermost (before any body is read; covers /docs, /openapi.json and streamed exports)."""

    def __init__(
        self, app: ASGIApp, ledger: Ledger, keys: KeyStore, batches: BatchStore, env_key: str | None, open_: bool,
        metrics_open: bool = False,
    ):  # fmt: skip
        self.app, self.ledger, self.keys, self.batches = app, ledger, keys, batches
        self.env_key, self.open, self.metrics_open = env_key, open_, metrics_open
        self._any_key: tuple[float, bool] = (0.0, False)
        self._touched: dict[str, float] = {}

    # --- who is asking -------------------------------------------------------------------------
    def keys_in_force(self) -> bool:
        """RERANKQ_API_KEY or any key in the ledger (looked up at most every 2 s: `producer keys create` takes effect then)."""
        if self.env_key:
            return True
        at, value = self._any_key
        if time.monotonic() - at > 2.0:
            value = self.keys.any_key()
            self._any_key = (time.monotonic(), value)
        return value

    def bearer_actor(self, bearer: str) -> Actor | None:
        if self.env_key and key_matches(bearer, self.env_key):
            return env_actor(self.env_key)
        actor = self.keys.authenticate(bearer)
        if actor is not None and time.monotonic() - self._touched.get(actor.key_id or "", -1e9) > 60:
            self._touched[actor.key_id or ""] = time.monotonic()
            self.keys.touch(actor.key_id or "")
        return actor

    # --- what it may reach ---------------------------------------------------------------------
    def owned_path(self, path: str, actor: Actor) -> tuple[str | None, str | None]:
        """(the path with a job id prefix made whole, None) or (None, the 404 message) for a non-admin key."""
        parts = path.split("/")
        if len(parts) >= 4 and parts[1] == "v1" and parts[2] == "jobs" and parts[3]:
            index = 3
        elif len(parts) >= 3 and parts[1] == "jobs" and parts[2]:
            index = 2
        elif len(parts) >= 4 and parts[1] == "v1" and parts[2] in ("batches", "files") and parts[3]:
            found = self.batches.batch(parts[3], actor) if parts[2] == "batches" else self.batches.file(parts[3], actor)
            return (path, None) if found is not None else (None, f"no {'batch' if parts[2] == 'batches' else 'file'} {parts[3]!r}")
        else:
            return path, None
        try:
            parts[index] = self.ledger.resolve_job(parts[index], actor=actor)
        except UnknownJob as exc:
            return None, exc.args[0]
        return "/".join(parts), None

    async def identify(self, method: str, path: str, headers: dict[str, str], state: dict) -> tuple[Actor | None, tuple[int, str] | None]:
        """(the actor, None), (None, None) for no credential, or (None, (status, why)) to refuse at once."""
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = _cookie(headers)
        if not await anyio.to_thread.run_sync(self.keys_in_force):
            if not self.open and any(h in headers for h in PROXY_HEADERS):
                return None, (403, "this service has no API key and came through a proxy: create a key "
                              "(`producer keys create NAME`) or, if it is meant to be open, set RERANKQ_OPEN=true")  # fmt: skip
            return OPEN, None
        if bearer:
            actor = await anyio.to_thread.run_sync(self.bearer_actor, bearer)
            return (actor, None) if actor is not None else (None, (401, "a wrong API key"))
        if not cookie:
            return None, None
        actor = await anyio.to_thread.run_sync(self.keys.session_actor, cookie, self.env_key)
        if actor is None:
            return None, None
        state["csrf"] = csrf_token(cookie)
        if method not in SAFE_METHODS and path not in ("/login", "/logout"):  # /logout checks its form's token itself
            if not hmac.compare_digest(headers.get(CSRF_HEADER, "").encode(), state["csrf"].encode()):
                return None, (403, "missing or wrong CSRF token (X-CSRF-Token): send it from this service's own pages")
        return actor, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/healthz" or path.startswith("/static/") or (path == METRICS_PATH and self.metrics_open):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        headers = _headers(scope)
        state = scope.setdefault("state", {})
        state["csrf"] = ""
        reason = cross_site(method, headers)
        if reason is not None:
            await _json(send, 403, f"cross-site request refused ({reason}): send it from this service's own pages or with an API key")
            return
        actor, refusal = await self.identify(method, path, headers, state)
        if refusal is not None:
            status, why = refusal
            await (_unauthorized(send, why) if status == 401 else _json(send, status, why))
            return
        if actor is None:
            if path in OPEN_PATHS or path == "/logout":
                await self.app(scope, receive, send)
            elif method == "GET" and (path in HTML_PAGES or path.startswith("/jobs/")):
                await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await _unauthorized(send, "no API key")
            return
        needed = "admin" if path in ADMIN_PATHS else "metrics" if path == METRICS_PATH else "read" if method in SAFE_METHODS else "submit"
        if path not in OPEN_PATHS and path != "/logout" and not actor.may(needed):
            await _json(send, 403, f"this key lacks the {needed!r} scope (it has: {', '.join(sorted(actor.scopes))})")
            return
        if not actor.admin:
            whole, missing = await anyio.to_thread.run_sync(self.owned_path, path, actor)
            if missing is not None:
                await _json(send, 404, missing)
                return
            if whole != path:
                scope = {**scope, "path": whole, "raw_path": whole.encode()}
        state["actor"] = actor
        token = acting.set(actor)
        try:
            await self.app(scope, receive, send)
        finally:
            acting.reset(token)


async def _json(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({**error_body(status, message), "detail": message}).encode()  # OpenAI's shape, as errors.py
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _unauthorized(send: Send, reason: str) -> None:
    await _json(
        send, 401, f"unauthorized: {reason}; send the header `Authorization: Bearer <key>` (`producer keys create`)",
        [(b"www-authenticate", b"Bearer")],
    )  # fmt: skip
