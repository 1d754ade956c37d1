"""The OpenAI Files and Batches API of `producer serve`, driven by the `openai` SDK, against a real worker
(`celery -A worker worker -Q gpu`, transformers engine, tiny model), Redis and PostgreSQL: files in
`vllm run-batch` format with multilingual text and bad lines in the middle, the output compared with
/v1/rerank's answers to the same requests, the CLI (`producer submit batch.jsonl`, `producer export
--format jsonl`), the service restarted and the worker killed mid-batch, and the batch's signed webhook."""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from tests.conftest import base_env, migrate, producer
from tests.polling import wait_for
from tests.services import free_port, wait_port
from tests.webhook_receiver import Receiver
from tests.workers import REPO, WorkerProcess

pytestmark = pytest.mark.slow
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
QUERIES = [
    ("What is the capital of China?", ["The capital of China is Beijing.", "北京是中华人民共和国的首都。", "عاصمة الصين هي بكين.", "Gravity attracts bodies."]),
    ("Wie hoch ist die Zugspitze?", ["Die Zugspitze ist 2962 m hoch.", "Le Mont Blanc culmine à 4806 m.", "富士山の標高は3776メートルです。"]),
    ("¿Dónde está Machu Picchu? 🏔️", ["Machu Picchu está en Perú 🇵🇪.", "Москва — столица России.", "Η Ακρόπολη βρίσκεται στην Αθήνα."]),
]




def rerank_line(custom_id: str, query: str, docs: list, **extra: object) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/rerank", "body": {"query": query, "documents": docs, **extra}}


def write_jsonl(path: Path, lines: list) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n")
    return path


class Stack:
    def __init__(self, tiny_model: Path, db: str, broker: str, tmp: Path):
        self.tmp = tmp
        self.receiver = Receiver(SECRET).start()
        self.env = base_env(
            tiny_model, db, broker, RERANKQ_ENGINE="hf", RERANKQ_MAX_LENGTH=512, RERANKQ_HEARTBEAT_INTERVAL=1,
            RERANKQ_WORKER_DEAD_AFTER=6, RERANKQ_FILES_DIR=str(tmp / "files"), RERANKQ_WEBHOOK_SECRET=SECRET,
            RERANKQ_WEBHOOK_URL=self.receiver.url, RERANKQ_WEBHOOK_POLL_INTERVAL=0.5, RERANKQ_WEBHOOK_ALLOW="127.0.0.1",
        )  # fmt: skip
        self.workers = [WorkerProcess(self.env, tmp / "worker-0.log").start()]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: subprocess.Popen | None = None
        self.start_service()
        self.workers[0].wait_ready()
        self.client = OpenAI(api_key="unused", base_url=f"{self.url}/v1")

    def start_service(self) -> None:
        exe = str(Path(sys.executable).with_name("producer"))
        log = open(self.tmp / "service.log", "ab")  # noqa: SIM115
        self.service = subprocess.Popen(
            [exe, "serve", "--port", str(self.port)], env={**os.environ, **self.env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        wait_port(self.port, 60)

    def stop_service(self) -> None:
        self.service.terminate()
        self.service.wait(30)

    def rerank(self, body: dict) -> dict:
        r = requests.post(f"{self.url}/v1/rerank", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    def finished(self, batch_id: str, timeout: float = 240):  # noqa: ANN201
        terminal = ("completed", "failed", "cancelled", "expired")
        return wait_for(lambda: (b := self.client.batches.retrieve(batch_id)).status in terminal and b, timeout, f"batch {batch_id}")

    def close(self) -> None:
        self.stop_service()
        for w in self.workers:
            if w.proc.poll() is None:
                w.terminate(60)
        self.receiver.stop()


@pytest.fixture(scope="module")
def stack(tiny_model, pg_url, redis_url, tmp_path_factory):
    migrate(pg_url)
    s = Stack(tiny_model, pg_url, redis_url, tmp_path_factory.mktemp("batches"))
    yield s
    s.close()


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_openai_sdk_batch_equals_v1_rerank(stack):
    lines = [
        rerank_line("req-0", *QUERIES[0]),
        rerank_line("req-1", QUERIES[1][0], QUERIES[1][1], top_n=2),
        rerank_line("bad-empty-doc", "a query", ["fine", ""]),  # a bad line in the middle
        "{this is not json",
        rerank_line("req-2", QUERIES[2][0], [{"text": d} for d in QUERIES[2][1]], return_documents=False),
        {"custom_id": "bad-url", "method": "POST", "url": "/v1/embeddings", "body": {}},
        rerank_line("req-3", "Qu'est-ce qu'un reranker ?", ["Un modèle qui ordonne des passages.", "Une banane."], instruction="Rank passages"),
        rerank_line("req-4", *QUERIES[0], use_activation=False),  # raw log-odds
    ]
    path = write_jsonl(stack.tmp / "in.jsonl", lines)
    client = stack.client
    uploaded = client.files.create(file=open(path, "rb"), purpose="batch")
    assert uploaded.bytes == path.stat().st_size and uploaded.purpose == "batch"
    assert client.files.retrieve(uploaded.id).filename == "in.jsonl"
    assert client.files.content(uploaded.id).read() == path.read_bytes()  # streamed back byte for byte

    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/rerank", completion_window="24h", metadata={"night": "2026-12-01"}
    )
    assert batch.status in ("in_progress", "finalizing", "completed") and batch.metadata == {"night": "2026-12-01"}
    done = stack.finished(batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 5, 3)
    assert done.completed_at and done.in_progress_at and done.created_at <= done.completed_at
    assert done.id in {b.id for b in client.batches.list()}

    output = jsonl(client.files.content(done.output_file_id).text)
    errors = {e["custom_id"]: e for e in jsonl(client.files.content(done.error_file_id).text)}
    assert [o["custom_id"] for o in output] == ["req-0", "req-1", "req-2", "req-3", "req-4"]
    for o, source in zip(output, [lines[0], lines[1], lines[4], lines[6], lines[7]]):
        assert o["error"] is None and o["response"]["status_code"] == 200 and o["response"]["request_id"]
        answer = stack.rerank(source["body"])  # /v1/rerank, the same request
        got = o["response"]["body"]
        assert got["results"] == answer["results"], source["custom_id"]
        assert (got["model"], got["usage"]) == (answer["model"], answer["usage"])
    assert len(output[1]["response"]["body"]["results"]) == 2  # top_n
    assert output[2]["response"]["body"]["results"][0]["document"]["text"]  # /v1/rerank keeps it (vLLM's RerankResult requires it)
    raw, probs = output[4]["response"]["body"]["results"], output[0]["response"]["body"]["results"]
    assert [r["index"] for r in raw] == [r["index"] for r in probs], "the same order: ranks follow the log-odds"
    for x, y in zip(raw, probs):
        assert y["relevance_score"] == pytest.approx(1 / (1 + math.exp(-x["relevance_score"])), abs=1e-12) != x["relevance_score"]

    bad = errors["bad-empty-doc"]
    assert bad["response"]["status_code"] == 400 and bad["error"]["error"]["param"] == "body.documents[1]"
    assert bad["error"]["error"]["message"].startswith("line 3 (custom_id 'bad-empty-doc') field 'body.documents[1]': ")
    assert errors[None]["error"]["error"]["message"].startswith("line 4: not a JSON object")
    assert errors["bad-url"]["error"]["error"]["param"] == "url"

    event = wait_for(lambda: [p for _, p in stack.receiver.received if p["data"]["id"] == batch.id], 60, "the batch's webhook")
    assert [e["type"] for e in event] == ["batch.completed"] and stack.receiver.rejected == []


def test_score_endpoint_lines(stack):
    docs = ["Paris est la capitale de la France.", "Berlin ist die Hauptstadt Deutschlands.", "東京は日本の首都です。"]
    lines = [
        {"custom_id": "s-0", "method": "POST", "url": "/v1/score", "body": {"text_1": "capital of France?", "text_2": docs}},
        {"custom_id": "s-1", "method": "POST", "url": "/v1/score", "body": {"text_1": ["a", "b"], "text_2": ["x", "y", "z"]}},
        {"custom_id": "s-2", "method": "POST", "url": "/v1/score", "body": {"text_1": "capital of France?", "text_2": docs, "use_activation": False}},
    ]
    path = write_jsonl(stack.tmp / "score.jsonl", lines)
    f = stack.client.files.create(file=open(path, "rb"), purpose="batch")
    done = stack.finished(stack.client.batches.create(input_file_id=f.id, endpoint="/v1/score", completion_window="24h").id)
    out, raw = jsonl(stack.client.files.content(done.output_file_id).text)
    [err] = jsonl(stack.client.files.content(done.error_file_id).text)
    assert err["custom_id"] == "s-1" and err["error"]["error"]["param"] == "body.text_1"
    answer = stack.rerank({"query": "capital of France?", "documents": docs})
    by_index = {r["index"]: r["relevance_score"] for r in answer["results"]}
    assert [d["index"] for d in out["response"]["body"]["data"]] == [0, 1, 2]
    assert [d["score"] for d in out["response"]["body"]["data"]] == [by_index[i] for i in range(3)]
    logits = {r["index"]: r["relevance_score"] for r in stack.rerank({"query": "capital of France?", "documents": docs, "use_activation": False})["results"]}
    assert [d["score"] for d in raw["response"]["body"]["data"]] == [logits[i] for i in range(3)]


def test_cli_submit_and_export_jsonl_reuse_the_cache(stack):
    """`vllm run-batch -i in.jsonl -o out.jsonl` users switch without changing their files."""
    lines = [rerank_line(f"cli-{i}", q, docs) for i, (q, docs) in enumerate(QUERIES)]
    lines.insert(1, rerank_line("cli-bad", "", ["x"]))
    path = write_jsonl(stack.tmp / "cli.jsonl", lines)
    fresh = producer("submit", str(path), "--wait", "--no-reuse", env=stack.env, check=True, timeout=300)
    assert "1 of 4 lines refused" in fresh.stderr
    first = json.loads(producer("status", fresh.stdout.strip().splitlines()[-1], "--json", env=stack.env, check=True).stdout)
    assert (first["pairs_reused"], first["pairs_total"], first["state"]) == (0, 10, "completed")
    out = producer("submit", str(path), "--wait", env=stack.env, check=True, timeout=300)
    job = out.stdout.strip().splitlines()[-1]
    status = json.loads(producer("status", job, "--json", env=stack.env, check=True).stdout)
    assert status["pairs_reused"] == status["pairs_total"] == 10  # the same requests again: all from the score cache
    result = producer("export", job, "--format", "jsonl", "--out", str(stack.tmp / "out.jsonl"), env=stack.env, check=True)
    assert "4 lines written" in result.stderr
    got = jsonl((stack.tmp / "out.jsonl").read_text(encoding="utf-8"))
    order = ["cli-0", "cli-bad", "cli-1", "cli-2"]  # the input's order, the failed line in place (run-batch's file)
    assert [g["custom_id"] for g in got] == order
    for g, line in zip(got, lines):
        if g["custom_id"] != "cli-bad":
            assert g["response"]["body"]["results"] == stack.rerank(line["body"])["results"]
    assert got[1]["error"]["error"]["param"] == "body.query" and got[1]["response"]["status_code"] == 400
    to_stdout = producer("export", job[:8], "--format", "jsonl", "--out", "-", env=stack.env, check=True)
    assert [json.loads(x)["custom_id"] for x in to_stdout.stdout.splitlines()] == order


def test_all_lines_bad_fails_the_batch_and_files_can_be_deleted(stack):
    path = write_jsonl(stack.tmp / "allbad.jsonl", ["nope", rerank_line("x", "q", [])])
    f = stack.client.files.create(file=open(path, "rb"), purpose="batch")
    batch = stack.client.batches.create(input_file_id=f.id, endpoint="/v1/rerank", completion_window="24h")
    done = stack.finished(batch.id, 30)
    assert done.status == "failed" and done.output_file_id is None
    assert [e.line for e in done.errors.data] == [1, 2] and done.errors.data[1].param == "body.documents"
    assert stack.client.files.delete(f.id).deleted
    r = requests.get(f"{stack.url}/v1/files/{f.id}", timeout=10)
    assert r.status_code == 404 and f.id in r.json()["detail"]
    wrong = requests.post(f"{stack.url}/v1/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/rerank"}, timeout=10)
    assert wrong.status_code == 404 and "input_file_id" in wrong.json()["detail"]


def test_cancel_and_expiry_of_batches_no_worker_runs(stack, pg_url):
    """Lines for a model no worker runs wait: cancelled, the batch says so (every line in the error
    file, batch.cancelled); past its window, it expires (batch.expired)."""
    from sqlalchemy import create_engine, text

    lines = [rerank_line(f"w-{i}", f"query {i}", ["a", "b"], model="nobody/runs-this") for i in range(3)]
    path = write_jsonl(stack.tmp / "waiting.jsonl", lines)
    f = stack.client.files.create(file=open(path, "rb"), purpose="batch")
    first = stack.client.batches.create(input_file_id=f.id, endpoint="/v1/rerank", completion_window="24h")
    second = stack.client.batches.create(input_file_id=f.id, endpoint="/v1/rerank", completion_window="1h")
    assert stack.client.batches.retrieve(first.id).status == "in_progress" and first.model == "nobody/runs-this"
    in_use = requests.delete(f"{stack.url}/v1/files/{f.id}", timeout=10)
    assert in_use.status_code == 409 and "cancel it first" in in_use.json()["detail"]
    cancelled = stack.client.batches.cancel(first.id)
    assert cancelled.status in ("cancelling", "cancelled")
    done = stack.finished(first.id, 30)
    assert done.status == "cancelled" and done.cancelled_at and done.output_file_id is None
    errors = jsonl(stack.client.files.content(done.error_file_id).text)
    assert [e["custom_id"] for e in errors] == ["w-0", "w-1", "w-2"]
    assert all("not scored, the batch cancelled" in e["error"]["error"]["message"] for e in errors)

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE batches SET expires_at = now() - interval '1 minute' WHERE id = :b"), {"b": second.id})
    engine.dispose()
    expired = stack.finished(second.id, 30)
    assert expired.status == "expired" and expired.expired_at
    assert "its completion window ended" in jsonl(stack.client.files.content(expired.error_file_id).text)[0]["error"]["error"]["message"]
    for batch, kind in ((first, "batch.cancelled"), (second, "batch.expired")):
        got = wait_for(lambda: [p["type"] for _, p in stack.receiver.received if p["data"]["id"] == batch.id], 60, kind)
        assert got == [kind]


def test_service_restarted_and_worker_killed_mid_batch(stack):
    """The batch lives in the ledger: a new service process answers for it, and the chunks of a worker
    killed mid-batch are scored by another; one batch.completed webhook."""
    second = WorkerProcess(stack.env, stack.tmp / "worker-1.log").start().wait_ready()
    stack.workers.append(second)
    lines = [rerank_line(f"big-{i}", f"query {i} über 🚀", [f"document {i}.{j} — текст {j}" for j in range(40)]) for i in range(60)]
    path = write_jsonl(stack.tmp / "big.jsonl", lines)
    first = stack.workers[0]
    # Both workers paused (they hold nothing) while the batch is queued and the service restarts: on a loaded
    # machine the two had scored every chunk before the first was seen holding one. Then the first alone goes
    # on until it is seen holding a chunk and is killed; the second scores the rest.
    for w in (first, second):
        os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        out = producer("submit", str(path), "--chunk-size", "80", env=stack.env, check=True)
        job = out.stdout.strip().splitlines()[-1]
        batch_id = f"batch_{job}"
        stack.stop_service()
        stack.start_service()
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    try:
        wait_for(lambda: f":{first.proc.pid}:" in json.dumps(requests.get(f"{stack.url}/v1/jobs/{job}", timeout=10).json()["holders"]),
                 120, "the first worker holding a chunk")  # fmt: skip
        first.kill9()
    finally:
        os.kill(second.proc.pid, signal.SIGCONT)
    done = stack.finished(batch_id, 300)
    assert done.status == "completed" and done.request_counts.completed == 60
    got = jsonl(stack.client.files.content(done.output_file_id).text)
    assert [g["custom_id"] for g in got] == [f"big-{i}" for i in range(60)]
    assert all(len(g["response"]["body"]["results"]) == 40 for g in got)
    events = wait_for(lambda: [p for _, p in stack.receiver.received if p["data"]["id"] == batch_id], 60, "webhook")
    time.sleep(2)
    assert len([p for _, p in stack.receiver.received if p["data"]["id"] == batch_id]) == len(events) == 1


def test_prune_removes_old_batch_files(stack):
    """Retention: `producer prune` deletes batch files as old as the jobs it deletes, from the ledger and the disk."""
    files_dir = stack.tmp / "files"
    kept = stack.client.files.create(file=open(write_jsonl(stack.tmp / "p.jsonl", [rerank_line("p", "q", ["d"])]), "rb"), purpose="batch")
    assert (files_dir / f"{kept.id}.jsonl").exists()
    time.sleep(1.1)
    dry = producer("prune", "--jobs-older-than", "1s", "--dry-run", env=stack.env, check=True).stdout
    assert "would delete" in dry and "batch file(s)" in dry and list(files_dir.glob("*.jsonl"))
    out = producer("prune", "--jobs-older-than", "1s", env=stack.env, check=True).stdout
    assert "batch file(s)" in out
    assert list(files_dir.glob("*.jsonl")) == [] and stack.client.files.list().data == []
