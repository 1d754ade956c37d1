"""Shared fixtures: the tiny offline model, real Redis and PostgreSQL, and worker environments."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producer.tiny_model import ensure_tiny_model
from rerankq.store.ledger import Ledger
from tests.services import POSTGRES_URL, REDIS_URL, create_database, drop_database, redis_client

TINY_DIR = Path(os.environ.get("RERANKQ_TEST_MODEL_CACHE", Path.home() / ".cache" / "rerankq" / "tiny-qwen3-reranker"))
_redis_db = itertools.count(1)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Built once per machine (about 10 s), reused by every test and worker."""
    return ensure_tiny_model(TINY_DIR)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with the most `slow` tests (they start workers) first, the rest in file order: with the
    modules spread over processes (scripts/test.sh: pytest-xdist, --dist loadfile) the long ones start at
    once and the short ones fill the gaps, so the run ends soon after its longest module."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow: dict[str, int] = {}
    for item in items:
        slow[module(item)] = slow.get(module(item), 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[module(item)])  # stable: file order within each weight


def _redis_db_number() -> int:
    """1-15, one per module. Each pytest-xdist process has a Redis server of its own, unless
    RERANKQ_TEST_REDIS_URL names a shared one: then the processes take turns through its 16 databases."""
    n = next(_redis_db)
    if os.environ.get("RERANKQ_TEST_REDIS_URL") and (worker := os.environ.get("PYTEST_XDIST_WORKER")):
        processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        n = n * processes + int(worker.removeprefix("gw"))
    return n % 15 + 1


@pytest.fixture(scope="module")
def redis_url() -> str:
    """A Redis database number of this module's own, emptied first."""
    url = f"{REDIS_URL}/{_redis_db_number()}"
    redis_client(url).flushdb()
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
