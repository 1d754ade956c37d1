"""Sends the ledger's webhook events (rerankq/store/webhooks.py), from inside the workers: whichever
worker holds the ledger's ``webhooks`` lease posts them, signed (Standard Webhooks), and records each
answer. A thread of its own, so a receiver that hangs never delays the heartbeat or the sweeper.

A 2xx answer delivers an event; anything else (an error status, a refused connection, a timeout) is
retried with exponential backoff until ``RERANKQ_WEBHOOK_RETRY_FOR`` has passed since the job ended.
The lease holder also expires batches whose completion window ended (their event is batch.expired).
Only workers with ``RERANKQ_WEBHOOK_SECRET`` send: events wait in the ledger until one runs."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

from rerankq.logs import get_logger
from rerankq.settings import Settings
from rerankq.store.batches import BatchStore
from rerankq.store.registry import Registry
from rerankq.store.webhooks import Backoff, DueEvent, WebhookOutbox
from rerankq.webhook_signing import signed_headers

log = get_logger("rerankq.webhooks")
LEASE = "webhooks"
BATCH = 20  # events claimed per look at the outbox


def post(url: str, body: str, headers: dict[str, str], timeout: float) -> str | None:
    """One attempt: None when the receiver answered 2xx, else why not (status or error, in a line)."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the URL is the user's own)
            response.read(65536)
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {reason}"[:300]


class WebhookSender:
    def __init__(self, outbox: WebhookOutbox, registry: Registry, settings: Settings, worker_id: str):
        if settings.webhook_secret is None:
            raise ValueError("a webhook sender needs RERANKQ_WEBHOOK_SECRET")
        self.outbox, self.registry, self.settings, self.worker_id = outbox, registry, settings, worker_id
        self.secret = settings.webhook_secret.get_secret_value()
        self.batches = BatchStore(settings.database, settings.connect_timeout, check=False)
        self.backoff = Backoff(settings.webhook_retry_backoff, settings.webhook_max_backoff, settings.webhook_retry_for)
        # Held across a batch of slow posts; claims (not the lease) keep one event from going out twice at once.
        self.lease_ttl = max(3 * settings.webhook_poll_interval, settings.webhook_timeout + 5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rerankq-webhooks", daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.webhook_timeout + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.webhook_poll_interval):
            try:
                self.run_once()
            except Exception as exc:  # the database is away: next turn
                log.warning("webhook_sweep_failed", error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)

    def run_once(self) -> int:
        """Send what is due, if this worker holds the lease; the number of events delivered."""
        delivered = 0
        if self.batches is not None and self.registry.acquire_lease(LEASE, self.worker_id, self.lease_ttl):
            for job_id in self.batches.due_to_expire():  # its batch.expired event is recorded with it
                if self.batches.expire(job_id):
                    log.info("batch_expired", job_id=job_id)
        while not self._stop.is_set() and self.registry.acquire_lease(LEASE, self.worker_id, self.lease_ttl):
            due = self.outbox.claim_due(BATCH, hold=self.settings.webhook_timeout + self.lease_ttl)
            for event in due:
                delivered += self._send(event)
            if len(due) < BATCH:
                break
        return delivered

    def _send(self, event: DueEvent) -> int:
        error = post(event.url, event.payload, signed_headers(self.secret, event.id, event.payload), self.settings.webhook_timeout)
        if error is None:
            self.outbox.delivered(event.id)
            log.info("webhook_delivered", event_id=event.id, type=event.type, job_id=event.job_id, attempt=event.attempts + 1)
            return 1
        state = self.outbox.attempt_failed(event, error, self.backoff)
        log.warning(
            "webhook_failed" if state == "failed" else "webhook_retry", event_id=event.id, type=event.type,
            job_id=event.job_id, attempt=event.attempts + 1, error=error,
            **({"next_in_s": round(self.backoff.delay(event.attempts + 1), 1)} if state != "failed" else {}),
        )  # fmt: skip
        return 0


def start_sender(settings: Settings, registry: Registry, worker_id: str) -> WebhookSender | None:
    """The worker's sender thread, when it has the secret to sign with (else events wait for one that has)."""
    if settings.webhook_secret is None:
        log.info("webhook_sender_off", reason="RERANKQ_WEBHOOK_SECRET not set: this worker sends no webhook events")
        return None
    outbox = WebhookOutbox(settings.database, settings.connect_timeout, check=False)
    return WebhookSender(outbox, registry, settings, worker_id).start()
