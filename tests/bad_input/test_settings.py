"""A database URL or setting that cannot be used: a clear error naming it, its password masked."""

from __future__ import annotations

import pytest

from tests.bad_input.refusals import (
    SECRET,
    Stack,
    assert_clear_error,
    assert_nothing_written,
    assert_refused,
    cli,
    with_password,
)
from tests.conftest import base_env


@pytest.mark.parametrize(
    "url, needle",
    [
        ("not a url", "cannot use the database URL (unparsable): Could not parse"),
        (f"mysql://u:{SECRET}@127.0.0.1/x", "cannot use the database URL mysql://u:***@127.0.0.1/x: No module named"),
        (f"nosuchdb://u:{SECRET}@127.0.0.1/x", "cannot use the database URL nosuchdb://u:***@127.0.0.1/x: Can't load"),
        (f"postgresql://u:{SECRET}@127.0.0.1:notaport/x", "cannot use the database URL (unparsable)"),
        (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/rq_no_such_db", 'database "rq_no_such_db" does not exist'),
    ],
    ids=["unparsable", "driver-missing", "unknown-dialect", "bad-port", "no-such-database"],
)
def test_bad_database_url(url: str, needle: str, tiny_model, redis_url: str):
    for args in (("list",), ("db", "upgrade")):
        result = cli(*args, env=base_env(tiny_model, url, with_password(redis_url)))
        assert_clear_error(result, needle)
    assert_nothing_written(None, redis_url)


@pytest.mark.parametrize("name, value", [("RERANKQ_MAX_LENGTH", "lots"), ("RERANKQ_MANIFEST_SCHEMES", "file,s3")])
def test_bad_setting_value(name: str, value: str, stack: Stack):
    result = stack.run("list", **{name: value})  # asserts no password in the output
    assert result.returncode != 0
    assert_refused(result, stack, name)
