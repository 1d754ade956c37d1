"""The bad-input tests' ledgers, databases and servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.bad_input.refusals import Stack, assert_nothing_written, good_columns, with_password, write
from tests.conftest import base_env, migrate
from tests.services import POSTGRES_URL, create_database, drop_database


@pytest.fixture()
def stack(tiny_model, sqlite_url, redis_url) -> Iterator[Stack]:
    """A migrated SQLite ledger of this test's own; the module's Redis db."""
    migrate(sqlite_url)
    yield Stack(sqlite_url, redis_url, base_env(tiny_model, sqlite_url, with_password(redis_url)))
    assert_nothing_written(sqlite_url, redis_url)


@pytest.fixture(scope="module")
def pg_stack(tiny_model, pg_url, redis_url) -> Stack:
    """The module's migrated PostgreSQL database, reached with a password in its URL."""
    migrate(pg_url)
    return Stack(pg_url, redis_url, base_env(tiny_model, with_password(pg_url), with_password(redis_url)))


@pytest.fixture()
def empty_pg() -> Iterator[str]:
    """A PostgreSQL database with no tables at all."""
    url = create_database(POSTGRES_URL)
    yield url
    drop_database(POSTGRES_URL, url)


@pytest.fixture()
def bogus_revision(sqlite_url) -> str:
    """A ledger stamped with a migration revision this code does not know."""
    migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'deadbeef'"))
    engine.dispose()
    return sqlite_url


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung server, a black-holed proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in [*held, server]:
        conn.close()


@pytest.fixture()
def good_manifest(tmp_path) -> Path:
    return write(tmp_path / "good.parquet", good_columns())
