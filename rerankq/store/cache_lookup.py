"""Cached scores looked up by the worker: a cascade's chunks are not filtered by reuse at submission
(each stage-1 chunk must hold all of a query's pairs to pick its top ones), so the worker scores
only the pairs the cache does not hold, in its own scoring context."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from rerankq.store.cache_gens import mark_used
from rerankq.store.clock import now
from rerankq.store.ledger import Ledger
from rerankq.store.models import CachedScore

BATCH = 1000


def cached_scores(
    store: Ledger, keys: Sequence[bytes | None], *, mark: bool = True
) -> dict[bytes, tuple[float, float | None]]:
    """The cached (probability, log-odds) of each key the cache holds (keys in the scoring worker's own context). Their
    generations are marked used, as a submission's reuse marks them (rerankq/store/cache_gens.py), so
    `cache prune` keeps what cascades still reuse; the live lane reads with ``mark=False``: a write per search-box
    request would contend on one generation's row, and the nights that fill the cache keep it in use."""
    wanted = sorted({k for k in keys if k is not None})
    found: dict[bytes, tuple[float, float | None]] = {}
    gens: set[int] = set()
    with store.session() as s:
        for at in range(0, len(wanted), BATCH):
            part = wanted[at : at + BATCH]
            for key, score, logit, gen in s.execute(
                select(CachedScore.key, CachedScore.score, CachedScore.logit, CachedScore.gen).where(CachedScore.key.in_(part))
            ):
                found[key] = (score, logit)
                gens.add(gen)
    if gens and mark:
        with store.session.begin() as s:
            mark_used(s, gens, now())
    return found
