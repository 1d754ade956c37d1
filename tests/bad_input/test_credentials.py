"""Passwords in the database and broker URLs never appear in any command's output."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.bad_input.refusals import (
    Stack,
    assert_nothing_written,
)
from tests.services import redis_client


def test_credentials_never_appear_in_any_output(pg_stack: Stack, good_manifest: Path, tmp_path: Path):
    """A job that does go through, on PostgreSQL and Redis URLs with passwords: no command shows them."""
    queue = f"secret-test-{os.getpid()}"
    outputs = []
    try:
        sub = pg_stack.run("submit", str(good_manifest), "--name", "secret-test", RERANKQ_QUEUE=queue)
        assert sub.returncode == 0, sub.stderr
        job = sub.stdout.strip().splitlines()[-1]
        commands = [
            ("status", job), ("status", job, "--json"), ("list",), ("list", "--json"), ("wait", job, "--timeout", "1"),
            ("db", "current"), ("db", "upgrade"), ("resume", job), ("cancel", job), ("status", job), ("retry", job),
            ("export", job, "--out", str(tmp_path / "s.parquet")),
        ]  # fmt: skip
        for args in commands:
            outputs.append(pg_stack.run(*args, RERANKQ_QUEUE=queue))  # cli() asserts SECRET is in none of them
        assert json.loads(outputs[1].stdout)["job_id"] == job
        assert "postgres:***@" in outputs[6].stdout and "cancelled" in outputs[8].stdout
    finally:
        redis_client(pg_stack.redis_url).delete(queue)
        engine = create_engine(pg_stack.db_url)
        with engine.begin() as conn:
            for table in ("scores", "chunks", "jobs"):
                conn.execute(text(f"DELETE FROM {table}"))
        engine.dispose()
    assert_nothing_written(pg_stack.db_url, pg_stack.redis_url)
