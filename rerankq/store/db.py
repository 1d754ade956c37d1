"""Database engines: SQLite tuned for several processes, PostgreSQL with bounded connect time,
and the migration-revision check both producer and worker run before touching the ledger."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from rerankq.redact import mask_secrets, mask_url

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class DatabaseError(RuntimeError):
    """A ledger problem explained for the user (credentials never included)."""


def safe_url(url: str) -> str:
    """The URL as errors and output show it: every password form masked (rerankq/redact.py)."""
    return mask_url(url)


def make_engine(url: str, connect_timeout: float = 5.0) -> Engine:
    try:
        return _make_engine(url, connect_timeout)
    except (ArgumentError, ValueError, ImportError) as exc:  # unparsable URL, unknown dialect, driver missing
        try:
            make_url(url)
            shown = safe_url(url)
        except (ArgumentError, ValueError):
            shown = "(unparsable)"  # a libpq key=value DSN too: SQLAlchemy takes URLs only
        raise DatabaseError(f"cannot use the database URL {shown}: {mask_secrets(str(exc))}") from None


def _make_engine(url: str, connect_timeout: float) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(u, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA cache_size=-65536")  # 64 MiB, not 2: score-cache lookups and fills stay in memory
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            # Take the write lock up front: a read-then-write transaction can't deadlock or lose an update.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        return create_engine(
            u,
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, int(connect_timeout))},
        )
    return create_engine(u, pool_pre_ping=True)


@lru_cache(maxsize=8)
def _cached(url: str, connect_timeout: float) -> tuple[Engine, sessionmaker[Session]]:
    engine = make_engine(url, connect_timeout)
    return engine, sessionmaker(engine, expire_on_commit=False)


def get_engine(url: str, connect_timeout: float = 5.0) -> Engine:
    return _cached(url, connect_timeout)[0]


def session_factory(url: str, connect_timeout: float = 5.0) -> sessionmaker[Session]:
    return _cached(url, connect_timeout)[1]


def alembic_config(url: str):  # noqa: ANN201 - alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


# The migration head this code needs, written out: reading alembic's script directory costs every
# command ~0.2 s of imports and parsing. tests/test_ledger.py checks it is alembic's head.
HEAD_REVISION = "0012_streaming_submit"


def head_revision() -> str:
    return HEAD_REVISION


def current_revision(engine: Engine) -> str | None:
    """The ledger's revision from alembic's own table (None: no rerankq tables), read with plain SQL."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            versions = sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except Exception as exc:  # connection refused, bad host, auth ...
        raise DatabaseError(f"cannot reach the database {safe_url(str(engine.url))}: {_reason(exc)}") from None
    return ",".join(versions) or None


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return mask_secrets(text[0]) if text else type(exc).__name__


def upgrade(url: str) -> str:
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(url), "head")
    except CommandError as exc:  # e.g. a revision this code does not know: a newer rerankq migrated it
        raise DatabaseError(
            f"cannot upgrade the database {safe_url(url)}: {mask_secrets(str(exc))} (migrated by another rerankq version?)"
        ) from None
    return head_revision()


def check_revision(url: str, connect_timeout: float = 5.0) -> Engine:
    """The engine, once the database is at this code's migration head; else a clear DatabaseError."""
    engine = get_engine(url, connect_timeout)
    current, head = current_revision(engine), head_revision()
    if current != head:
        where = "has no rerankq tables" if current is None else f"is at revision {current}"
        raise DatabaseError(
            f"database {safe_url(url)} {where}, this rerankq needs revision {head}: run `producer db upgrade`"
        )
    return engine
