"""What every bad-input test checks (one clear `error:` line, exit 3, no traceback, no password, nothing
in the ledger or the queue) and the good manifest each case spoils."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import create_engine, inspect, text

from tests.conftest import producer
from tests.corpus import rows
from tests.services import redis_client

SECRET = "S3cretPw-xyz"
QUEUE = "gpu"
JOB = "no-such-job"
FAST = 15  # seconds: an unreachable service is an error within this, not a hang


def with_password(url: str) -> str:
    """The same URL carrying SECRET (the test services ignore it: trust auth, no Redis password)."""
    scheme, rest = url.split("://", 1)
    netloc, _, path = rest.partition("/")
    user, _, host = netloc.rpartition("@")
    if ":" in user:  # a password of its own already
        return url
    return f"{scheme}://{user}:{SECRET}@{host}/{path}"


def masked(url: str) -> str:
    from rerankq.store.db import safe_url

    return safe_url(url)


def rejected(manifest: str, problems: int = 1) -> str:
    return f"manifest {manifest} rejected, nothing was submitted: {problems} problem(s)\n  "


@dataclass
class Stack:
    """One migrated ledger and the module's Redis db, as the producer sees them (URLs with SECRET)."""

    db_url: str  # for this test's own queries
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        return cli(*args, env={**self.env, **{k: str(v) for k, v in extra.items()}}, timeout=timeout)


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    result = producer(*args, env=env, timeout=timeout)
    assert SECRET not in result.stdout + result.stderr, f"a password leaked:\n{result.stdout}\n{result.stderr}"
    return result


def assert_clear_error(result: subprocess.CompletedProcess, *needles: str, code: int = 3) -> None:
    """Exit 3, `error: ...` on stderr holding every needle, no traceback, no password."""
    output = result.stdout + result.stderr
    detail = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == code, detail
    assert "Traceback" not in output, detail  # neither plain nor rich (typer) tracebacks
    assert SECRET not in output, detail
    if code == 3:
        assert result.stderr.startswith("error: "), detail
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in stderr\n{detail}"


def assert_nothing_written(db_url: str | None, redis_url: str) -> None:
    """No job, chunk or score row in the ledger and no message in the queue."""
    from rerankq.broker import priority_lists

    for name in priority_lists(QUEUE).values():  # interactive and batch chunks have lists of their own
        assert redis_client(redis_url).llen(name) == 0, f"a message was enqueued ({name!r})"
    if db_url is None:
        return
    engine = create_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            for table in ("jobs", "chunks", "scores"):
                if table in tables:
                    assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, f"rows in {table}"
    finally:
        engine.dispose()


def assert_refused(result: subprocess.CompletedProcess, stack: Stack, *needles: str, code: int = 3) -> None:
    assert_clear_error(result, *needles, code=code)
    assert_nothing_written(stack.db_url, stack.redis_url)


def good_columns(n_queries: int = 3, docs: int = 4) -> dict[str, list]:
    """q0000 rows 0-3, q0001 rows 4-7, q0002 rows 8-11 (short documents)."""
    return rows(n_queries, docs, seed=1, long_every=10**9)


def write(path: Path, columns: dict[str, list] | pa.Table, row_group_size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def with_column(columns: dict[str, list], name: str, array: pa.Array) -> pa.Table:
    table = pa.table(columns)
    return table.set_column(table.schema.get_field_index(name), name, array)


def set_value(name: str, row: int, value: object) -> dict[str, list]:
    columns = good_columns()
    columns[name][row] = value
    return columns


def head() -> str:
    from rerankq.store.db import head_revision

    return head_revision()
