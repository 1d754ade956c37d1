"""Each fault module gets its own stack (Redis, PostgreSQL, ledger) and a worker that stays up across its scenarios."""

from __future__ import annotations

import pytest

from tests.faults.stack import COUNTS, Stack


@pytest.fixture(scope="module")
def stack(tiny_model, tmp_path_factory):
    s = Stack(tiny_model, tmp_path_factory.mktemp("faults"))
    yield s
    s.close()
    print(f"\nfault suite: {COUNTS}")


@pytest.fixture(scope="module")
def steady(stack):
    """A worker that stays up across scenarios."""
    w = stack.worker().wait_ready()
    yield w
    w.terminate()
