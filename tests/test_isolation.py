"""The test suite never empties a Redis it did not start (issue 19: it flushed the machine's own)."""

from __future__ import annotations

import os

import psutil
import pytest

from tests.services import REDIS_URL, redis_client


@pytest.mark.skipif("RERANKQ_TEST_REDIS_URL" in os.environ, reason="a Redis named for the tests to empty")
def test_tests_flush_only_a_redis_of_their_own():
    server_pid = redis_client(REDIS_URL).info("server")["process_id"]
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    assert server_pid in ours, f"{REDIS_URL} is not a server this test run started"
    assert not REDIS_URL.endswith(":6379")
