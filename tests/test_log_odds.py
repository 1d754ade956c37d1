"""Raw scores (issue 18): every score comes with its log-odds, logit(yes) − logit(no); the probability is
its sigmoid (the model card's softmax over no/yes); ranks follow the log-odds, so probabilities that
saturate at 1.0 never tie; the changes export and `diff` rank the same way; an old cache entry's
missing log-odds never reaches a new job (the scoring context changed with them)."""

from __future__ import annotations

import math

import pytest

from producer.changes import diff, iter_changes
from producer.export import iter_ranked
from rerankq.log_odds import log_odds, probability
from rerankq.score_key import SCORE_OUTPUT, configured
from rerankq.settings import Settings
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from schemas import InlinePair, InlineSpec, RerankBody


def test_probability_and_log_odds_are_inverse_and_never_overflow():
    for x in (-745.0, -40.0, -3.5, 0.0, 1e-9, 2.25, 17.0, 36.0, 800.0):
        p = probability(x)
        assert 0.0 <= p <= 1.0
        if abs(x) < 30:  # the round trip loses what float64 cannot hold of 1 − p: about 2⁻⁵³·e^|x|
            assert log_odds(p) == pytest.approx(x, abs=4 * 2**-53 * math.exp(abs(x)) + 1e-12)
    assert probability(0.0) == 0.5
    assert probability(40.0) == probability(45.0) == 1.0, "a float64 probability saturates past ~37"
    assert math.isfinite(log_odds(1.0)) and math.isfinite(log_odds(0.0)) and log_odds(1.0) == -log_odds(0.0) > 36


def _job(store: Ledger, logits: dict[str, float | None]) -> str:
    pairs = [InlinePair(query_id="q", doc_id=d, query="q", document="d") for d in logits]
    job, (msg,) = store.create_job(kind="inline", chunks=[NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), len(pairs))])
    assert store.begin_chunk(job, msg.chunk_id, "w", "m") is None
    rows = [
        ScoreRow("q", d, None if x is None else probability(x), "bad" if x is None else None, None, x) for d, x in logits.items()
    ]
    assert store.finish_chunk(job, msg.chunk_id, rows)
    return job


def test_saturated_probabilities_rank_by_their_log_odds(store: Ledger):
    """Three documents whose probabilities are all 1.0 rank by log-odds, not by doc_id; a failed pair is unranked."""
    job = _job(store, {"a": 38.0, "b": 52.5, "c": 45.0, "d": -1.0, "e": None})
    got = {r["doc_id"]: r for r in iter_ranked(store, job)}
    assert [got[d]["score"] for d in "abc"] == [1.0, 1.0, 1.0]
    assert {d: got[d]["rank"] for d in "abcde"} == {"b": 1, "c": 2, "a": 3, "d": 4, "e": None}
    assert {d: got[d]["logit"] for d in "abcd"} == {"a": 38.0, "b": 52.5, "c": 45.0, "d": -1.0}


def test_changes_and_diff_see_moves_among_saturated_scores(store: Ledger):
    old = _job(store, {"a": 38.0, "b": 52.5, "c": 45.0})
    new = _job(store, {"a": 60.0, "b": 52.5, "c": 45.0})  # same probabilities (1.0), a now first
    rows = {r["doc_id"]: r for r in iter_changes(store, old, new)}
    assert {d: (r["change"], r["old_rank"], r["new_rank"]) for d, r in rows.items()} == {
        "a": ("moved", 3, 1), "b": ("moved", 1, 2), "c": ("moved", 2, 3)}  # fmt: skip
    assert (rows["a"]["old_logit"], rows["a"]["new_logit"]) == (38.0, 60.0)  # why "a" moved, which 1.0 = 1.0 hides
    gone = {r["doc_id"]: r for r in iter_changes(store, new, _job(store, {"b": 52.5, "c": 45.0}))}["a"]
    assert (gone["change"], gone["old_logit"], gone["new_logit"], gone["old_rank"]) == ("removed", 60.0, None, 1)
    d = diff(store, old, new, top_k=1)
    assert (d.moved, d.changed, d.queries_top_k_changed) == (3, 0, 1)


def test_use_activation_picks_the_probability_or_the_log_odds():
    body = RerankBody.model_validate({"query": "q", "documents": ["a"]})
    assert body.relevance(0.75, 1.1) == 0.75  # vLLM's default: the activation applied
    null = RerankBody.model_validate({"query": "q", "documents": ["a"], "use_activation": None})
    assert null.relevance(0.75, 1.1) == 0.75  # null is vLLM's "the model's default"
    raw = RerankBody.model_validate({"query": "q", "documents": ["a"], "use_activation": False})
    assert raw.relevance(0.75, 1.1) == 1.1
    with pytest.raises(ValueError, match="use_activation"):
        RerankBody.model_validate({"query": "q", "documents": ["a"], "use_activation": "no"})


def test_the_scoring_context_says_what_a_cached_score_holds():
    """Contexts recorded before log-odds lack this field, so producers never reuse their entries."""
    assert configured(Settings())["scores"] == SCORE_OUTPUT == "probability+log-odds"
