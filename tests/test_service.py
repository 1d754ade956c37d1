"""The HTTP service without a worker: bad input and overload, security, jobs API, export, metrics,
and the interactive priority, against real Redis, a real SQLite ledger and the real tokenizer.
(tests/test_service_live.py runs the same service against a real worker and a real browser.)"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from rerankq.settings import Settings
from tests.conftest import migrate
from tests.corpus import rows, write_manifest
from tests.services import free_port, redis_client

KEY = "k3y-Sup3r-s3cret"


@pytest.fixture()
def settings(tmp_path: Path, redis_url: str, tiny_model: Path) -> Settings:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(db)
    redis_client(redis_url).flushdb()
    return Settings(
        database_url=db, broker_url=redis_url, model=str(tiny_model), max_length=512, rerank_timeout=1.0,
        max_inline_pairs=50, max_request_bytes=64 * 1024, max_interactive_backlog=2, manifest_roots=[str(tmp_path)],
    )  # fmt: skip


def client(settings: Settings, **overrides) -> TestClient:
    from producer.service import create_app

    return TestClient(create_app(Settings(**{**dict(settings), **overrides})))


def detail(response) -> str:  # noqa: ANN001
    return response.json()["detail"]


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "q", "documents": []}, 400, "field 'documents': List should have at least 1 item after validation, not 0"),
        ({"documents": ["a"]}, 400, "field 'query': Field required"),
        ({"query": "q"}, 400, "field 'documents': Field required"),
        ({"query": "", "documents": ["a"]}, 400, "field 'query': String should have at least 1 character"),
        ({"query": 7, "documents": ["a"]}, 400, "field 'query': expected a string or {\"content\""),
        ({"query": "q", "documents": ["a", 3]}, 400, "field 'documents': item 1: expected a string, an object with a \"text\" string, or {\"content\": [text parts]}"),
        ({"query": "q", "documents": [{"txt": "a"}]}, 400, "field 'documents': item 0: expected a string, an object with a \"text\" string"),
        ({"query": "q", "documents": ["a"], "top_n": "2"}, 400, "field 'top_n': Input should be a valid integer"),
        ({"query": "q", "documents": ["a"], "top_n": -1}, 400, "field 'top_n': Input should be greater than or equal to 0"),
        ({"query": "q", "documents": ["a"], "return_documents": "yes"}, 400, "field 'return_documents': Input should be a valid boolean"),
        ({"query": "q", "documents": ["a"], "max_tokens_per_doc": -1}, 400, "field 'max_tokens_per_doc': max_tokens_per_doc must be a non-negative integer"),
        ({"query": "q", "documents": ["a", ""]}, 400, "field 'documents[1]': is an empty string"),
        ({"query": "q", "documents": ["d"] * 51}, 400, "field 'documents': 51 documents, over the limit of 50 (RERANKQ_MAX_INLINE_PAIRS)"),
        ([1, 2], 400, "request body: Input should be a valid dictionary"),
    ],
    ids=[
        "empty-documents", "missing-query", "missing-documents", "empty-query", "query-not-string",
        "document-not-string", "document-object-without-text", "top_n-string", "top_n-negative",
        "return_documents-string", "max_tokens_per_doc-negative", "empty-document", "too-many-documents", "body-not-object",
    ],
)  # fmt: skip
def test_bad_rerank_requests_name_the_field(settings, body, status, message):
    alive_worker(settings)  # per-pair checks (empty texts) run at submission, after the no-worker 503
    with client(settings) as c:
        r = c.post("/v1/rerank", json=body)
    assert r.status_code == status, r.text
    assert message in detail(r)
    error = r.json()["error"]  # OpenAI's and vLLM's shape, which the openai SDK reads
    assert (error["message"], error["code"], error["type"]) == (detail(r), 400, "BadRequestError")
    assert redis_client(settings.broker).dbsize() == 0, "nothing enqueued"


def test_invalid_json_and_oversize_bodies(settings):
    with client(settings) as c:
        r = c.post("/v1/rerank", content=b'{"query": "q", "documents": [', headers={"content-type": "application/json"})
        assert r.status_code == 400 and detail(r).startswith("invalid JSON in the request body"), r.text
        big = {"query": "q", "documents": ["x" * 70_000]}
        r = c.post("/v1/rerank", json=big)
        assert r.status_code == 413, r.text
        assert detail(r) == "request body: over the limit of 65,536 bytes (RERANKQ_MAX_REQUEST_BYTES)"

        def chunked():  # no Content-Length: counted as it arrives
            yield b'{"query": "q", "documents": ["'
            for _ in range(20):
                yield b"y" * 5000
            yield b'"]}'

        r = c.post("/v1/rerank", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
    assert redis_client(settings.broker).dbsize() == 0


def alive_worker(settings: Settings, state: str = "ready") -> None:
    """A registry row whose heartbeat is fresh: the service counts it alive, though nothing ever scores."""
    from rerankq.store.registry import Registry, WorkerInfo

    registry = Registry(settings.database)
    registry.register(WorkerInfo("gpu-node-1:7:x", "gpu-node-1", 7, settings.model))
    registry.heartbeat("gpu-node-1:7:x", state=state)


def test_full_interactive_queue_answers_429_and_the_service_stays_up(settings):
    """A worker that never takes a chunk: requests time out (504 saying what the workers do, their jobs
    cancelled) and wait in the queue; past the limit, 429. (No worker at all: 503 at once,
    tests/test_service_console.py.)"""
    body = {"query": "capital of China?", "documents": ["Beijing", "Paris"]}
    alive_worker(settings, state="loading")
    with client(settings) as c:
        for _ in range(2):
            r = c.post("/v1/rerank", json=body)
            assert r.status_code == 504, r.text
            assert detail(r) == "no worker scored the request within 1 s (RERANKQ_RERANK_TIMEOUT); 1 worker loading its engine"
        r = c.post("/v1/rerank", json=body)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1"
        assert "interactive queue is full (2 requests waiting for a worker" in detail(r)
        assert c.get("/healthz").json() == {"status": "ok"}
        jobs = c.get("/v1/jobs", params={"interactive": "true"}).json()
        assert [j["state"] for j in jobs] == ["cancelled", "cancelled"]
        assert c.get("/v1/jobs").json() == [], "interactive jobs are not listed by default"


def test_interactive_chunks_are_taken_before_batch_chunks(settings, tmp_path):
    """Kombu's Redis priorities on the model's queue (rerankq/routing.py): a batch job's chunks wait in
    "gpu.<model>\\x06\\x169", an interactive chunk in "gpu.<model>", and a consumer (as a worker does
    between chunks) gets the interactive one first."""
    from producer.interactive import check_rerank, submit_rerank
    from producer.queueing import broker_app, queue_depths
    from producer.submission import submit_manifest
    from rerankq.broker import priority_lists
    from rerankq.routing import model_queue

    manifest = write_manifest(tmp_path / "m.parquet", rows(n_queries=6, docs_per_query=5, seed=1))
    batch = submit_manifest(str(manifest), chunk_size=5, settings=settings)
    request = check_rerank("q", ["a", "b"], settings=settings)
    interactive = submit_rerank(request, settings=settings)
    r = redis_client(settings.broker)
    queue = model_queue(settings.queue, settings.model)
    assert queue.startswith("gpu.") and queue.endswith(f"-{hashlib.sha256(settings.model.encode()).hexdigest()[:8]}")
    lists = priority_lists(queue)
    assert lists == {"interactive": queue, "batch": f"{queue}\x06\x169"}
    assert r.llen(lists["batch"]) == 6 and r.llen(lists["interactive"]) == 1
    assert queue_depths(settings) == {"interactive": 1, "batch": 6}

    taken = []
    with broker_app(settings).connection_for_read() as conn:
        channel = conn.default_channel
        for _ in range(3):
            message = channel.basic_get(queue, no_ack=True)
            taken.append(json.loads(message.body)[0][0]["job_id"])
    assert taken == [interactive, batch, batch]


# --- rerank shape (the worker part is in test_service_live.py) ---------------------------------------


def test_openapi_documents_the_endpoints(settings):
    with client(settings) as c:
        spec = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    paths = spec["paths"]
    for path in ("/v1/rerank", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/export"):
        assert path in paths, path
    props = spec["components"]["schemas"]["RerankBody"]["properties"]
    assert {"query", "documents", "model", "top_n", "return_documents", "instruction", "max_tokens_per_doc"} <= set(props)


# --- security -------------------------------------------------------------------------------------


def test_api_key_guards_everything_but_healthz(settings):
    """RERANKQ_API_KEY: one admin key, as before tenants (tests/test_tenants.py has the per-tenant keys)."""
    with client(settings, api_key=KEY) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        for method, path in [("get", "/v1/jobs"), ("get", "/metrics"), ("post", "/v1/rerank"), ("get", "/openapi.json"), ("get", "/docs"),
                             ("get", "/v1/jobs/x/export"), ("post", "/v1/jobs/x/cancel")]:  # fmt: skip
            r = getattr(c, method)(path)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            r = getattr(c, method)(path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401 and "wrong API key" in detail(r)
            assert KEY not in r.text
        ok = c.get("/v1/jobs", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json() == []
        for page in ("/", "/workers", "/nights", "/try", "/jobs/x"):
            r = c.get(page, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/login", page
        assert c.get("/v1/workers/summary").status_code == 401
        assert c.post("/login", data={"key": "nope"}).status_code == 401
        c.post("/login", data={"key": KEY}, follow_redirects=False)  # sets the HttpOnly cookie
        assert c.get("/").status_code == 200
        assert c.get("/v1/jobs").status_code == 200
        assert KEY not in c.get("/").text + c.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).text + c.get("/openapi.json").text


# `producer serve` beyond loopback, keys and tenants, sessions, CSRF and manifest roots: tests/test_tenants.py


# --- jobs API ---------------------------------------------------------------------------------------


def test_jobs_api_mirrors_the_cli(settings, tmp_path):
    from producer.job_control import ledger
    from rerankq.store.records import ScoreRow

    bad = tmp_path / "bad.parquet"
    columns = rows(n_queries=2, docs_per_query=3, seed=3)
    columns["document"][4] = ""
    write_manifest(bad, columns)
    manifest = write_manifest(tmp_path / "ok.parquet", rows(n_queries=3, docs_per_query=4, seed=2))
    with client(settings) as c:
        r = c.post("/v1/jobs", json={"manifest": str(bad)})
        assert r.status_code == 400
        assert detail(r) == f"manifest {bad} rejected, nothing was submitted: 1 problem(s)\n  {bad} row 4 field 'document': is an empty string"
        r = c.post("/v1/jobs", json={"manifest": str(tmp_path / "missing.parquet")})
        assert r.status_code == 400 and "missing.parquet" in detail(r)
        r = c.post("/v1/jobs", json={"manifest": str(manifest), "chunk_size": 0})
        assert r.status_code == 400 and detail(r) == "field 'chunk_size': Input should be greater than or equal to 1"
        assert c.get("/v1/jobs/nope").status_code == 404
        assert detail(c.get("/v1/jobs/nope")) == "no job 'nope' in the ledger (see `producer list`)"
        assert c.get("/v1/jobs/nope/export").status_code == 404

        r = c.post("/v1/jobs", json={"manifest": str(manifest), "name": "nightly-🌙", "chunk_size": 4})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["name"] == "nightly-🌙" and job["state"] == "queued" and job["pairs_total"] == 12
        assert job["chunks_total"] == 3
        assert [j["job_id"] for j in c.get("/v1/jobs").json()] == [job["job_id"]]

        # Score it as a worker would (the worker's own ledger calls), then export over HTTP.
        store = ledger(settings)
        messages = store.resumable(job["job_id"])
        for m in messages:
            store.begin_chunk(job["job_id"], m.chunk_id, "test:1", "tiny")
            from worker.chunk_pairs import load_pairs

            keyed = load_pairs(m.spec)
            store.finish_chunk(job["job_id"], m.chunk_id, [ScoreRow(k.query_id, k.doc_id, len(k.pair.document) / 1e4, None) for k in keyed])
        status = c.get(f"/v1/jobs/{job['job_id']}").json()
        assert status["state"] == "completed" and status["pairs_scored"] == 12
        r = c.get(f"/v1/jobs/{job['job_id']}/export")
        assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
        table = pq.read_table(io.BytesIO(r.content)).to_pylist()
        assert len(table) == 12 and table[0]["rank"] == 1
        ranked = c.get(f"/v1/jobs/{job['job_id']}/queries/q0001").json()
        assert [x["rank"] for x in ranked] == [1, 2, 3, 4] and all(x["query_id"] == "q0001" for x in ranked)
        assert ranked[0]["score"] >= ranked[-1]["score"]
        assert c.post(f"/v1/jobs/{job['job_id']}/cancel").json() == {"job_id": job["job_id"], "state": "completed"}

        other = c.post("/v1/jobs", json={"manifest": str(manifest)}).json()
        assert c.post(f"/v1/jobs/{other['job_id']}/cancel").json()["state"] == "cancelled"


def test_broker_down_is_503_with_the_cli_message(settings):
    port = free_port()
    alive_worker(settings)  # else the request is refused before the broker is tried (no worker alive: 503)
    with client(settings, broker_url=f"redis://:{KEY}@127.0.0.1:{port}/0", connect_timeout=1.0) as c:
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert r.status_code == 503, r.text
        assert f"cannot reach the broker redis://:**@127.0.0.1:{port}/0" in detail(r)
        assert KEY not in r.text
        text = c.get("/metrics").text
        assert 'rerankq_scrape_errors_total{source="broker"}' in text and "rerankq_jobs{" in text


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics(settings, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from producer.submission import submit_manifest

    manifest = write_manifest(tmp_path / "m.parquet", rows(n_queries=4, docs_per_query=3, seed=5))
    submit_manifest(str(manifest), chunk_size=3, settings=settings)
    with client(settings) as c:
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    samples = lambda name: {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}  # noqa: E731
    assert samples("rerankq_jobs")[(("state", "queued"),)] == 1
    assert samples("rerankq_jobs")[(("state", "running"),)] == 0
    assert families["rerankq_pairs_scored"].type == "counter"
    model = ("model", settings.model)
    assert samples("rerankq_queue_depth")[(model, ("priority", "batch"), ("queue", "gpu"))] == 4
    assert samples("rerankq_queue_depth")[(model, ("priority", "interactive"), ("queue", "gpu"))] == 0
    assert samples("rerankq_workers_alive") == {(model,): 0}
    assert all(name.startswith("rerankq_") for name in families)


def test_worker_metrics_module(tmp_path):
    """worker/metrics.py served on a port of its own, as a worker serves it (the live test scrapes a worker)."""
    code = (
        "from worker import metrics as m\n"
        "m.observe_chunk(100, 5000, 0.5)\n"
        "print(m.start(0), flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    env = {**os.environ, "RERANKQ_MODEL": "/models/tiny/"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        port = int(proc.stdout.readline())
        import requests

        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.kill()
        proc.wait()
    model = 'model="/models/tiny"'  # every metric names the worker's model (trailing slash dropped)
    assert f"rerankq_worker_pairs_scored_total{{{model}}} 100.0" in text
    assert f"rerankq_worker_tokens_scored_total{{{model}}} 5000.0" in text
    assert f'rerankq_worker_chunk_duration_seconds_bucket{{le="0.5",{model}}} 1.0' in text
    assert f"rerankq_worker_engine_busy_ratio{{{model}}}" in text
    assert f'rerankq_worker_engine_memory_bytes{{device="cpu",{model}}}' in text


def test_worker_metrics_port_choice():
    from worker.metrics import _Busy, metrics_port

    assert metrics_port(9100, "2") == 9102
    assert metrics_port(9100, "1,3") == 9101
    assert metrics_port(9100, None) == 9100
    assert metrics_port(9100, "GPU-5f3a") == 9100
    assert metrics_port(0, "3") == 0
    busy = _Busy()
    now = time.monotonic()
    busy._started = now - 100
    busy.add(10, now - 5)
    busy.add(10, now - 10)  # overlaps the first by 5 s
    assert busy.fraction(now) == pytest.approx(15 / 60)


def test_cohere_sdk_sends_the_key_as_a_bearer_token(settings):
    """The SDK's own api_key is the service's RERANKQ_API_KEY (no worker here: an accepted request is 503)."""
    import cohere

    with client(settings, api_key=KEY) as c:
        wrong = cohere.ClientV2(api_key="wrong", base_url="http://testserver", httpx_client=c)
        with pytest.raises(cohere.core.ApiError) as err:
            wrong.rerank(model="m", query="q", documents=["a"], request_options={"max_retries": 0})
        assert err.value.status_code == 401
        right = cohere.ClientV2(api_key=KEY, base_url="http://testserver", httpx_client=c)
        with pytest.raises(cohere.core.ApiError) as err:
            right.rerank(model="m", query="q", documents=["a"], request_options={"max_retries": 0})
        assert err.value.status_code == 503, err.value.body
        assert "no worker alive" in str(err.value.body)
