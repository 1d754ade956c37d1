"""What crosses into the ledger from outside: a chunk to record (producer) and a scored pair (worker)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NewChunk:
    spec: dict
    pairs: int


@dataclass(frozen=True, slots=True)
class ScoreRow:
    query_id: str
    doc_id: str
    score: float | None
    error: str | None
    key: bytes | None = None  # the pair's score-cache key in the scoring worker's context (rerankq/score_key.py)
    logit: float | None = None  # the score's log-odds (rerankq/log_odds.py)
