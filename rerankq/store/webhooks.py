"""The webhook outbox. An event is written in the very transaction that ends its job (``_finalize``,
``cancel``, a job complete at submission), so a job never ends without its event and no event exists
for a job that did not end. One worker at a time sends them (worker/webhook_sender.py); each send is
claimed first with a conditional update, so two senders never post one event at the same moment.

Delivery is at least once: a sender that dies after the receiver got the event but before the ledger
heard back sends it again, with the same ``webhook-id``; receivers dedupe on it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from rerankq.store.base import LedgerBase
from rerankq.store.clock import aware, now
from rerankq.store.models import Chunk, Job, WebhookEvent
from schemas import JobState

BATCH_KIND = "batch"  # jobs.kind of an OpenAI-style batch (its events are batch.*)
_BATCH_TYPES = {
    JobState.completed: "batch.completed",
    JobState.completed_with_errors: "batch.completed",  # OpenAI: the failed lines are in the error file
    JobState.failed: "batch.failed",
    JobState.cancelled: "batch.cancelled",
}


def batch_id(job_id: str) -> str:
    """The OpenAI-style id of the batch that is job ``job_id``."""
    return f"batch_{job_id}"


def event_type(job: Job) -> str:
    state = JobState(job.state)
    if job.kind == BATCH_KIND:
        return "batch.expired" if state == JobState.cancelled and job.error == "expired" else _BATCH_TYPES[state]
    return f"job.{state.value}"


def record_job_end(s: Session, job: Job, output_written: bool = False) -> str | None:
    """Within the transaction that ended ``job``: its event, if it has a URL to notify. The event id.
    A batch's event waits for its output files (``output_written``: the transaction that records them)."""
    if not job.notify or not JobState(job.state).terminal or (job.kind == BATCH_KIND and not output_written):
        return None
    t = now()
    scored, failed = s.execute(
        select(func.coalesce(func.sum(Chunk.scored), 0), func.coalesce(func.sum(Chunk.pair_errors), 0)).where(
            Chunk.job_id == job.id, func.coalesce(Chunk.stage, 1) == 1
        )
    ).one()
    msg_id = f"msg_{uuid.uuid4().hex}"
    data: dict = {
        "id": batch_id(job.id) if job.kind == BATCH_KIND else job.id,
        "object": "batch" if job.kind == BATCH_KIND else "job",
        "job_id": job.id,
        "name": job.name,
        "state": job.state,
        "model": job.model,
        "pairs_total": job.pairs_total,
        "pairs_scored": int(scored) + (job.pairs_reused or 0),
        "pairs_failed": int(failed),
        "pairs_reused": job.pairs_reused or 0,
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at or t),
    }
    body = {"object": "event", "id": msg_id, "type": event_type(job), "created_at": int(t.timestamp()), "data": data}
    s.add(WebhookEvent(
        id=msg_id, job_id=job.id, type=body["type"], url=job.notify, payload=json.dumps(body, separators=(",", ":")),
        state="pending", attempts=0, next_attempt_at=t, created_at=t,
    ))  # fmt: skip
    return msg_id


def _iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class DueEvent:
    id: str
    job_id: str
    type: str
    url: str
    payload: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential: ``first`` s after the first failure, doubled each time up to ``most``; given up after ``give_up_after``."""

    first: float
    most: float
    give_up_after: float

    def delay(self, attempts: int) -> float:
        return min(self.first * 2 ** max(attempts - 1, 0), self.most)


class WebhookOutbox(LedgerBase):
    def due_urls(self, limit: int, busy: frozenset[str] = frozenset()) -> list[str]:
        """The receivers (URLs) with an event due, longest waiting first, leaving out ``busy`` ones: the
        sender picks among them so that one slow receiver's backlog never stands before another's event."""
        t = now()
        query = (
            select(WebhookEvent.url)
            .where(WebhookEvent.state == "pending", WebhookEvent.next_attempt_at <= t)
            .group_by(WebhookEvent.url).order_by(func.min(WebhookEvent.next_attempt_at)).limit(limit)
        )  # fmt: skip
        if busy:
            query = query.where(WebhookEvent.url.not_in(sorted(busy)))
        with self.session() as s:
            return list(s.scalars(query))

    def claim_next(self, urls: list[str], hold: float) -> list[DueEvent]:
        """For each of ``urls``, its longest-waiting due event, claimed for ``hold`` seconds (pushed out of
        the due set by a conditional update): if this sender dies mid-post, the event is due again after
        ``hold``, and no other sender takes it meanwhile."""
        t = now()
        claimed = []
        with self.session.begin() as s:
            for url in urls:
                ev = s.execute(
                    select(WebhookEvent).where(
                        WebhookEvent.url == url, WebhookEvent.state == "pending", WebhookEvent.next_attempt_at <= t
                    ).order_by(WebhookEvent.next_attempt_at).limit(1)
                ).scalar_one_or_none()  # fmt: skip
                if ev is None:
                    continue
                taken = s.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id == ev.id, WebhookEvent.state == "pending", WebhookEvent.attempts == ev.attempts)
                    .values(next_attempt_at=t + timedelta(seconds=hold))
                ).rowcount
                if taken:
                    claimed.append(DueEvent(ev.id, ev.job_id, ev.type, ev.url, ev.payload, ev.attempts, aware(ev.created_at)))
        return claimed

    def delivered(self, event_id: str) -> None:
        with self.session.begin() as s:
            s.execute(
                update(WebhookEvent).where(WebhookEvent.id == event_id)
                .values(state="delivered", attempts=WebhookEvent.attempts + 1, delivered_at=now(), last_error=None)
            )  # fmt: skip

    def attempt_failed(self, event: DueEvent, error: str, backoff: Backoff, final: bool = False) -> str:
        """The next attempt's time, or ``failed`` once the event is older than the backoff gives it (or
        at once when ``final``: a URL no attempt can deliver to). The new state."""
        attempts = event.attempts + 1
        t = now()
        gave_up = final or (t - event.created_at).total_seconds() >= backoff.give_up_after
        with self.session.begin() as s:
            s.execute(
                update(WebhookEvent).where(WebhookEvent.id == event.id, WebhookEvent.state == "pending")
                .values(
                    attempts=attempts, last_error=error[:500], state="failed" if gave_up else "pending",
                    next_attempt_at=t + timedelta(seconds=backoff.delay(attempts)),
                )
            )  # fmt: skip
        return "failed" if gave_up else "pending"

    def events(self, job_id: str) -> list[dict]:
        """A job's events, oldest first: what ``producer status`` and the tests read."""
        with self.session() as s:
            rows = s.scalars(
                select(WebhookEvent).where(WebhookEvent.job_id == job_id).order_by(WebhookEvent.created_at)
            ).all()
            return [
                {
                    "id": e.id, "type": e.type, "url": e.url, "state": e.state, "attempts": e.attempts,
                    "last_error": e.last_error, "next_attempt_at": _iso(e.next_attempt_at), "delivered_at": _iso(e.delivered_at),
                }
                for e in rows
            ]  # fmt: skip
