"""A broker or database that refuses connections or never answers: a clear error within seconds, not a hang."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.bad_input.refusals import (
    FAST,
    JOB,
    SECRET,
    Stack,
    assert_clear_error,
    assert_nothing_written,
    assert_refused,
    cli,
    with_password,
)
from tests.conftest import base_env
from tests.services import free_port


# A closed port (refused at once) for every command; a silent server (accepts, never answers: the timeouts
# must hold) for one command per code path.
@pytest.mark.parametrize(
    "command, server",
    [("submit", "closed-port"), ("rerank", "closed-port"), ("submit", "silent-server")],
    ids=["submit-closed-port", "rerank-closed-port", "submit-silent-server"],
)
def test_unreachable_broker(command: str, server: str, stack: Stack, good_manifest: Path, request):
    port = free_port() if server == "closed-port" else request.getfixturevalue("silent_port")
    broker = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    args = ("submit", str(good_manifest)) if command == "submit" else ("rerank", "-q", "q", "-d", "a document")
    started = time.monotonic()
    result = stack.run(*args, timeout=60, RERANKQ_BROKER_URL=broker)
    elapsed = time.monotonic() - started
    assert_refused(result, stack, f"cannot reach the broker redis://:**@127.0.0.1:{port}/0")
    assert elapsed < FAST, f"{elapsed:.1f} s: {result.stderr}"


@pytest.mark.parametrize(
    "args, server",
    [(("submit", "{manifest}"), "closed-port"), (("status", JOB), "closed-port"), (("list",), "closed-port"),
     (("db", "upgrade"), "closed-port"), (("status", JOB), "silent-server"), (("db", "upgrade"), "silent-server")],
    ids=["submit-closed-port", "status-closed-port", "list-closed-port", "db-upgrade-closed-port",
         "status-silent-server", "db-upgrade-silent-server"],
)  # fmt: skip
def test_unreachable_database(args: tuple[str, ...], server: str, tiny_model, redis_url, good_manifest: Path, request):
    port = free_port() if server == "closed-port" else request.getfixturevalue("silent_port")
    env = base_env(tiny_model, f"postgresql://u:{SECRET}@127.0.0.1:{port}/x", with_password(redis_url))
    started = time.monotonic()
    result = cli(*(a.format(manifest=good_manifest) for a in args), env=env, timeout=60)
    elapsed = time.monotonic() - started
    needle = f"port {port} failed" if server == "closed-port" else "timeout"
    assert_clear_error(result, needle, "database")
    if args[0] != "db":
        assert f"cannot reach the database postgresql+psycopg://u:***@127.0.0.1:{port}/x" in result.stderr
    assert elapsed < FAST, f"{elapsed:.1f} s: {result.stderr}"
    assert_nothing_written(None, redis_url)
