"""A ledger at another migration revision, or with no tables: the producer and the worker refuse it and say
`producer db upgrade`; nothing creates tables on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from tests.bad_input.refusals import (
    JOB,
    SECRET,
    Stack,
    assert_nothing_written,
    assert_refused,
    cli,
    head,
    masked,
    with_password,
)
from tests.conftest import base_env
from tests.workers import CELERY, REPO, WORKER_COMMAND


@pytest.mark.parametrize(
    "args",
    [("submit", "{manifest}"), ("status", JOB), ("list",), ("rerank", "-q", "q", "-d", "doc"), ("resume", JOB)],
    ids=["submit", "status", "list", "rerank", "resume"],
)
def test_producer_refuses_a_database_at_another_revision(
    args: tuple[str, ...], bogus_revision: str, tiny_model, redis_url: str, good_manifest: Path
):
    env = base_env(tiny_model, bogus_revision, with_password(redis_url))
    result = cli(*(a.format(manifest=good_manifest) for a in args), env=env)
    needle = f"database {bogus_revision} is at revision deadbeef, this rerankq needs revision {head()}"
    assert_refused(result, Stack(bogus_revision, redis_url), needle + ": run `producer db upgrade`")


@pytest.mark.parametrize(
    "args", [("submit", "{manifest}"), ("status", JOB), ("list", "--json")], ids=["submit", "status", "list"]
)
def test_producer_refuses_an_empty_database(args: tuple[str, ...], empty_pg: str, tiny_model, redis_url, good_manifest):
    env = base_env(tiny_model, with_password(empty_pg), with_password(redis_url))
    result = cli(*(a.format(manifest=good_manifest) for a in args), env=env)
    shown = masked(with_password(empty_pg))
    needle = f"database {shown} has no rerankq tables, this rerankq needs revision {head()}: run `producer db upgrade`"
    assert_refused(result, Stack(empty_pg, redis_url), needle)
    engine = create_engine(empty_pg)
    assert inspect(engine).get_table_names() == [], "the producer created tables on its own"
    engine.dispose()


def test_db_upgrade_refuses_an_unknown_revision(bogus_revision: str, tiny_model, redis_url: str):
    result = cli("db", "upgrade", env=base_env(tiny_model, bogus_revision, with_password(redis_url)))
    assert_refused(
        result, Stack(bogus_revision, redis_url),
        f"cannot upgrade the database {bogus_revision}: Can't locate revision identified by 'deadbeef'",
    )  # fmt: skip


@pytest.mark.parametrize("db", ["sqlite-bogus-revision", "postgresql-empty"])
def test_worker_refuses_to_start(db: str, request, tiny_model, redis_url: str, tmp_path: Path):
    if db == "postgresql-empty":
        url = request.getfixturevalue("empty_pg")
        env_url = with_password(url)
        needle = "has no rerankq tables"
    else:
        url = env_url = request.getfixturevalue("bogus_revision")
        needle = f"database {url} is at revision deadbeef, this rerankq needs revision {head()}"
    env = {**os.environ, **base_env(tiny_model, env_url, with_password(redis_url), RERANKQ_LOG_JSON="false")}
    log_path = tmp_path / "worker.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*CELERY, *WORKER_COMMAND, "--loglevel", "INFO"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        while proc.poll() is None and time.monotonic() - started < 90:
            if " ready." in log_path.read_text(errors="replace"):
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own worker's group only
            proc.wait()
    output = log_path.read_text(errors="replace")
    elapsed = time.monotonic() - started
    assert SECRET not in output, output
    assert "engine_loading" not in output, f"the worker loaded an engine:\n{output[-3000:]}"
    assert_nothing_written(url, redis_url)
    assert " ready." not in output, f"the worker started anyway:\n{output[-3000:]}"
    assert proc.returncode not in (0, None) and proc.returncode > 0, output[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert needle in output and "run `producer db upgrade`" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
