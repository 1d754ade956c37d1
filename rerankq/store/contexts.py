"""Scoring contexts: what a worker scores under (model files' fingerprint, dtype, numerics …), recorded
once its engine has loaded, so producers know under which cache keys a score may be reused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rerankq.logs import get_logger
from rerankq.store.clock import aware, now
from rerankq.store.ledger import Ledger
from rerankq.store.models import ScoreContext
from rerankq.store.registry import Registry

log = get_logger("rerankq.contexts")


@dataclass(frozen=True, slots=True)
class RecordedContext:
    digest: str
    model: str
    settings: dict
    context: dict
    last_seen: datetime


def record_context(store: Ledger, digest: str, model: str, settings: dict, context: dict) -> None:
    """A worker's context, once its engine is loaded: what producers may reuse scores under. Workers of
    one context starting together race to insert it: the loser finds the row on its second try."""
    for attempt in (1, 2):
        t = now()
        try:
            with store.session.begin() as s:
                row = s.get(ScoreContext, digest, with_for_update=True)
                if row is None:
                    s.add(ScoreContext(digest=digest, model=model, settings=settings, context=context, created_at=t, last_seen=t))
                else:
                    row.last_seen = t
            return
        except IntegrityError:
            if attempt == 2:
                raise


def recorded_contexts(store: Ledger, settings: dict, max_age: float) -> list[RecordedContext]:
    """Contexts recorded within ``max_age`` seconds by workers configured exactly like ``settings``."""
    since = now() - timedelta(seconds=max_age)
    with store.session() as s:
        rows = s.scalars(
            select(ScoreContext).where(ScoreContext.model == settings["model"], ScoreContext.last_seen >= since)
        ).all()
        return [
            RecordedContext(r.digest, r.model, dict(r.settings), dict(r.context), aware(r.last_seen))  # type: ignore[arg-type]
            for r in rows
            if dict(r.settings) == settings
        ]


def record_worker_context(store: Ledger, worker_id: str, settings: object, context: object) -> None:
    """Called by a worker once its engine has loaded: its context in ``score_contexts`` (what producers
    reuse under) and its digest as the worker's ``fingerprint`` in the registry."""
    from rerankq.score_key import ScoringContext, configured

    assert isinstance(context, ScoringContext)
    record_context(store, context.digest, settings.model, configured(settings), context.as_dict())  # type: ignore[attr-defined, arg-type]
    registry = Registry(settings.database, settings.connect_timeout)  # type: ignore[attr-defined]
    if not registry.heartbeat(worker_id, fingerprint=context.digest):
        log.info("fingerprint_not_in_registry", worker=worker_id, reason="worker not registered")
