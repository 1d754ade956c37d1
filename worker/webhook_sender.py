"""Sends the ledger's webhook events (rerankq/store/webhooks.py), from inside the workers: whichever
worker holds the ledger's ``webhooks`` lease posts them, signed (Standard Webhooks), and records each
answer. A thread of its own, so a receiver that hangs never delays the heartbeat or the sweeper.

Attempts run concurrently on a bounded pool (``RERANKQ_WEBHOOK_CONCURRENCY``), at most one in flight per
receiver host, each under one deadline (worker/webhook_post.py): one slow or dead receiver delays only
its own events. A 2xx answer from the URL itself delivers an event; anything else (an error status, a
redirect, a refused connection, a timeout, an address the egress policy refuses) is retried with
exponential backoff until ``RERANKQ_WEBHOOK_RETRY_FOR`` has passed since the job ended; a URL no attempt
can deliver to (credentials in it, a row older than the submission check) fails at once.
The lease holder also expires batches whose completion window ended (their event is batch.expired).
Only workers with ``RERANKQ_WEBHOOK_SECRET`` send: events wait in the ledger until one runs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from urllib.parse import urlsplit

from rerankq.egress import Allow, RefusedTarget, UnsafeURL
from rerankq.logs import get_logger
from rerankq.settings import Settings
from rerankq.store.batches import BatchStore
from rerankq.store.registry import Registry
from rerankq.store.webhooks import Backoff, DueEvent, WebhookOutbox
from rerankq.webhook_signing import signed_headers
from worker.webhook_post import post

log = get_logger("rerankq.webhooks")
LEASE = "webhooks"
RECEIVERS_PER_LOOK = 500  # receivers with due events read per look at the outbox (a bound on its cost)


def receiver_host(url: str) -> str:
    """The unit of "one in flight": the receiver's host (its ports and paths share one slot)."""
    try:
        return (urlsplit(url).hostname or url).lower()
    except ValueError:
        return url


class WebhookSender:
    def __init__(self, outbox: WebhookOutbox, registry: Registry, settings: Settings, worker_id: str):
        if settings.webhook_secret is None:
            raise ValueError("a webhook sender needs RERANKQ_WEBHOOK_SECRET")
        self.outbox, self.registry, self.settings, self.worker_id = outbox, registry, settings, worker_id
        self.secret = settings.webhook_secret.get_secret_value()
        self.allow = Allow.parse(settings.webhook_allow)
        self.batches = BatchStore(settings.database, settings.connect_timeout, check=False)
        self.backoff = Backoff(settings.webhook_retry_backoff, settings.webhook_max_backoff, settings.webhook_retry_for)
        # Renewed every look; claims (not the lease) keep one event from going out twice at once.
        self.lease_ttl = max(3 * settings.webhook_poll_interval, settings.webhook_timeout + 5.0)
        self.hold = settings.webhook_timeout + self.lease_ttl  # a claim outlives its attempt's deadline
        self._pool = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="rerankq-webhook-post")
        self._lock = threading.Lock()
        self._busy: dict[str, tuple[str, Future]] = {}  # receiver host -> (URL, its attempt in flight)
        self._delivered = 0
        self._expired_at = 0.0
        self._wake = threading.Event()  # an attempt ended: its host's next event may go at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rerankq-webhooks", daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.settings.webhook_timeout + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch()
            except Exception as exc:  # the database is away: next turn
                log.warning("webhook_sweep_failed", error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self._wake.wait(self.settings.webhook_poll_interval)
            self._wake.clear()

    def run_once(self) -> int:
        """Send everything due now, waiting for the attempts, if this worker holds the lease; the number
        of events delivered (what the tests call; the thread calls ``dispatch`` and does not wait)."""
        before = self._delivered
        while started := self.dispatch():
            wait(started)
        return self._delivered - before

    def dispatch(self) -> list[Future]:
        """One look at the outbox: for each receiver host with an event due and no attempt in flight,
        its longest-waiting event is claimed and posted on the pool. The attempts started."""
        if not self.registry.acquire_lease(LEASE, self.worker_id, self.lease_ttl):
            return []
        if time.monotonic() - self._expired_at >= self.settings.webhook_poll_interval:
            self._expired_at = time.monotonic()
            for job_id in self.batches.due_to_expire():  # its batch.expired event is recorded with it
                if self.batches.expire(job_id):
                    log.info("batch_expired", job_id=job_id)
        with self._lock:
            busy = dict(self._busy)
        free = self.settings.webhook_concurrency - len(busy)
        if free <= 0:
            return []
        urls, hosts = [], set(busy)
        for url in self.outbox.due_urls(RECEIVERS_PER_LOOK, busy=frozenset(u for u, _ in busy.values())):
            host = receiver_host(url)
            if host not in hosts:
                hosts.add(host)
                urls.append(url)
                if len(urls) == free:
                    break
        started = []
        for event in self.outbox.claim_next(urls, self.hold):
            host = receiver_host(event.url)
            with self._lock:  # held until the host is marked busy: its attempt frees it, never before
                self._busy[host] = (event.url, self._pool.submit(self._send, event, host))
                started.append(self._busy[host][1])
        return started

    def _send(self, event: DueEvent, host: str) -> None:
        try:
            self._attempt(event)
        finally:  # before the future completes: whoever waits on it finds the host free
            with self._lock:
                self._busy.pop(host, None)
            self._wake.set()

    def _attempt(self, event: DueEvent) -> None:
        final = False
        try:
            error = post(
                event.url, event.payload, signed_headers(self.secret, event.id, event.payload),
                self.settings.webhook_timeout, self.allow,
            )  # fmt: skip
        except UnsafeURL as exc:
            error, final = f"refused: {exc}", True
        except RefusedTarget as exc:
            error = f"refused: {exc}"
        try:
            self._record(event, error, final)
        except Exception as exc:  # the database is away: the claim lapses and the event is sent again
            log.warning("webhook_record_failed", event_id=event.id, error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)

    def _record(self, event: DueEvent, error: str | None, final: bool) -> None:
        if error is None:
            self.outbox.delivered(event.id)
            with self._lock:
                self._delivered += 1
            log.info("webhook_delivered", event_id=event.id, type=event.type, job_id=event.job_id, attempt=event.attempts + 1)
            return
        state = self.outbox.attempt_failed(event, error, self.backoff, final=final)
        log.warning(
            "webhook_failed" if state == "failed" else "webhook_retry", event_id=event.id, type=event.type,
            job_id=event.job_id, attempt=event.attempts + 1, error=error,
            **({"next_in_s": round(self.backoff.delay(event.attempts + 1), 1)} if state != "failed" else {}),
        )  # fmt: skip


def start_sender(settings: Settings, registry: Registry, worker_id: str) -> WebhookSender | None:
    """The worker's sender thread, when it has the secret to sign with (else events wait for one that has)."""
    if settings.webhook_secret is None:
        log.info("webhook_sender_off", reason="RERANKQ_WEBHOOK_SECRET not set: this worker sends no webhook events")
        return None
    outbox = WebhookOutbox(settings.database, settings.connect_timeout, check=False)
    return WebhookSender(outbox, registry, settings, worker_id).start()
