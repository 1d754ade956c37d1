"""The score cache's upkeep: its size, and pruning the generations nobody used for a while
(rerankq/store/cache_gens.py). Workers fill it as chunks commit (rerankq/store/score_writes.py);
producers read it at submission (rerankq/store/reuse_stage.py) under a recorded scoring context
(rerankq/store/contexts.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from rerankq.store.cache_gens import day_of, start_of
from rerankq.store.clock import aware, now
from rerankq.store.ledger import Ledger
from rerankq.store.models import CachedScore, CacheGeneration

PRUNE_BATCH = 50_000


@dataclass(frozen=True, slots=True)
class CachePruneReport:
    removed: int
    kept: int
    cutoff: datetime


def prune_cache(
    store: Ledger, unused_for: float, touch_interval: float = 0.0, dry_run: bool = False, batch: int = PRUNE_BATCH
) -> CachePruneReport:
    """Delete the entries of every generation unused for ``unused_for`` seconds: its day ended before
    the cutoff and no reuse marked it since. In short transactions, each of which first reads the
    generation's mark again (FOR SHARE: a submission marking it waits for the batch, or the batch sees
    its mark), so workers are never held up for long. Safe while they run: what they write is fresh.
    ``touch_interval`` is not needed any more (every reuse marks its generations) and is ignored."""
    cutoff = now() - timedelta(seconds=unused_for)
    last_day = day_of(cutoff)  # generations before this day ended before the cutoff
    with store.session() as s:
        oldest = s.scalar(select(func.min(CachedScore.gen)))
        used = set(s.scalars(select(CacheGeneration.gen).where(CacheGeneration.last_used >= cutoff)))
    dead = [g for g in range(oldest, last_day) if g not in used] if oldest is not None else []
    removed = 0
    for gen in dead:
        if dry_run:
            with store.session() as s:
                removed += s.scalar(select(func.count()).select_from(CachedScore).where(CachedScore.gen == gen)) or 0
            continue
        while True:
            with store.session.begin() as s:
                mark = s.scalar(select(CacheGeneration.last_used).where(CacheGeneration.gen == gen).with_for_update(read=True))
                if mark is not None and aware(mark) >= cutoff:
                    break  # a reuse hit it meanwhile
                victims = select(CachedScore.key).where(CachedScore.gen == gen).limit(batch).scalar_subquery()
                n = s.execute(delete(CachedScore).where(CachedScore.key.in_(victims))).rowcount
            removed += n
            if n < batch:
                break
    if not dry_run and dead:
        with store.session.begin() as s:  # marks of generations now empty
            s.execute(delete(CacheGeneration).where(CacheGeneration.gen < last_day, CacheGeneration.last_used < cutoff))
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(CachedScore)) or 0
    return CachePruneReport(removed, total - (removed if dry_run else 0), cutoff)


def cache_size(store: Ledger) -> tuple[int, datetime | None]:
    """Entries, and the start of the oldest generation's day (no entry there is older than that)."""
    with store.session() as s:
        n, oldest = s.execute(select(func.count(), func.min(CachedScore.gen))).one()
    return n or 0, start_of(oldest) if oldest is not None else None
