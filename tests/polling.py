"""Waiting in tests for something another process does: poll, then fail naming what never came."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 300, what: str = "condition", every: float = 0.2):  # noqa: ANN201
    """The predicate's first truthy value within ``timeout`` seconds; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")
