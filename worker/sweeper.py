"""Self-healing, run inside the workers: whichever worker holds the ledger's ``sweeper`` lease
re-enqueues the chunks of dead workers and the chunks the broker lost. No extra service to run.

Every race is settled by the ledger: a chunk is taken back with a conditional update, a second
delivery of a finished chunk is skipped by ``begin_chunk``, and scores are upserted, so a chunk
re-sent while its first worker still (slowly) scores it costs GPU time but is never counted twice."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from celery import Celery

from rerankq.broker import chunks_in_broker, message_queues, publish
from rerankq.logs import get_logger
from rerankq.settings import Settings
from rerankq.store.ledger import Ledger
from rerankq.store.registry import Registry

log = get_logger("rerankq.sweeper")
LEASE = "sweeper"


@dataclass
class SweepResult:
    swept: bool = False
    from_dead: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)


class Sweeper:
    def __init__(self, ledger: Ledger, registry: Registry, app: Celery, settings: Settings, worker_id: str):
        self.ledger, self.registry, self.app = ledger, registry, app
        self.settings, self.worker_id = settings, worker_id
        # The lease outlives a couple of missed beats, so it does not bounce between workers, and a
        # dead holder's lease lapses well before its chunks are due back (RERANKQ_WORKER_DEAD_AFTER).
        self.lease_ttl = max(3 * settings.heartbeat_interval, 3.0)

    def run_once(self, recheck_delay: float = 1.0) -> SweepResult:
        if not self.registry.acquire_lease(LEASE, self.worker_id, self.lease_ttl):
            return SweepResult()
        result = SweepResult(swept=True)
        dead_after = self.settings.worker_dead_after
        reclaimed = self.ledger.reclaim_from_dead(dead_after)
        if reclaimed:
            result.from_dead = self._send(reclaimed)
            log.warning("chunks_reclaimed", reason="worker presumed dead", chunks=result.from_dead)
        self.registry.release_dead(dead_after)
        result.lost = self._resend_lost(recheck_delay)
        self.registry.forget(older_than=7 * 86400)
        return result

    def _resend_lost(self, recheck_delay: float) -> list[int]:
        """Pending chunks nobody holds that the broker has neither queued nor recently delivered.
        Looked for on every queue their message may sit on (a job's context is pinned after its
        messages went to the model's queue: issue 25), and twice, a moment apart, so a message caught
        between the queue and ``begin_chunk`` is not mistaken for a lost one."""
        settings = self.settings
        candidates = self.ledger.unheld_pending(older_than=settings.heartbeat_interval)
        if not candidates:
            return []
        queues = {q for m in candidates for q in message_queues(settings.queue, m.model, m.context)}
        present = chunks_in_broker(self.app, queues, delivered_within=settings.worker_dead_after)
        if present is None:
            return []
        missing = {m.chunk_id: m for m in candidates if m.chunk_id not in present}
        if not missing:
            return []
        time.sleep(recheck_delay)
        present = chunks_in_broker(self.app, queues, delivered_within=settings.worker_dead_after) or set()
        still = self.ledger.still_pending(missing)
        lost = [m for cid, m in missing.items() if cid in still and cid not in present]
        if not lost:
            return []
        sent = self._send(lost)
        log.warning("chunks_reclaimed", reason="lost by the broker", chunks=sent)
        return sent

    def _send(self, messages: list) -> list[int]:
        """Re-send at each job's own priority: an interactive request stays ahead of batch chunks."""
        from rerankq.broker import BATCH_PRIORITY, INTERACTIVE_PRIORITY

        interactive = self.ledger.interactive_jobs({m.job_id for m in messages})
        sent: list[int] = []
        try:
            for priority in (INTERACTIVE_PRIORITY, BATCH_PRIORITY):
                group = [m for m in messages if (m.job_id in interactive) == (priority == INTERACTIVE_PRIORITY)]
                if group:
                    sent += publish(self.app, group, self.settings.queue, priority)
        except Exception as exc:  # the broker is away: the ledger still holds them pending; next sweep
            sent += getattr(exc, "sent", [])
            log.error("reclaim_publish_failed", error=str(exc)[:200], sent=len(sent), of=len(messages))
        if sent:
            self.ledger.mark_enqueued(sent)
        return sent
