"""The live lane (issue 28) with a real worker (`celery -A worker worker -Q gpu`, the slow engine: each engine
call sleeps, so a batch job is caught running) and `producer serve`, on real Redis and PostgreSQL: no job, chunk
or scores partition per live request, a live request answered while a batch job runs (which still completes
exactly once), and cancelled requests never scored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from rerankq.live import LivePair, LiveRequest, cancel_key, lane_key, new_id, reply_key
from tests.conftest import base_env, migrate
from tests.corpus import rows, write_manifest
from tests.polling import wait_for
from tests.services import free_port, redis_client, wait_port
from tests.workers import REPO, WorkerProcess

pytestmark = pytest.mark.slow
Q = "What is the capital of China?"
DOCS = ["The capital of China is Beijing.", "Gravity attracts bodies.", "北京是中华人民共和国的首都。"]


class Stack:
    def __init__(self, tiny_model: Path, db: str, broker: str, tmp: Path):
        self.tmp, self.db, self.broker = tmp, db, broker
        self.metrics_port = free_port()
        self.env = base_env(
            tiny_model, db, broker, RERANKQ_MAX_LENGTH=512, RERANKQ_ENGINE="tests.slow_engine:factory",
            RERANKQ_TEST_SECONDS_PER_CALL="1", RERANKQ_LIVE_IN_FLIGHT="2", RERANKQ_METRICS_PORT=self.metrics_port,
        )  # fmt: skip
        self.model = self.env["RERANKQ_MODEL"]
        self.worker = WorkerProcess({**self.env, "CUDA_VISIBLE_DEVICES": ""}, tmp / "worker.log").start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_log = open(tmp / "service.log", "wb")  # noqa: SIM115
        self.service = subprocess.Popen(
            [str(Path(sys.executable).with_name("producer")), "serve", "--port", str(self.port)], cwd=REPO,
            env={**os.environ, **self.env, "RERANKQ_MANIFEST_ROOTS": json.dumps([str(tmp)])},
            stdout=self.service_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port, 60)
        self.worker.wait_ready()
        self.redis = redis_client(broker)
        self.lane = lane_key("gpu", self.model)

    def rerank(self, query: str = Q, timeout: float = 120) -> requests.Response:
        return requests.post(f"{self.url}/v1/rerank", json={"query": query, "documents": DOCS}, timeout=timeout)

    def status(self, job_id: str) -> dict:
        return requests.get(f"{self.url}/v1/jobs/{job_id}", timeout=30).json()

    def worker_live(self) -> dict[str, float]:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return {m[0]: float(m[1]) for m in re.findall(r'^rerankq_worker_live_requests_total\{[^}]*outcome="(\w+)"\} (\S+)$', text, re.M)}

    def ledger_counts(self) -> dict[str, int]:
        url = self.db.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url) as conn:
            one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
            return {
                "jobs": one("SELECT count(*) FROM jobs"),
                "chunks": one("SELECT count(*) FROM chunks"),
                "scores": one("SELECT count(*) FROM scores"),
                "partitions": one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'scores'::regclass"),
                "relations": one("SELECT count(*) FROM pg_class"),
                "audit": one("SELECT count(*) FROM audit_events"),
            }

    def push(self, documents: list[str]) -> LiveRequest:
        """A live request as the service pushes it, for the cases a client cannot time precisely."""
        request = LiveRequest(
            id=new_id(), model=self.model, deadline=time.time() + 120,
            pairs=[LivePair(query=Q, document=d) for d in documents],
        )  # fmt: skip
        self.redis.rpush(self.lane, request.model_dump_json())
        return request

    def close(self) -> None:
        self.service.terminate()
        self.service.wait(30)
        self.worker.terminate()


@pytest.fixture(scope="module")
def stack(tiny_model, pg_url, redis_url, tmp_path_factory):
    migrate(pg_url)
    s = Stack(tiny_model, pg_url, redis_url, tmp_path_factory.mktemp("lane"))
    yield s
    s.close()


def test_no_job_chunk_or_partition_per_live_request(stack):
    before = stack.ledger_counts()
    answers: list[requests.Response] = []

    def client(i: int) -> None:
        answers.append(stack.rerank(f"{Q} {i}"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]  # together: they share engine calls
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        answers.append(stack.rerank(f"{Q} again {i}"))
    assert [a.status_code for a in answers] == [200] * 15, [a.text for a in answers if a.status_code != 200]
    for a in answers:
        body = a.json()
        scores = [x["relevance_score"] for x in body["results"]]
        assert scores == sorted(scores, reverse=True) and sorted(x["index"] for x in body["results"]) == [0, 1, 2]
        assert all(x["document"]["text"] == DOCS[x["index"]] for x in body["results"])
        assert body["id"].startswith("rerank-") and body["usage"]["total_tokens"] > 0
    assert stack.ledger_counts() == before, "no job, chunk, score row, partition or catalogue entry per live request"
    assert stack.worker_live().get("scored") == 15
    service = requests.get(f"{stack.url}/metrics", timeout=10).text
    assert re.search(r'^rerankq_live_requests_total\{model="[^"]+",outcome="ok"\} 15\.0$', service, re.M), service
    assert re.search(r'^rerankq_live_pairs_total\{model="[^"]+"\} 45\.0$', service, re.M)
    assert re.search(r'^rerankq_live_duration_seconds_count\{model="[^"]+"\} 15\.0$', service, re.M)
    assert stack.redis.llen(stack.lane) == 0 and not stack.redis.keys("rerankq:live:reply:*"), "nothing left in Redis"


def test_producer_rerank_goes_through_the_lane_too(stack):
    """`producer rerank` (and ``rerank()``, which it calls) takes the live lane when a worker runs one: the same
    ranking as /v1/rerank, and no job, chunk or partition either."""
    before = stack.ledger_counts()
    args = [str(Path(sys.executable).with_name("producer")), "rerank", "-q", Q, "--json"]
    for d in DOCS:
        args += ["-d", d]
    out = subprocess.run(args, cwd=REPO, env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    ranked = json.loads(out.stdout)
    http = stack.rerank().json()["results"]
    assert [r["doc_id"] for r in ranked] == [str(x["index"]) for x in http] and [r["rank"] for r in ranked] == [1, 2, 3]
    assert [r["score"] for r in ranked] == pytest.approx([x["relevance_score"] for x in http], abs=1e-6)
    assert all(r["document"] == DOCS[int(r["doc_id"])] and r["error"] is None for r in ranked)
    assert stack.ledger_counts() == before, "no job, chunk or partition for `producer rerank` either"

    import asyncio

    from producer import rerank
    from rerankq.settings import Settings

    settings = Settings(**{k.removeprefix("RERANKQ_").lower(): v for k, v in stack.env.items() if k.startswith("RERANKQ_")})

    async def in_a_notebook() -> list:  # rerank() called where an event loop already runs
        return rerank(Q, DOCS, settings=settings)

    api = asyncio.run(in_a_notebook())
    assert [r.doc_id for r in api] == [r["doc_id"] for r in ranked] and stack.ledger_counts() == before


def test_a_live_request_is_answered_while_a_batch_job_runs(stack):
    manifest = write_manifest(stack.tmp / "night.parquet", rows(n_queries=10, docs_per_query=4, seed=28))
    r = requests.post(f"{stack.url}/v1/jobs", json={"manifest": str(manifest), "chunk_size": 4, "name": "night"}, timeout=60)
    assert r.status_code == 201, r.text
    job = r.json()["job_id"]
    wait_for(lambda: stack.status(job)["state"] == "running", 120, "the batch job to start")
    answered_while_running = 0
    for i in range(2):
        answer = stack.rerank(f"{Q} during the night {i}")
        assert answer.status_code == 200, answer.text
        status = stack.status(job)
        answered_while_running += status["state"] == "running" and status["chunks"]["pending"] + status["chunks"]["running"] > 0
    assert answered_while_running == 2, "each live request went ahead of the batch's waiting engine calls"
    final = wait_for(lambda: (s := stack.status(job))["state"] in ("completed", "failed", "completed_with_errors") and s, 300, "the job")
    assert final["state"] == "completed", final
    url = stack.db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows_, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (query_id, doc_id)) FROM scores WHERE job_id = %s", (job,)
        ).fetchone()
        attempts = conn.execute("SELECT state, attempts FROM chunks WHERE job_id = %s", (job,)).fetchall()
    assert rows_ == distinct == 40, "every pair scored and written exactly once"
    assert attempts == [("done", 1)] * 10, attempts


def test_cancelled_requests_are_not_scored(stack):
    start = stack.worker_live()
    # Four requests: two fill the worker's live slots (RERANKQ_LIVE_IN_FLIGHT), two wait in the lane; together
    # about four engine calls of the slow engine.
    fillers = [stack.push([f"filler {i}"]) for i in range(4)]
    wait_for(lambda: stack.redis.llen(stack.lane) == 2, 60, "the worker to take two")
    # One is cancelled before any worker begins it (as the service marks it when its client leaves) ...
    early = stack.push(["cancelled early"])
    stack.redis.set(cancel_key(early.id), b"1", ex=60)
    # ... and one through HTTP whose client gives up while it waits behind them.
    with pytest.raises(requests.exceptions.ReadTimeout):
        stack.rerank("a client who leaves", timeout=0.3)
    last = stack.push(["answered"])
    for r in (*fillers, last):
        assert stack.redis.blpop([reply_key(r.id)], timeout=120) is not None
    assert not stack.redis.exists(reply_key(early.id))
    wait_for(lambda: stack.worker_live().get("scored", 0) - start.get("scored", 0) == 5, 60, "the worker's count")
    now = stack.worker_live()
    assert now.get("skipped", 0) + now.get("cancelled", 0) - start.get("skipped", 0) - start.get("cancelled", 0) >= 1
    assert now.get("scored", 0) - start.get("scored", 0) == 5, "the two cancelled requests never reached the engine"
    def metrics() -> str | None:
        text = requests.get(f"{stack.url}/metrics", timeout=10).text
        return text if 'outcome="cancelled"' in text else None

    service = wait_for(metrics, 30, "the service to notice the client left")
    assert re.search(r'^rerankq_live_requests_total\{model="[^"]+",outcome="cancelled"\} 1\.0$', service, re.M)
    assert stack.redis.llen(stack.lane) == 0
