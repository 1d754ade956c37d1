"""Shared fixtures: the tiny offline model, real Redis and PostgreSQL, and worker environments."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from producer.tiny_model import ensure_tiny_model
from rerankq.store.ledger import Ledger
from tests.services import POSTGRES_URL, REDIS_URL, create_database, drop_database

TINY_DIR = Path(os.environ.get("RERANKQ_TEST_MODEL_CACHE", Path.home() / ".cache" / "rerankq" / "tiny-qwen3-reranker"))
_redis_db = itertools.count(1)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Built once per machine (about 10 s), reused by every test and worker."""
    return ensure_tiny_model(TINY_DIR)


@pytest.fixture(scope="module")
def redis_url() -> str:
    """A Redis database number of this module's own, emptied first."""
    url = f"{REDIS_URL}/{next(_redis_db) % 16}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def pg_url():
    url = create_database(POSTGRES_URL)
    yield url
    drop_database(POSTGRES_URL, url)


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, sqlite_url: str, pg_url: str) -> Ledger:
    """A migrated ledger on each database (a module may define its own ``store``)."""
    url = sqlite_url if request.param == "sqlite" else pg_url
    migrate(url)
    return Ledger(url)


def base_env(model: Path, database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {
        "RERANKQ_MODEL": str(model),
        "RERANKQ_DATABASE_URL": database_url,
        "RERANKQ_BROKER_URL": broker_url,
        "RERANKQ_ENFORCE_EAGER": "true",
        "RERANKQ_DTYPE": "float32",
        "RERANKQ_LOG_JSON": "true",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def producer(
    *args: str, env: dict[str, str], timeout: float = 300, check: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the `producer` console script as a user would."""
    exe = Path(sys.executable).with_name("producer")
    result = subprocess.run(
        [str(exe), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    if check and result.returncode != 0:
        raise AssertionError(f"producer {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def migrate(url: str) -> None:
    from rerankq.store.db import upgrade

    upgrade(url)
