"""Batch-file lines checked one by one (no service, no worker): each bad line is refused alone, naming
its line and field, with the words of /v1/rerank's and submit_pairs' own checks; each line routed by its
own url and custom_id repeats allowed, as vLLM's run-batch does (tests/test_vllm_dropin.py walks every
request form vLLM accepts)."""

from __future__ import annotations

import json

import pytest

from producer.batch_files import window_seconds
from producer.batch_lines import BadLine, GoodLine, LineReader, query_id
from producer.errors import InputError
from rerankq.settings import Settings


def read(lines: list, endpoint: str | None = "/v1/rerank", **settings: object) -> list:
    raw = [(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)).encode() for x in lines]
    return list(LineReader(Settings(**settings), endpoint, workers=[]).read(raw))


def line(cid: str, body: dict, url: str = "/v1/rerank", method: str = "POST") -> dict:
    return {"custom_id": cid, "method": method, "url": url, "body": body}


def test_each_bad_line_names_its_line_and_field():
    out = read([
        line("ok", {"query": "q", "documents": ["北京", {"text": "عاصمة"}], "model": "Qwen/Qwen3-Reranker-0.6B"}),
        "",  # blank lines are skipped, and still counted in line numbers
        line("ok", {"query": "q", "documents": ["x"]}),  # a repeated custom_id is vLLM's too: its own line
        line("get", {"query": "q", "documents": ["x"]}, method="GET"),
        line("other-model", {"query": "q", "documents": ["x"], "model": "Qwen/Qwen3-Reranker-8B"}),
        line("empty-query", {"query": "", "documents": ["x"]}),
        line("bad-doc", {"query": "q", "documents": ["x", 3]}),
        line("no-docs", {"query": "q", "documents": []}),
        line("negative", {"query": "q", "documents": ["x"], "max_tokens_per_doc": -1}),
        line("score-here", {"text_1": "q", "text_2": ["x"]}, url="/v1/score"),  # another url in the same file
        {"method": "POST", "url": "/v1/rerank", "body": {}},
        line("chat", {"query": "q", "documents": ["x"]}, url="/v1/chat/completions"),
        line("image", {"query": "q", "documents": [{"content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
    ])  # fmt: skip
    assert isinstance(out[0], GoodLine) and out[0].pairs[1].document == "عاصمة" and out[0].pairs[0].query_id == query_id(0)
    assert isinstance(out[1], GoodLine) and out[1].custom_id == "ok" and isinstance(out[8], GoodLine)
    bad = {b.number + 1: b for b in out if isinstance(b, BadLine)}
    assert set(bad) == {4, 5, 6, 7, 8, 9, 11, 12, 13}
    assert bad[4].param == "method"
    assert bad[5].param == "body.model" and bad[5].status == 404 and "scored by Qwen/Qwen3-Reranker-0.6B" in bad[5].message
    assert (bad[6].param, bad[6].message) == ("body.query", "line 6 (custom_id 'empty-query') field 'body.query': String should have at least 1 character")  # /v1/rerank's words
    assert bad[7].param == "body.documents" and "item 1: expected a string" in bad[7].message
    assert bad[8].param == "body.documents"
    assert bad[9].param == "body.max_tokens_per_doc" and "must be a non-negative integer" in bad[9].message  # vLLM's words
    assert bad[11].param == "custom_id" and bad[11].message.startswith("line 11 field 'custom_id'")
    assert bad[12].param == "url" and "ending in /rerank or /score" in bad[12].message
    assert bad[13].param == "body.documents" and "image_url parts are not supported: rerankq scores text only" in bad[13].message
    assert all(b.status == 400 for n, b in bad.items() if n != 5)


def test_score_lines_one_to_many_or_pairwise():
    one, pairwise, mismatch, empty, queries = read([
        line("a", {"text_1": "q", "text_2": ["x", "y"]}, url="/v1/score"),
        line("b", {"text_1": ["q1", "q2"], "text_2": ["x", "y"]}, url="/v1/score"),
        line("c", {"text_1": ["q1", "q2"], "text_2": ["x", "y", "z"]}, url="/v1/score"),
        line("d", {"text_1": "q", "text_2": ["x", ""]}, url="/v1/score"),
        line("e", {"queries": ["q1"], "items": "x"}, url="/score"),
    ], endpoint="/v1/score")  # fmt: skip
    assert [(p.query, p.document) for p in one.pairs] == [("q", "x"), ("q", "y")]
    assert [(p.query, p.document) for p in pairwise.pairs] == [("q1", "x"), ("q2", "y")]
    assert mismatch.param == "body.text_1" and "Input lengths must be either 1:1, 1:N or N:N (2 and 3)" in mismatch.message
    assert empty.param == "body.text_2[1]"
    assert [(p.query, p.document) for p in queries.pairs] == [("q1", "x")]


def test_limits_are_submit_pairs_own():
    [too_long] = read([line("big", {"query": "q", "documents": ["x" * 20]})], max_document_chars=10)
    assert too_long.param == "body.documents[0]" and "over the limit of 10" in too_long.message


def test_completion_window():
    assert window_seconds("24h") == 86400 and window_seconds("2d") == 172800
    with pytest.raises(InputError, match="completion_window"):
        window_seconds("tomorrow")


def test_cli_refuses_manifest_options_for_a_batch_file(tmp_path):
    from tests.conftest import producer

    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps(line("a", {"query": "q", "documents": ["x"]})) + "\n")
    env = {"RERANKQ_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}", "RERANKQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    result = producer("submit", str(path), "--then", "m:top=2", env=env)
    assert result.returncode == 3 and "--instruction and --then do not apply to a batch file" in result.stderr
