"""One webhook delivery attempt. The host is resolved and checked (rerankq/egress.py) and the connection
goes to that checked address, so DNS cannot answer differently between check and connect; the Host
header and TLS (SNI and certificate check) still use the URL's name. Redirects are never followed (a 3xx
is a failed attempt: only a 2xx from the configured URL delivers, as Svix, Stripe and OpenAI do), and the
whole exchange has one deadline, so a receiver that answers a byte at a time cannot hold a sender."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from urllib.parse import urlsplit

from rerankq import egress

USER_AGENT = "rerankq-webhooks"
MAX_LOCATION_CHARS = 200


class _Pinned(http.client.HTTPConnection):
    """Plain HTTP to ``address``; Host: the URL's own name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to ``address``; SNI, certificate check and Host: the URL's own name."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)  # the deadline can cut it
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _cut(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    expired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def post(
    url: str, body: str, headers: dict[str, str], timeout: float, allow: egress.Allow, context: ssl.SSLContext | None = None
) -> str | None:
    """One attempt: None when the URL itself answered 2xx, else why not, in a line. Raises UnsafeURL (no
    attempt can ever deliver) and RefusedTarget (the host resolves to an address not allowed)."""
    try:
        addresses = egress.resolve_checked(url, allow)
    except (OSError, UnicodeError) as exc:
        return f"DNS: {exc}"[:300]
    host, port = egress.host_port(url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    error = "no address"
    for address in addresses:  # each one checked; the next only when this one cannot be reached
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedTLS(
                host, port, str(address), timeout, context or ssl.create_default_context()
            )
        else:
            conn = _Pinned(host, port, str(address), timeout)
        expired = threading.Event()
        deadline = threading.Timer(timeout, _cut, (conn, expired))
        deadline.daemon = True
        deadline.start()
        try:
            try:
                conn.connect()
            except (OSError, ssl.SSLError) as exc:
                error = _why(exc, expired, timeout)
                if isinstance(exc, ssl.SSLError) or expired.is_set():
                    return error
                continue
            conn.request("POST", target, body=body.encode(), headers={**headers, "user-agent": USER_AGENT})
            response = conn.getresponse()
            if 200 <= response.status < 300:
                return None
            if 300 <= response.status < 400:
                location = egress.masked(response.getheader("location") or "")[:MAX_LOCATION_CHARS]
                return f"HTTP {response.status}: a redirect to {location!r}, not followed (only a 2xx from the URL delivers)"
            return f"HTTP {response.status}"
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            return _why(exc, expired, timeout)
        finally:
            deadline.cancel()
            conn.close()
    return error


def _why(exc: BaseException, expired: threading.Event, timeout: float) -> str:
    if expired.is_set() or isinstance(exc, TimeoutError):
        return f"timeout: no complete answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"[:300]
