"""One JSON object per line even for what a worker writes outside logging.

C++ libraries (torch's NUMA notice), Celery's shutdown notices (written straight to the file
descriptors), ``print()`` and a crash's last words bypass the logging handler. ``install()`` turns the
worker's file descriptors 1 and 2 into pipes read by a small relay process that passes JSON lines
through and wraps every other line as ``{"event": line, "level": ..., "logger": "stdout"|"stderr"}``.
A process rather than a thread: what a dying worker wrote last (``os._exit`` after an error, a kill)
still comes out, because the relay reads until every writer is gone. It ignores SIGINT/SIGTERM for
the same reason (it gets the worker's group's signals) and exits at end of input.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LEVEL = {"stdout": "info", "stderr": "warning"}


def install() -> TextIO | None:
    """Relay fds 1 and 2 through the JSON wrapper; returns a stream on the original stderr for
    writers whose lines are JSON already (the logging handler). None where this is not possible."""
    if sys.platform == "win32" or os.environ.get("RERANKQ_STDIO_RELAYED") == str(os.getpid()):
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    originals, reads, writes = {}, {}, {}
    for fd in (1, 2):
        originals[fd] = os.dup(fd)
        reads[fd], writes[fd] = os.pipe()
    args = [sys.executable, "-I", os.path.abspath(__file__), str(reads[1]), str(originals[1]), str(reads[2]), str(originals[2])]
    subprocess.Popen(args, pass_fds=[reads[1], reads[2], originals[1], originals[2]], stdin=subprocess.DEVNULL)
    for fd in (1, 2):
        os.close(reads[fd])
        os.dup2(writes[fd], fd)
        os.close(writes[fd])
        os.set_inheritable(originals[fd], False)
    os.close(originals[1])
    os.environ["RERANKQ_STDIO_RELAYED"] = str(os.getpid())
    return os.fdopen(originals[2], "w", buffering=1, encoding="utf-8", errors="replace")


def wrap(line: str, stream: str) -> str | None:
    """The JSON line to write for one line of foreign output (None: nothing worth a line)."""
    text = _ANSI.sub("", line).rstrip()
    if not text.strip():
        return None
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return text
        except ValueError:
            pass
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"event": text, "level": _LEVEL[stream], "logger": stream, "timestamp": stamp}, ensure_ascii=False)


def relay(sources: dict[int, tuple[int, str]]) -> None:
    """Copy each source fd to its output fd, line by line (``\\r`` ends a line too: progress bars)."""
    selector = selectors.DefaultSelector()
    pending: dict[int, bytes] = {}
    for fd in sources:
        selector.register(fd, selectors.EVENT_READ)
        pending[fd] = b""

    def emit(fd: int, raw: bytes) -> None:
        out, stream = sources[fd]
        line = wrap(raw.decode("utf-8", "replace"), stream)
        if line is not None:
            data = (line + "\n").encode("utf-8")
            while data:
                data = data[os.write(out, data) :]

    while pending:
        for key, _ in selector.select():
            fd = key.fd
            data = os.read(fd, 65536)
            if not data:  # every writer is gone
                if pending[fd]:
                    emit(fd, pending[fd])
                selector.unregister(fd)
                del pending[fd]
                continue
            *lines, pending[fd] = re.split(rb"\r\n|\r|\n", pending[fd] + data)
            for raw in lines:
                emit(fd, raw)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out_r, out_w, err_r, err_w = (int(a) for a in sys.argv[1:5])
    try:
        relay({out_r: (out_w, "stdout"), err_r: (err_w, "stderr")})
    except (BrokenPipeError, KeyboardInterrupt):
        pass
