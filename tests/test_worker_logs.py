"""A real worker (`celery -A worker worker -Q gpu`, tiny model, vLLM CPU build) scoring an `s3://`
manifest job and a `producer rerank` that starts while the worker still loads its engine: every line
the worker writes is one JSON object, vLLM's and Celery's included; vLLM's chat-template warning (which
does not apply: rerankq builds the token ids itself) is absent, its set_num_threads notice appears once,
and no credential appears anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import base_env, migrate, producer
from tests.corpus import rows
from tests.s3 import MotoS3
from tests.services import REDIS_URL, redis_client
from tests.workers import WorkerProcess, is_ready_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    server = MotoS3().start()
    yield server
    server.stop()


def test_worker_log_is_json_lines_and_rerank_says_what_it_waits_for(tiny_model, s3: MotoS3, tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(db)
    broker = f"{REDIS_URL}/10"
    redis_client(broker).flushdb()
    env = base_env(tiny_model, db, broker, RERANKQ_MAX_LENGTH=512, **s3.env())
    columns = rows(n_queries=4, docs_per_query=(3, 6), seed=5, long_every=10**9)
    s3.put_manifest("corpus", "nightly", columns, files=2)

    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        # Started at once: it waits while the worker imports, registers and loads its engine, and says so.
        rerank = subprocess.Popen(
            [str(Path(sys.executable).with_name("producer")), "rerank", "-q", "what is a reranker?", "-d", "it orders passages",
             "-d", "bananas", "--json", "--timeout", "600"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, err = rerank.communicate(timeout=700)
        assert rerank.returncode == 0, err + worker.log()[-3000:]
        assert [r["document"] for r in json.loads(out)].count("bananas") == 1
        notes = err.splitlines()
        assert "queued, 1 worker loading its engine" in notes, notes
        worker.wait_ready()

        job_id = producer("submit", "s3://corpus/nightly/", "--chunk-size", "8", env=env, check=True).stdout.split()[-1]
        waited = producer("wait", job_id[:12], "--timeout", "600", env=env, timeout=700)
        assert waited.returncode == 0, waited.stderr + worker.log()[-3000:]
        producer("export", job_id[:12], "--out", str(tmp_path / "scores.parquet"), env=env, check=True)
        assert pq.read_table(tmp_path / "scores.parquet").num_rows == len(columns["query_id"])
    finally:
        assert worker.terminate() == 0

    lines = worker.log().splitlines()
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a worker log line is not JSON: {line[:300]}")
    assert all(isinstance(e, dict) and "event" in e and "level" in e for e in events)
    text = "\n".join(str(e["event"]) for e in events)
    loggers = {e.get("logger", "") for e in events}
    assert any(name.startswith("vllm") for name in loggers), "vLLM's own records come through as JSON"
    assert any(name.startswith("celery") for name in loggers), "and Celery's"
    assert "celery_worker_starting" in text and any(is_ready_line(line) for line in lines)
    assert "without a --chat-template" not in text
    assert text.count("doesn't allow to use `torch.set_num_threads`") == 1
    assert s3.admin[1] not in worker.log(), "the AWS secret key was logged"
    assert sum(e["event"] == "chunk_done" for e in events) >= 2
