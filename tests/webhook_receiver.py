"""A webhook receiver nobody here wrote the checks of: a real HTTP server on 127.0.0.1 that verifies
each request with the ``standardwebhooks`` package (as a user's endpoint would) and keeps what came.
``Hanging``: one that accepts connections and never answers (a dead or stuck receiver)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Receiver:
    """``statuses``: the answers to give, in order (then 200 for ever). ``received``: every request that
    verified, as (webhook-id, payload); ``rejected``: requests whose signature did not. ``redirect_to``:
    answer every request ``302`` to that URL. ``tls``: serve HTTPS with this server context (its SNI
    names land in ``sni``). ``requests``: every request, any method, as (method, path)."""

    def __init__(
        self, secret: str, port: int | None = None, statuses: list[int] | None = None, host: str = "127.0.0.1",
        redirect_to: str | None = None, tls: ssl.SSLContext | None = None,
    ):  # fmt: skip
        self.host = host
        self.port = port or free_port(host)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}/hooks/rerankq"
        self.verifier = Webhook(secret)
        self.statuses = list(statuses or [])
        self.redirect_to = redirect_to
        self.tls = tls
        self.sni: list[str | None] = []
        self.received: list[tuple[str, dict]] = []
        self.arrived: list[float] = []  # time.monotonic() of each verified delivery
        self.headers: list[dict[str, str]] = []  # of each request received, and its raw body
        self.bodies: list[bytes] = []
        self.rejected: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.attempts = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with receiver._lock:
                    receiver.requests.append(("GET", self.path))
                self._answer(200)

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(("POST", self.path))
                    receiver.attempts += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if receiver.redirect_to:
                        status = 302
                    try:
                        payload = receiver.verifier.verify(body, headers)
                    except Exception as exc:
                        receiver.rejected.append(str(exc))
                        status = 400
                    else:
                        if status == 200:
                            receiver.received.append((headers["webhook-id"], payload))
                            receiver.arrived.append(time.monotonic())
                            receiver.headers.append(headers)
                            receiver.bodies.append(body)
                self._answer(status)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                if status == 302:
                    self.send_header("location", receiver.redirect_to or "/")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)  # type: ignore[assignment]
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def types(self) -> list[str]:
        return [p["type"] for _, p in self.received]

    def dump(self) -> str:
        return json.dumps({"received": self.received, "rejected": self.rejected, "attempts": self.attempts})


class Hanging:
    """Accepts connections on ``host`` and never answers: each is held until the sender gives up.
    ``connections``: how many came; ``most_at_once``: the most open at the same time (shared ``gauge``
    across several: the sender's overall bound)."""

    def __init__(self, host: str, gauge: Gauge | None = None):
        self.host = host
        self.gauge = gauge or Gauge()
        self.own = Gauge()
        self._sock = socket.create_server((host, 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}/hooks/stuck"
        self._open: list[socket.socket] = []
        self._stopped = False

    @property
    def connections(self) -> int:
        return self.own.total

    @property
    def most_at_once(self) -> int:
        return self.own.most

    def start(self) -> Hanging:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with self.gauge, self.own:
            try:
                while conn.recv(65536):  # read the request, answer nothing, until the sender hangs up
                    pass
            except OSError:
                pass

    def stop(self) -> None:
        self._stopped = True
        self._sock.close()
        for conn in self._open:
            conn.close()


class Gauge:
    """Connections open now, the most at once, and how many in all."""

    def __init__(self) -> None:
        self.now = self.most = self.total = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Gauge:
        with self._lock:
            self.now += 1
            self.total += 1
            self.most = max(self.most, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1
