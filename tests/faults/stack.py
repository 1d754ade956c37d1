"""The fault tests' stack: real worker processes, a Redis and a PostgreSQL of the module's own.

Every scenario ends with the same proof: the ledger holds each pair of the manifest exactly once,
each finished chunk holds all its scores and no other chunk holds any (checked while jobs run too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.services import PrivatePostgres, PrivateRedis, create_database
from tests.workers import WorkerProcess

COUNTS = {"scenarios": 0, "pairs_lost": 0, "pairs_duplicated": 0}
DEAD_AFTER = 8  # seconds; the default is 60, shortened so the suite runs in minutes


def wait_for(predicate: Callable[[], object], timeout: float = 300, what: str = "condition", every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the database may be restarting
            value = None
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


class Stack:
    """The module's services, its manifest factory and ledger probes."""

    def __init__(self, tiny_model: Path, tmp: Path):
        self.tmp = tmp
        self.redis = PrivateRedis()
        self.redis.start()
        self.pg = PrivatePostgres()
        self.pg.start()
        self.db_url = create_database(self.pg.admin_url)
        migrate(self.db_url)
        self.poison_flag = tmp / "poison.on"
        self.dead_flag = tmp / "dead.on"
        self.env = base_env(
            tiny_model,
            self.db_url,
            self.redis.url,
            RERANKQ_ENGINE="tests.fault_engines:poisonable",
            RERANKQ_TEST_POISON_FILE=str(self.poison_flag),
            RERANKQ_TEST_DEAD_FILE=str(self.dead_flag),
            # Default visibility timeout (3 h): recovery must come from the worker registry's sweeper.
            RERANKQ_WORKER_DEAD_AFTER=DEAD_AFTER,
            RERANKQ_HEARTBEAT_INTERVAL=1,
            RERANKQ_MAX_RETRIES=2,
            RERANKQ_RETRY_BACKOFF=1,
            RERANKQ_MAX_LENGTH=256,
            RERANKQ_WRITE_RETRY_SECONDS=120,
            RERANKQ_PIPELINE_PAIRS=500,  # chunks of 1000+ pairs go through the tokenizer helper process
        )
        self.engine = create_engine(self.db_url, pool_pre_ping=True)
        self._n = 0

    def worker(self) -> WorkerProcess:
        self._n += 1
        return WorkerProcess(self.env, self.tmp / f"worker-{self._n}.log").start()

    def submit(self, n_queries: int, docs: int, chunk_size: int, seed: int, poison_query: int | None = None) -> tuple[str, set]:
        columns = rows(n_queries, docs, seed=seed, long_every=10**9)
        if poison_query is not None:
            for i, qid in enumerate(columns["query_id"]):
                if qid == f"q{poison_query:04d}":
                    columns["document"][i] += " POISONPILL"
        path = write_manifest(self.tmp / f"manifest-{seed}.parquet", columns)
        out = producer("submit", str(path), "--chunk-size", str(chunk_size), env=self.env, check=True)
        return out.stdout.strip().splitlines()[-1], set(zip(columns["query_id"], columns["doc_id"]))

    def sql(self, query: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).all()

    def chunks(self, job_id: str) -> list:
        return self.sql("SELECT id, seq, state, attempts, worker, pairs, started_at FROM chunks WHERE job_id=:j ORDER BY seq", j=job_id)

    def state(self, job_id: str) -> str:
        return self.sql("SELECT state FROM jobs WHERE id=:j", j=job_id)[0][0]

    def running_chunk(self, job_id: str, worker_pid: int | None = None):
        for c in self.chunks(job_id):
            if c.state == "running" and (worker_pid is None or f":{worker_pid}:" in c.worker):
                return c
        return None

    def assert_chunks_atomic(self, job_id: str) -> None:
        """A finished chunk holds all its scores; any other chunk holds none: no partial chunk is visible."""
        for cid, state, pairs, written in self.sql(
            "SELECT c.id, c.state, c.pairs, (SELECT count(*) FROM scores s WHERE s.chunk_id = c.id) "
            "FROM chunks c WHERE c.job_id=:j",
            j=job_id,
        ):
            assert written == (pairs if state == "done" else 0), (cid, state, pairs, written)

    def assert_exactly_once(self, job_id: str, expected: set) -> None:
        got = self.sql("SELECT query_id, doc_id FROM scores WHERE job_id=:j", j=job_id)
        keys = [tuple(r) for r in got]
        lost, duplicated = len(expected - set(keys)), len(keys) - len(set(keys))
        COUNTS["pairs_lost"] += lost
        COUNTS["pairs_duplicated"] += duplicated
        assert (lost, duplicated) == (0, 0)
        assert set(keys) == expected
        self.assert_chunks_atomic(job_id)
        status = json.loads(producer("status", job_id, "--json", env=self.env, check=True).stdout)
        assert status["pairs_scored"] == len(expected) == status["pairs_total"]
        COUNTS["scenarios"] += 1

    def completes_with_a_new_worker(self, job_id: str, expected: set) -> None:
        """A fresh worker takes the job to completed, every pair exactly once; it leaves after."""
        fresh = self.worker().wait_ready()
        try:
            assert self.wait_state(job_id, ("completed",)) == "completed"
            self.assert_exactly_once(job_id, expected)
        finally:
            fresh.terminate()

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 400) -> str:
        return wait_for(lambda: (s := self.state(job_id)) in states and s, timeout, f"job {job_id} in {states}")

    def close(self) -> None:
        self.engine.dispose()
        self.redis.stop()
        self.pg.destroy()
