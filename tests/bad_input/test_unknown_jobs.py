"""A job id the ledger does not know, and an export to nowhere: a clear error, no file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.bad_input.refusals import (
    JOB,
    Stack,
    assert_clear_error,
    assert_refused,
)
from tests.services import redis_client


@pytest.mark.parametrize(
    "args",
    [("status", JOB), ("status", JOB, "--json"), ("wait", JOB, "--timeout", "5"), ("export", JOB, "--out", "{out}"),
     ("cancel", JOB), ("resume", JOB), ("retry", JOB)],
    ids=["status", "status-json", "wait", "export", "cancel", "resume", "retry"],
)  # fmt: skip
def test_unknown_job_id(args: tuple[str, ...], stack: Stack, tmp_path: Path):
    out = tmp_path / "scores.parquet"
    result = stack.run(*(a.format(out=out) for a in args))
    assert_refused(result, stack, f"no job '{JOB}' in the ledger")
    assert list(tmp_path.glob("scores*")) == [], "export left a file behind"


def test_unknown_job_id_on_postgresql(pg_stack: Stack):
    for command in ("status", "cancel"):
        assert_refused(pg_stack.run(command, JOB), pg_stack, f"no job '{JOB}' in the ledger")


def test_export_to_a_directory_that_does_not_exist(stack: Stack, good_manifest: Path, tmp_path: Path):
    """A real (finished-nothing) job exported to nowhere: a clear error, not a traceback."""
    sub = stack.run("submit", str(good_manifest), RERANKQ_QUEUE="unused-export-test")
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().splitlines()[-1]
    try:
        target = tmp_path / "no" / "such" / "dir" / "scores.parquet"
        result = stack.run("export", job, "--out", str(target))
        assert_clear_error(result, f"cannot write {target}: No such file or directory")
        assert not (tmp_path / "no").exists()
    finally:  # this test made a job on purpose: remove it, so the stack's end check holds
        redis_client(stack.redis_url).delete("unused-export-test")
        engine = create_engine(stack.db_url)
        with engine.begin() as conn:
            for table in ("scores", "chunks", "jobs"):
                conn.execute(text(f"DELETE FROM {table}"))
        engine.dispose()
