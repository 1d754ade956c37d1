"""Real Redis and PostgreSQL for the tests. Redis: a server of the test run's own (a private
redis-server on a free port, gone when the run ends), so emptying a database never touches the
machine's Redis; ``RERANKQ_TEST_REDIS_URL`` names one the tests may empty instead. PostgreSQL: the
machine's, each module in a fresh database it creates and drops. Private servers a test may stop and
restart are below too."""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

POSTGRES_URL = os.environ.get("RERANKQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def redis_client(url: str, **options: object) -> redis.Redis:
    """A test's Redis client. redis-py 8 reads with a 5 s timeout by default, which a loaded CI host's
    Redis (one of several busy processes on two cores) has overrun: a test waits up to a minute instead."""
    return redis.Redis.from_url(url, **{"socket_timeout": 60, "socket_connect_timeout": 10, **options})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def sqlalchemy_pg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def create_database(admin_url: str) -> str:
    """A fresh database on the server of ``admin_url``; returns its SQLAlchemy URL."""
    name = f"rq_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return sqlalchemy_pg(admin_url.rsplit("/", 1)[0] + f"/{name}")


def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PrivateRedis:
    """A redis-server of our own (nothing on disk), so a test can restart it: its queue is then empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(5):  # a port found free may be taken before our server binds it (parallel test processes)
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            try:
                self.proc.wait(0.2)  # exited at once: the port is taken
            except subprocess.TimeoutExpired:
                wait_port(self.port)
                return
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start (exit {self.proc.returncode})")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis_client(self.url)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else (shutil.which(name) or name)


class PrivatePostgres:
    """A PostgreSQL cluster of our own in a temp dir (run as the postgres user when we are root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rerankq-pg-"))
        self.data = self.dir / "data"
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        subprocess.run(
            [*self._as_user, _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self._as_user, _pg_bin("pg_ctl"), "-D", str(self.data), *args], check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _test_redis() -> str:
    """The tests' Redis (without a database number): the one named, else a private server for this run."""
    named = os.environ.get("RERANKQ_TEST_REDIS_URL")
    if named:
        return named.rstrip("/")
    server = PrivateRedis()
    server.start()
    atexit.register(server.stop)
    return f"redis://127.0.0.1:{server.port}"


REDIS_URL = _test_redis()
