"""Probability and log-odds of Qwen3-Reranker's "yes": the model card's score is the softmax over the
last position's (no, yes) logits, which is sigmoid(logit(yes) − logit(no)). Engines give the log-odds
(the raw difference); the probability is computed from it here, in float64, so it saturates to 1.0
only past ~37 while a float32 softmax does past ~17. Ranks follow the log-odds, which never tie where
probabilities saturate."""

from __future__ import annotations

import math

# The largest |log-odds| recoverable from a float64 probability: 1 − 2⁻⁵³ is the last value below 1.
PROBABILITY_LIMIT = 2.0**-53


def probability(log_odds: float) -> float:
    """sigmoid(log_odds) without overflow on either side."""
    if log_odds >= 0:
        return 1.0 / (1.0 + math.exp(-log_odds))
    e = math.exp(log_odds)
    return e / (1.0 + e)


def log_odds(p: float) -> float:
    """The log-odds of a probability from an engine that gives only probabilities (a custom engine);
    saturated values are clamped to ±36.7 instead of becoming infinite (JSON has no infinity)."""
    p = min(max(p, PROBABILITY_LIMIT), 1.0 - PROBABILITY_LIMIT)
    return math.log(p) - math.log1p(-p)
