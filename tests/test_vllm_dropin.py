"""rerankq as a drop-in for vLLM's scoring API and `vllm run-batch`, judged by the peers' own code: every
request form vLLM's request models accept (vLLM's ScoreRequest / RerankRequest say it accepts it first),
vLLM's run-batch test inputs fed verbatim (tests/data/VLLM_RUN_BATCH.md) through `producer submit` +
`producer export --format jsonl` and through the Batches API, every output line and response validated
with vLLM's own pydantic classes (BatchRequestOutput, RerankResponse, ScoreResponse, ErrorResponse) and
the openai SDK's types, truncation as vLLM applies it, and the Files API paged by the SDK's auto-paging.
The live part runs one worker (transformers engine, tiny model served as vLLM's test model's name),
Redis, PostgreSQL and `producer serve`, shared by the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openai import BadRequestError, NotFoundError, OpenAI
from openai.types import Batch, FileObject
from pydantic import TypeAdapter

from producer.batch_lines import BadLine, GoodLine, LineReader
from rerankq.settings import Settings
from tests.conftest import base_env, migrate, producer
from tests.polling import wait_for
from tests.services import free_port, wait_port
from tests.workers import REPO, WorkerProcess

DATA = Path(__file__).parent / "data"
VLLM_MODEL = "BAAI/bge-reranker-v2-m3"  # the model vLLM's run-batch tests name: our worker serves under it
Q = "What is the capital of France?"
DOCS = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]


def vllm():  # noqa: ANN201 - vLLM's protocol classes; importing them starts no engine
    from vllm.entrypoints.launchers.run_batch import BatchRequestOutput
    from vllm.entrypoints.pooling.scoring.protocol import RerankRequest, RerankResponse, ScoreRequest, ScoreResponse
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse

    return BatchRequestOutput, RerankRequest, RerankResponse, ScoreRequest, ScoreResponse, ErrorResponse


def text(value: str) -> dict:
    return {"content": [{"type": "text", "text": value}]}


# Every form vLLM's scoring request models accept, with the pairs (query, document) vLLM scores for it.
SCORE_FORMS = [
    ({"text_1": Q, "text_2": DOCS[0]}, [(Q, DOCS[0])]),
    ({"text_1": Q, "text_2": DOCS}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"text_1": [Q, "q2"], "text_2": DOCS}, [(Q, DOCS[0]), ("q2", DOCS[1])]),
    ({"text_1": [Q], "text_2": DOCS}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"queries": Q, "documents": DOCS}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"queries": [Q, "q2"], "documents": DOCS}, [(Q, DOCS[0]), ("q2", DOCS[1])]),
    ({"queries": Q, "items": DOCS}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"data_1": Q, "data_2": DOCS}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"data_1": text(Q), "data_2": [text(DOCS[0]), DOCS[1]]}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"queries": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, "documents": DOCS[0]}, [("a\nb", DOCS[0])]),
]  # fmt: skip
RERANK_FORMS = [
    ({"query": Q, "documents": DOCS}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"query": Q, "documents": DOCS[1]}, [(Q, DOCS[1])]),  # a single string
    ({"query": text(Q), "documents": [text(DOCS[0]), DOCS[1]]}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"query": Q, "documents": DOCS, "top_n": 1, "use_activation": None, "max_tokens_per_doc": 0}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"query": Q, "documents": DOCS, "truncate_prompt_tokens": -1, "truncation_side": "left"}, [(Q, DOCS[0]), (Q, DOCS[1])]),
    ({"query": Q, "documents": DOCS, "use_activation": False, "priority": 0, "user": "u", "request_id": "r"}, [(Q, DOCS[0]), (Q, DOCS[1])]),
]  # fmt: skip
SHARED = [  # the mixin's fields, on either kind: (extra body, the instruction rerankq scores with)
    ({}, None),
    ({"instruction": "Find the capital"}, "Find the capital"),
    ({"chat_template_kwargs": {"instruction": "kw wins"}, "instruction": "top"}, "kw wins"),  # vLLM: the dict's key wins
    ({"max_tokens_per_query": 0, "truncate_prompt_tokens": None, "use_activation": True}, None),
]


def read_line(url: str, body: dict, settings: Settings | None = None) -> GoodLine | BadLine:
    raw = json.dumps({"custom_id": "c", "method": "POST", "url": url, "body": body}).encode()
    return LineReader(settings or Settings(), None, workers=[]).line(0, raw)


@pytest.mark.parametrize("extra,instruction", SHARED)
@pytest.mark.parametrize("url", ["/score", "/v1/score", "/openai/v1/score"])
@pytest.mark.parametrize("body,pairs", SCORE_FORMS)
def test_every_score_form_vllm_accepts(body, pairs, url, extra, instruction):
    _, _, _, ScoreRequest, _, _ = vllm()
    full = {**body, **extra}
    TypeAdapter(ScoreRequest).validate_python(full)  # vLLM accepts it ...
    good = read_line(url, full)  # ... and so does rerankq, with the pairs vLLM scores
    assert isinstance(good, GoodLine), good
    assert [(p.query, p.document) for p in good.pairs] == pairs
    assert {p.instruction for p in good.pairs} == {instruction}


@pytest.mark.parametrize("extra,instruction", SHARED)
@pytest.mark.parametrize("url", ["/rerank", "/v1/rerank", "/v2/rerank"])
@pytest.mark.parametrize("body,pairs", RERANK_FORMS)
def test_every_rerank_form_vllm_accepts(body, pairs, url, extra, instruction):
    _, RerankRequest, _, _, _, _ = vllm()
    full = {**body, **extra}
    RerankRequest.model_validate(full)
    good = read_line(url, full)
    assert isinstance(good, GoodLine), good
    assert [(p.query, p.document) for p in good.pairs] == pairs
    assert {p.instruction for p in good.pairs} == {instruction}


@pytest.mark.parametrize(
    "url,body,param,words",
    [
        ("/v1/score", {"text_1": [Q, "q2", "q3"], "text_2": DOCS}, "body.text_1", "Input lengths must be either 1:1, 1:N or N:N"),
        ("/v1/score", {"text_1": [], "text_2": DOCS}, "body.text_1", "At least one text element must be given"),
        ("/v1/score", {"queries": Q, "documents": []}, "body.documents", "At least one text_pair element must be given"),
        ("/v1/score", {"query": Q, "documents": DOCS}, "body", "expected text_1 and text_2, queries and documents"),
        ("/v1/rerank", {"query": Q, "documents": DOCS, "max_tokens_per_doc": 512}, "body.max_tokens_per_doc", "must be less than max_model_len (512)"),
        ("/v1/rerank", {"query": Q, "documents": DOCS, "truncate_prompt_tokens": 513}, "body.truncate_prompt_tokens", "cannot be greater than max_model_len = 512"),
        ("/v1/rerank", {"query": Q, "documents": [{"content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, "body.documents", "image_url parts are not supported"),
        ("/v1/score", {"queries": {"content": [{"type": "video_url", "video_url": {"url": "x"}}]}, "documents": DOCS}, "body.queries", "video_url parts are not supported"),
    ],
)  # fmt: skip
def test_what_vllm_refuses_is_refused_with_its_words(url, body, param, words):
    bad = read_line(url, body, Settings(max_length=512))
    assert isinstance(bad, BadLine) and bad.param == param and words in bad.message and bad.status == 400, bad


# --- truncation, with the model's own tokenizer ----------------------------------------------------------
def test_max_tokens_per_doc_cuts_as_vllm_cuts(tiny_model):
    from transformers import AutoTokenizer
    from vllm.entrypoints.pooling.scoring.utils import truncate_text_to_tokens

    from producer.prompt_tokens import tokens_for

    hf = AutoTokenizer.from_pretrained(tiny_model)
    tokens = tokens_for(Settings(model=str(tiny_model), max_length=512))
    texts = ["The capital of France is Paris, a city of 2.1 million people.", "北京是中华人民共和国的首都。", "naïve café 🏔️ über"]
    for t in texts:
        for n in (1, 2, 3, 5, 8):
            assert tokens.truncate(t, n) == truncate_text_to_tokens(t, hf, n), (t, n)
    good = read_line("/v1/rerank", {"query": Q, "documents": texts, "max_tokens_per_doc": 3, "max_tokens_per_query": 2},
                     Settings(model=str(tiny_model), max_length=512))  # fmt: skip
    assert [p.document for p in good.pairs] == [truncate_text_to_tokens(t, hf, 3) for t in texts]
    assert {p.query for p in good.pairs} == {truncate_text_to_tokens(Q, hf, 2)}


def test_truncate_prompt_tokens_fits_the_prompt_by_cutting_the_document(tiny_model):
    """The prompt the workers build for the line fits N tokens; only the document's end (side right) or
    start (side left) is cut; the card's prefix, instruction, query and suffix are intact."""
    from rerankq.prompt import Pair, PromptBuilder

    settings = Settings(model=str(tiny_model), max_length=512)
    builder = PromptBuilder.from_model(tiny_model, 512)
    doc = " ".join(f"word{i}" for i in range(120))
    full = builder.build([Pair(Q, doc, None)])[0].token_ids
    for side in (None, "right", "left"):
        for n in (100, 150, len(full) - 1):
            good = read_line("/v1/rerank", {"query": Q, "documents": [doc], "truncate_prompt_tokens": n, "truncation_side": side}, settings)
            cut = good.pairs[0].document
            ids = builder.build([Pair(Q, cut, None)])[0].token_ids
            assert len(ids) <= n and len(ids) >= n - 3, (side, n, len(ids))  # as long as fits (a token may merge)
            assert ids[: len(builder.prefix_ids)] == builder.prefix_ids and ids[-len(builder.suffix_ids) :] == builder.suffix_ids
            assert (doc.endswith(cut) if side == "left" else doc.startswith(cut)) and len(cut) < len(doc)
            assert good.scoring.prompt_tokens() == len(ids)
    short = read_line("/v1/rerank", {"query": Q, "documents": [doc], "truncate_prompt_tokens": len(full)}, settings)
    assert short.pairs[0].document == doc  # fits already: unchanged
    none = read_line("/v1/rerank", {"query": Q * 10, "documents": [doc], "truncate_prompt_tokens": 20}, settings)
    assert isinstance(none, BadLine) and none.param == "body.truncate_prompt_tokens" and "no room for the document" in none.message


# --- live: a worker, the service, the CLI -----------------------------------------------------------------
class Stack:
    def __init__(self, tiny_model: Path, db: str, broker: str, tmp: Path):
        self.tmp = tmp
        self.env = base_env(
            tiny_model, db, broker, RERANKQ_ENGINE="hf", RERANKQ_MAX_LENGTH=512, RERANKQ_HEARTBEAT_INTERVAL=1,
            RERANKQ_WORKER_DEAD_AFTER=6, RERANKQ_FILES_DIR=str(tmp / "files"),
        )  # fmt: skip
        # The worker serves the tiny model (a local directory) under vLLM's test model's name and Qwen's;
        # the service and the CLI are not told: they find the name in the worker registry.
        worker_env = {**self.env, "RERANKQ_SERVED_MODEL_NAME": f"{VLLM_MODEL},Qwen/Qwen3-Reranker-0.6B"}
        self.worker = WorkerProcess(worker_env, tmp / "worker.log").start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(tmp / "service.log", "ab")  # noqa: SIM115
        exe = str(Path(sys.executable).with_name("producer"))
        self.service = subprocess.Popen(
            [exe, "serve", "--port", str(self.port)], env={**os.environ, **self.env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        wait_port(self.port, 60)
        self.worker.wait_ready()
        self.client = OpenAI(api_key="unused", base_url=f"{self.url}/v1")

    def close(self) -> None:
        self.service.terminate()
        self.service.wait(30)
        self.worker.terminate(60)


@pytest.fixture(scope="module")
def stack(tiny_model, pg_url, redis_url, tmp_path_factory):
    migrate(pg_url)
    s = Stack(tiny_model, pg_url, redis_url, tmp_path_factory.mktemp("dropin"))
    yield s
    s.close()


def judged(lines: list[str], inputs: list[dict]) -> list[dict]:
    """vLLM's test_score's checks, line for line: each validates as vLLM's BatchRequestOutput, no error,
    its body as vLLM's response of its url's kind."""
    BatchRequestOutput, _, RerankResponse, _, ScoreResponse, _ = vllm()
    assert len(lines) == len(inputs)
    out = []
    for line, sent in zip(lines, inputs):
        BatchRequestOutput.model_validate_json(line)
        got = json.loads(line)
        assert got["error"] is None and got["custom_id"] == sent["custom_id"] and got["response"]["status_code"] == 200
        kind = RerankResponse if sent["url"].endswith("/rerank") else ScoreResponse
        kind.model_validate(got["response"]["body"])
        assert got["response"]["body"]["model"] == VLLM_MODEL
        out.append(got)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vllm_run_batch_score.jsonl", "vllm_run_batch_rerank.jsonl"])
def test_vllm_run_batch_inputs_verbatim_through_the_cli(stack, name):
    path = DATA / name
    inputs = [json.loads(x) for x in path.read_text().splitlines()]
    job = producer("submit", str(path), "--wait", env=stack.env, check=True, timeout=300).stdout.strip().splitlines()[-1]
    out = stack.tmp / f"cli-{name}"
    producer("export", job, "--format", "jsonl", "--out", str(out), env=stack.env, check=True)
    judged(out.read_text().splitlines(), inputs)


@pytest.mark.slow
def test_vllm_run_batch_inputs_verbatim_through_the_batches_api_in_one_file(stack):
    """Both of vLLM's files as one: rerank and score lines mixed, each routed by its own url."""
    raw = (DATA / "vllm_run_batch_rerank.jsonl").read_text() + "\n" + (DATA / "vllm_run_batch_score.jsonl").read_text()
    inputs = [json.loads(x) for x in raw.splitlines()]
    path = stack.tmp / "mixed.jsonl"
    path.write_text(raw)
    f = stack.client.files.create(file=open(path, "rb"), purpose="batch")
    batch = stack.client.batches.create(input_file_id=f.id, endpoint="/v1/rerank", completion_window="24h")
    done = wait_for(lambda: (b := stack.client.batches.retrieve(batch.id)).status in ("completed", "failed") and b, 240, "batch")
    assert done.status == "completed" and done.error_file_id is None and done.request_counts.completed == 5
    Batch.model_validate(requests.get(f"{stack.url}/v1/batches/{batch.id}", timeout=30).json())  # the openai SDK's type
    got = judged(stack.client.files.content(done.output_file_id).text.splitlines(), inputs)
    rerank = [g["response"]["body"] for g in got[:3]]
    assert rerank[0]["results"] == rerank[1]["results"] == rerank[2]["results"]  # /rerank, /v1/rerank, /v2/rerank alike
    by_index = {r["index"]: r["relevance_score"] for r in rerank[0]["results"]}
    for g in got[3:]:
        assert [d["score"] for d in g["response"]["body"]["data"]] == [by_index[0], by_index[1]]  # scores = rerank's


@pytest.mark.slow
def test_http_routes_answer_vllms_responses(stack):
    _, _, RerankResponse, _, ScoreResponse, _ = vllm()
    post = lambda path, body: requests.post(stack.url + path, json=body, timeout=120)  # noqa: E731
    answers = {}
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        r = post(path, {"model": VLLM_MODEL, "query": Q, "documents": DOCS})
        assert r.status_code == 200, r.text
        answers[path] = RerankResponse.model_validate(r.json())
        assert answers[path].model == VLLM_MODEL and answers[path].usage.prompt_tokens > 0
    assert len({tuple((x.index, x.relevance_score) for x in a.results) for a in answers.values()}) == 1
    ranked = {x.index: x.relevance_score for x in answers["/v1/rerank"].results}
    for body, _ in SCORE_FORMS[:9]:
        for path in ("/score", "/v1/score"):
            r = post(path, {**body, "model": "Qwen/Qwen3-Reranker-0.6B"})
            assert r.status_code == 200, (body, r.text)
            ScoreResponse.model_validate(r.json())
            if body.get("text_1", body.get("queries", body.get("data_1"))) == Q and len(r.json()["data"]) == 2:
                assert [d["score"] for d in r.json()["data"]] == [ranked[0], ranked[1]]
    # return_documents false: vLLM's routes keep `document` (its RerankResult requires it); Cohere's /v2 drops it
    keep = post("/v1/rerank", {"query": Q, "documents": DOCS, "return_documents": False}).json()
    RerankResponse.model_validate(keep)
    assert all(x["document"]["text"] in DOCS for x in keep["results"])
    drop = post("/v2/rerank", {"query": Q, "documents": DOCS, "return_documents": False}).json()
    assert all("document" not in x for x in drop["results"])


@pytest.mark.slow
def test_truncate_prompt_tokens_scores_the_truncated_prompt(stack, tiny_model):
    """The score with truncate_prompt_tokens is the reference's for the truncated prompt: the same pair sent
    already cut scores bitwise the same, and differs from the uncut one."""
    doc = " ".join(f"Paris is the capital of France, fact {i}." for i in range(30))
    post = lambda body: requests.post(stack.url + "/v1/score", json=body, timeout=120).json()  # noqa: E731
    cut = post({"text_1": Q, "text_2": doc, "truncate_prompt_tokens": 120})
    settings = Settings(model=str(tiny_model), max_length=512)
    line = read_line("/v1/score", {"text_1": Q, "text_2": doc, "truncate_prompt_tokens": 120}, settings)
    reference = post({"text_1": Q, "text_2": line.pairs[0].document})
    whole = post({"text_1": Q, "text_2": doc})
    assert cut["data"][0]["score"] == reference["data"][0]["score"] != whole["data"][0]["score"]
    assert cut["usage"]["prompt_tokens"] == reference["usage"]["prompt_tokens"] <= 120 < whole["usage"]["prompt_tokens"]


@pytest.mark.slow
def test_errors_in_openai_and_vllm_shape(stack):
    _, _, _, _, _, ErrorResponse = vllm()
    cases = [
        ("/v1/rerank", {"query": Q}, 400, "documents"),
        ("/v1/score", {"text_1": [Q, "a", "b"], "text_2": DOCS}, 400, "text_1"),
        ("/score", {"text_1": Q, "text_2": [{"content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, 400, None),
        ("/v1/rerank", {"query": Q, "documents": DOCS, "model": "nobody/serves-this"}, 404, None),
        ("/v1/nothing-here", {}, 404, None),
    ]
    for path, body, status, param in cases:
        r = requests.post(stack.url + path, json=body, timeout=60)
        assert r.status_code == status, (path, r.text)
        err = ErrorResponse.model_validate(r.json()).error
        assert err.code == status and err.message and (param is None or param in (err.param or "")), r.json()
    path = stack.tmp / "chat.jsonl"
    path.write_text((DATA / "vllm_run_batch_score.jsonl").read_text())
    f = stack.client.files.create(file=open(path, "rb"), purpose="batch")
    with pytest.raises(BadRequestError) as bad:  # the openai SDK reads the same shape
        stack.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert "ending in /rerank or /score" in bad.value.message
    with pytest.raises(NotFoundError):
        stack.client.files.retrieve("file-nope")
    lines = [  # a batch's failed line, as vllm run-batch writes one: its error a vLLM ErrorResponse
        {"custom_id": "ok", "method": "POST", "url": "/score", "body": {"queries": Q, "documents": DOCS}},
        {"custom_id": "img", "method": "POST", "url": "/rerank", "body": {"query": Q, "documents": [{"content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(x) for x in lines))
    f = stack.client.files.create(file=open(path, "rb"), purpose="batch")
    batch = stack.client.batches.create(input_file_id=f.id, endpoint="/v1/score", completion_window="24h")
    done = wait_for(lambda: (b := stack.client.batches.retrieve(batch.id)).status == "completed" and b, 240, "batch")
    BatchRequestOutput = vllm()[0]
    [failed] = stack.client.files.content(done.error_file_id).text.splitlines()
    line = BatchRequestOutput.model_validate_json(failed)
    err = ErrorResponse.model_validate(line.error).error
    assert (line.custom_id, line.response.status_code, err.code, err.param) == ("img", 400, 400, "body.documents")
    assert "image_url parts are not supported" in err.message


@pytest.mark.slow
def test_files_list_pages_as_openai_does(stack):
    ids = set()
    for i in range(38):
        path = stack.tmp / f"page-{i}.jsonl"
        path.write_text(json.dumps({"custom_id": str(i), "method": "POST", "url": "/v1/score", "body": {"text_1": "q", "text_2": "d"}}))
        ids.add(stack.client.files.create(file=open(path, "rb"), purpose="batch").id)
    listed = [f.id for f in stack.client.files.list(limit=5, purpose="batch")]  # auto-paging: 8 pages
    assert ids <= set(listed) and len(listed) == len(set(listed))
    first = stack.client.files.list(limit=5, purpose="batch")
    assert first.has_more and len(first.data) == 5
    raw = requests.get(f"{stack.url}/v1/files", params={"limit": 5, "after": first.data[-1].id, "purpose": "batch"}, timeout=30).json()
    assert raw["has_more"] and [FileObject.model_validate(f).id for f in raw["data"]] == listed[5:10]
    oldest = stack.client.files.list(limit=100, order="asc").data
    assert [f.created_at for f in oldest] == sorted(f.created_at for f in oldest)


def test_served_names_resolve_to_the_model_that_serves_them():
    from types import SimpleNamespace

    from rerankq.routing import resolve_model

    worker = SimpleNamespace(model="/models/qwen3-0.6b", engine={"served_model_names": ["Qwen/Qwen3-Reranker-0.6B", VLLM_MODEL]})
    assert resolve_model("served/here/", "/local/dir/", "served/here, other", []) == "/local/dir"  # this process's names
    assert resolve_model(VLLM_MODEL, "/local/dir", None, [worker]) == "/models/qwen3-0.6b"  # a worker's names
    assert resolve_model("/models/qwen3-0.6b", "/local/dir", None, [worker]) == "/models/qwen3-0.6b"
    assert resolve_model("Qwen/Qwen3-Reranker-8B", "/local/dir", "x", [worker]) == "Qwen/Qwen3-Reranker-8B"  # nobody's: as named


@pytest.mark.slow
def test_a_batch_of_a_model_no_worker_runs_says_so_at_once(stack):
    """It waits for a worker (the batch is asynchronous) and says so at once: the CLI on submission, the
    batch object's `waiting`, `producer status`."""
    path = stack.tmp / "nobody.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/score", "body": {"model": "nobody/serves-this", "text_1": Q, "text_2": DOCS}}))
    cli = producer("submit", str(path), env=stack.env, check=True)
    assert "no worker runs nobody/serves-this" in cli.stderr and "RERANKQ_MODEL=nobody/serves-this" in cli.stderr, cli.stderr
    job = cli.stdout.strip().splitlines()[-1]
    status = json.loads(producer("status", job, "--json", env=stack.env, check=True).stdout)
    assert "no worker runs nobody/serves-this" in status["waiting"]
    f = stack.client.files.create(file=open(path, "rb"), purpose="batch")
    batch = stack.client.batches.create(input_file_id=f.id, endpoint="/v1/score", completion_window="24h")
    raw = requests.get(f"{stack.url}/v1/batches/{batch.id}", timeout=30).json()
    assert raw["status"] == "in_progress" and "no worker runs nobody/serves-this" in raw["waiting"]
    Batch.model_validate(raw)
    for b in (batch.id, job):
        producer("cancel", b.removeprefix("batch_"), env=stack.env, check=True)
