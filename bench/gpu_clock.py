"""The GPU benchmark's clock and log lines (one start time for every module of it)."""

from __future__ import annotations

import time

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.monotonic() - T0
