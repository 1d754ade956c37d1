"""A webhook receiver nobody here wrote the checks of: a real HTTP server on 127.0.0.1 that verifies
each request with the ``standardwebhooks`` package (as a user's endpoint would) and keeps what came."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """``statuses``: the answers to give, in order (then 200 for ever). ``received``: every request that
    verified, as (webhook-id, payload); ``rejected``: requests whose signature did not."""

    def __init__(self, secret: str, port: int | None = None, statuses: list[int] | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/rerankq"
        self.verifier = Webhook(secret)
        self.statuses = list(statuses or [])
        self.received: list[tuple[str, dict]] = []
        self.headers: list[dict[str, str]] = []  # of each request received, and its raw body
        self.bodies: list[bytes] = []
        self.rejected: list[str] = []
        self.attempts = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    try:
                        payload = receiver.verifier.verify(body, headers)
                    except Exception as exc:
                        receiver.rejected.append(str(exc))
                        status = 400
                    else:
                        if status == 200:
                            receiver.received.append((headers["webhook-id"], payload))
                            receiver.headers.append(headers)
                            receiver.bodies.append(body)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
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
