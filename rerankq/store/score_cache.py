"""The score cache's upkeep: its size, and pruning the entries nobody used for a while. Workers fill
it as chunks commit (rerankq/store/score_writes.py); producers read it at submission
(rerankq/store/reuse_stage.py) under a recorded scoring context (rerankq/store/contexts.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from rerankq.store.clock import aware, now
from rerankq.store.ledger import Ledger
from rerankq.store.models import CachedScore

PRUNE_BATCH = 50_000


@dataclass(frozen=True, slots=True)
class CachePruneReport:
    removed: int
    kept: int
    cutoff: datetime


def prune_cache(
    store: Ledger, unused_for: float, touch_interval: float = 0.0, dry_run: bool = False, batch: int = PRUNE_BATCH
) -> CachePruneReport:
    """Delete entries not used (written or reused) for ``unused_for`` seconds, in short transactions so
    workers' writes are never held up for long. Safe while they run: what they write is fresh.
    A reuse refreshes ``last_used`` only once it is ``touch_interval`` old, so that much is added:
    nothing used within ``unused_for`` is ever deleted."""
    cutoff = now() - timedelta(seconds=unused_for + touch_interval)
    removed = 0
    with store.session() as s:
        if dry_run:
            removed = s.scalar(select(func.count()).select_from(CachedScore).where(CachedScore.last_used < cutoff)) or 0
    while not dry_run:
        with store.session.begin() as s:
            victims = select(CachedScore.key).where(CachedScore.last_used < cutoff).limit(batch).scalar_subquery()
            n = s.execute(delete(CachedScore).where(CachedScore.key.in_(victims))).rowcount
        removed += n
        if n < batch:
            break
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(CachedScore)) or 0
    return CachePruneReport(removed, total - (removed if dry_run else 0), cutoff)


def cache_size(store: Ledger) -> tuple[int, datetime | None]:
    with store.session() as s:
        n, oldest = s.execute(select(func.count(), func.min(CachedScore.last_used))).one()
    return n or 0, aware(oldest)
