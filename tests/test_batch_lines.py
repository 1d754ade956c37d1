"""Batch-file lines checked one by one (no service, no worker): each bad line is refused alone, naming
its line and field, with the words of /v1/rerank's and submit_pairs' own checks."""

from __future__ import annotations

import json

import pytest

from producer.batch_files import window_seconds
from producer.batch_lines import BadLine, GoodLine, LineReader, query_id
from producer.errors import InputError
from rerankq.settings import Settings


def read(lines: list, endpoint: str | None = "/v1/rerank", **settings: object) -> list:
    raw = [(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)).encode() for x in lines]
    return list(LineReader(Settings(**settings), endpoint).read(raw))


def line(cid: str, body: dict, url: str = "/v1/rerank", method: str = "POST") -> dict:
    return {"custom_id": cid, "method": method, "url": url, "body": body}


def test_each_bad_line_names_its_line_and_field():
    out = read([
        line("ok", {"query": "q", "documents": ["北京", {"text": "عاصمة"}], "model": "Qwen/Qwen3-Reranker-0.6B"}),
        "",  # blank lines are skipped, and still counted in line numbers
        line("ok", {"query": "q", "documents": ["x"]}),
        line("get", {"query": "q", "documents": ["x"]}, method="GET"),
        line("other-model", {"query": "q", "documents": ["x"], "model": "Qwen/Qwen3-Reranker-8B"}),
        line("empty-query", {"query": "", "documents": ["x"]}),
        line("bad-doc", {"query": "q", "documents": ["x", 3]}),
        line("no-docs", {"query": "q", "documents": []}),
        line("cut", {"query": "q", "documents": ["x"], "max_tokens_per_doc": 5}),
        line("score-here", {"text_1": "q", "text_2": ["x"]}, url="/v1/score"),
        {"method": "POST", "url": "/v1/rerank", "body": {}},
    ])  # fmt: skip
    assert isinstance(out[0], GoodLine) and out[0].pairs[1].document == "عاصمة" and out[0].pairs[0].query_id == query_id(0)
    bad = {b.number + 1: (b.param, b.message) for b in out if isinstance(b, BadLine)}
    assert bad[3] == ("custom_id", "line 3 (custom_id 'ok') field 'custom_id': already used on line 1 (custom ids must be unique)")
    assert bad[4][0] == "method"
    assert bad[5][0] == "body.model" and "this batch is scored by Qwen/Qwen3-Reranker-0.6B" in bad[5][1]
    assert bad[6] == ("body.query", "line 6 (custom_id 'empty-query') field 'body.query': String should have at least 1 character")  # /v1/rerank's words
    assert bad[7][0] == "body.documents" and "item 1 is not a string" in bad[7][1]
    assert bad[8][0] == "body.documents"
    assert bad[9][0] == "body.max_tokens_per_doc"
    assert bad[10] == ("url", "line 10 (custom_id 'score-here') field 'url': '/v1/score': this batch's endpoint is /v1/rerank")
    assert bad[11][0] == "custom_id" and bad[11][1].startswith("line 11 field 'custom_id'")


def test_score_lines_one_to_many_or_pairwise():
    one, pairwise, mismatch, empty = read([
        line("a", {"text_1": "q", "text_2": ["x", "y"]}, url="/v1/score"),
        line("b", {"text_1": ["q1", "q2"], "text_2": ["x", "y"]}, url="/v1/score"),
        line("c", {"text_1": ["q1", "q2"], "text_2": ["x", "y", "z"]}, url="/v1/score"),
        line("d", {"text_1": "q", "text_2": ["x", ""]}, url="/v1/score"),
    ], endpoint="/v1/score")  # fmt: skip
    assert [(p.query, p.document) for p in one.pairs] == [("q", "x"), ("q", "y")]
    assert [(p.query, p.document) for p in pairwise.pairs] == [("q1", "x"), ("q2", "y")]
    assert mismatch.param == "body.text_1" and "2 texts for 3" in mismatch.message
    assert empty.param == "body.text_2[1]"


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
