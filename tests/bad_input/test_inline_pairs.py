"""Bad inline pairs (`producer rerank`, `submit_pairs`): refused with the pair and field named."""

from __future__ import annotations

import pytest

from tests.bad_input.refusals import (
    Stack,
    assert_nothing_written,
    assert_refused,
)
from tests.conftest import migrate


def test_rerank_without_doc_is_a_usage_error(stack: Stack):
    """Click's usage errors exit 2 (as for every missing option), with the option named."""
    assert_refused(stack.run("rerank", "--query", "what is a reranker"), stack, "Missing option '--doc'", code=2)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--query", "q", "--doc", ""), "pair 0 field 'document': is an empty string"),
        (("--query", "q", "--doc", "fine", "--doc", ""), "pair 1 field 'document': is an empty string"),
        (("--query", "", "--doc", "a document"), "field 'query': String should have at least 1 character"),
    ],
    ids=["empty-doc", "second-doc-empty", "empty-query"],
)
def test_rerank_with_empty_text(args: tuple[str, ...], needle: str, stack: Stack):
    assert_refused(stack.run("rerank", *args, "--timeout", "5"), stack, needle)


PAIR = {"query_id": "q", "doc_id": "d", "query": "q", "document": "x"}


@pytest.mark.parametrize(
    "pairs, needle",
    [
        ([{**PAIR, "doc_id": f"d{i}"} for i in range(4)], "more than 3 pairs in an inline job (RERANKQ_MAX_INLINE"),
        ([PAIR, PAIR], "duplicate pair (query_id='q', doc_id='d')"),
        ([{**PAIR, "document": ""}], "pair 0 field 'document': is an empty string"),
        ([{k: v for k, v in PAIR.items() if k != "document"}], "pair 0 field 'document': Field required"),
        ([{**PAIR, "document": "x" * 1_000_001}], "pair 0 field 'document': 1,000,001 characters, over the limit"),
        ([], "no pairs to rerank"),
    ],
    ids=["over-max-inline-pairs", "duplicate", "empty-document", "missing-field", "huge-document", "no-pairs"],
)
def test_submit_pairs_python_api(pairs: list[dict], needle: str, tiny_model, sqlite_url: str, redis_url: str):
    from producer import InputError, submit_pairs
    from rerankq.settings import Settings

    migrate(sqlite_url)
    settings = Settings(model=str(tiny_model), database_url=sqlite_url, broker_url=redis_url, max_inline_pairs=3)
    with pytest.raises(InputError) as raised:
        submit_pairs(pairs, settings=settings)
    assert needle in str(raised.value)
    assert_nothing_written(sqlite_url, redis_url)
