"""Webhooks: an event recorded in the transaction that ends a job, delivered by one sender, signed so
that ``standardwebhooks`` (a real HTTP receiver on 127.0.0.1) verifies it, retried with backoff while
the receiver is down, never lost to a worker killed mid-job."""

from __future__ import annotations

import base64
import secrets
import time

import pytest
from sqlalchemy import create_engine, text

from rerankq.settings import Settings
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from rerankq.store.registry import Registry
from rerankq.store.webhooks import WebhookOutbox
from schemas import InlinePair, InlineSpec
from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.polling import wait_for
from tests.webhook_receiver import Receiver, free_port
from tests.workers import WorkerProcess
from worker.webhook_sender import WebhookSender

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()




@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:  # noqa: ANN001
    """Each outbox test on both ledgers (PostgreSQL: a database of this test's own)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        from tests.services import POSTGRES_URL, create_database, drop_database

        url = create_database(POSTGRES_URL)
        request.addfinalizer(lambda: drop_database(POSTGRES_URL, url))
    migrate(url)
    return url


@pytest.fixture()
def ledger(db_url: str) -> Ledger:
    return Ledger(db_url)


def settings_for(url: str, **extra: object) -> Settings:
    return Settings(database_url=url, webhook_secret=SECRET, webhook_retry_backoff=0.3, webhook_timeout=2, **extra)


def sender(url: str, worker_id: str = "w1", **extra: object) -> WebhookSender:
    settings = settings_for(url, **extra)
    return WebhookSender(WebhookOutbox(url), Registry(url), settings, worker_id)


def record_job(
    ledger: Ledger, notify: str | None, n_chunks: int = 2, kind: str = "manifest", window_seconds: float = 3600
) -> tuple[str, list[int]]:
    """A job (a batch's, with its batch row in the same transaction, when ``kind`` is batch)."""
    from rerankq.store.batches import BatchStore

    chunks = [
        NewChunk(InlineSpec(pairs=[InlinePair(query_id=f"q{i}", doc_id="d", query="q", document="d")]).model_dump(mode="json"), 1)
        for i in range(n_chunks)
    ]
    also = BatchStore.batch_recorder(
        endpoint="/v1/rerank", completion_window="1h", window_seconds=window_seconds, metadata=None,
        input_file_id="file-x", lines_total=n_chunks, lines_rejected=0,
    ) if kind == "batch" else None  # fmt: skip
    job_id, messages = ledger.create_job(kind=kind, chunks=chunks, name="nightly", model="m", notify=notify, also=also)
    return job_id, [m.chunk_id for m in messages]


def finish(ledger: Ledger, job_id: str, chunk_ids: list[int], error_in: int | None = None) -> None:
    for i, cid in enumerate(chunk_ids):
        assert ledger.begin_chunk(job_id, cid, "w1", "m") is None
        ledger.finish_chunk(job_id, cid, [ScoreRow(f"q{i}", "d", None if i == error_in else 0.5, "bad" if i == error_in else None)])


def outbox_rows(url: str, job_id: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows_ = conn.execute(text("SELECT id, type, state, attempts FROM webhook_events WHERE job_id=:j"), {"j": job_id}).all()
    engine.dispose()
    return rows_


def test_event_is_recorded_with_the_end_of_the_job_and_only_then(ledger, db_url):
    receiver = Receiver(SECRET)
    job_id, chunk_ids = record_job(ledger, receiver.url)
    finish(ledger, job_id, chunk_ids[:1])
    assert outbox_rows(db_url, job_id) == []  # one chunk still to go: the job has not ended
    finish(ledger, job_id, chunk_ids[1:])
    [(msg_id, kind, state, attempts)] = outbox_rows(db_url, job_id)
    assert (kind, state, attempts) == ("job.completed", "pending", 0) and msg_id.startswith("msg_")
    quiet_id, quiet_chunks = record_job(ledger, None)  # no URL: no event
    finish(ledger, quiet_id, quiet_chunks)
    assert outbox_rows(db_url, quiet_id) == []


def test_signed_delivery_verified_by_standardwebhooks(ledger, db_url):
    receiver = Receiver(SECRET).start()
    try:
        job_id, chunk_ids = record_job(ledger, receiver.url)
        finish(ledger, job_id, chunk_ids, error_in=1)
        assert sender(db_url).run_once() == 1
        [(msg_id, payload)] = receiver.received
        assert receiver.rejected == []
        assert payload["type"] == "job.completed_with_errors" and payload["id"] == msg_id
        data = payload["data"]
        assert (data["id"], data["state"], data["pairs_total"], data["pairs_scored"], data["pairs_failed"]) == (
            job_id, "completed_with_errors", 2, 1, 1,
        )  # fmt: skip
        assert outbox_rows(db_url, job_id)[0][2:] == ("delivered", 1)
        from openai import OpenAI  # the SDK's own verifier accepts the signature too

        event = OpenAI(api_key="unused", webhook_secret=SECRET).webhooks.unwrap(receiver.bodies[0], receiver.headers[0])
        assert event.type == "job.completed_with_errors" and event.data.id == job_id
        assert sender(db_url).run_once() == 0 and len(receiver.received) == 1  # delivered once
        # Another key: the receiver refuses it, so the event is retried, never counted delivered.
        other = Receiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(), port=free_port()).start()
        try:
            job2, chunks2 = record_job(ledger, other.url)
            finish(ledger, job2, chunks2)
            assert sender(db_url).run_once() == 0
            assert other.received == [] and other.rejected == ["No matching signature found"]
            assert outbox_rows(db_url, job2)[0][2:] == ("pending", 1)
        finally:
            other.stop()
    finally:
        receiver.stop()


def test_cancelled_and_all_reused_jobs_notify(ledger, db_url):
    receiver = Receiver(SECRET).start()
    try:
        job_id, _ = record_job(ledger, receiver.url)
        ledger.cancel(job_id)
        ledger.cancel(job_id)  # already cancelled: no second event
        reused, _ = ledger.create_job(kind="manifest", chunks=[], pairs_reused=3, notify=receiver.url)
        assert sender(db_url).run_once() == 2
        assert sorted((p["type"], p["data"]["id"]) for _, p in receiver.received) == sorted(
            [("job.cancelled", job_id), ("job.completed", reused)]
        )
        batch_job, batch_chunks = record_job(ledger, receiver.url, kind="batch")
        finish(ledger, batch_job, batch_chunks)
        sender(db_url).run_once()
        assert receiver.received[-1][1]["type"] == "batch.completed"
        assert receiver.received[-1][1]["data"]["id"] == f"batch_{batch_job}"
    finally:
        receiver.stop()


def test_the_sender_expires_batches_past_their_window(ledger, db_url):
    receiver = Receiver(SECRET).start()
    try:
        job_id, _ = record_job(ledger, receiver.url, kind="batch", window_seconds=-1)
        assert sender(db_url).run_once() == 1
        assert ledger.status(job_id).state == "cancelled"
        [(_, payload)] = receiver.received
        assert (payload["type"], payload["data"]["id"]) == ("batch.expired", f"batch_{job_id}")
    finally:
        receiver.stop()


def test_receiver_down_for_a_while_then_back(ledger, db_url):
    port = free_port()
    receiver = Receiver(SECRET, port=port, statuses=[503])
    job_id, chunk_ids = record_job(ledger, receiver.url)
    finish(ledger, job_id, chunk_ids)
    send = sender(db_url)
    assert send.run_once() == 0  # nothing listens: connection refused
    events = WebhookOutbox(db_url).events(job_id)
    assert events[0]["state"] == "pending" and events[0]["attempts"] == 1
    assert "Connection" in events[0]["last_error"] or "refused" in events[0]["last_error"]
    assert send.run_once() == 0  # not due yet: backoff, not a busy loop
    assert WebhookOutbox(db_url).events(job_id)[0]["attempts"] == 1
    receiver.start()  # back, but answers 503 once
    try:
        wait_for(lambda: send.run_once() or receiver.attempts, 5, "the receiver's first attempt")
        assert receiver.received == [] and WebhookOutbox(db_url).events(job_id)[0]["last_error"] == "HTTP 503"
        wait_for(lambda: send.run_once(), 5, "a delivery")
        event = WebhookOutbox(db_url).events(job_id)[0]
        assert (event["state"], event["attempts"]) == ("delivered", 3)
        assert [msg for msg, _ in receiver.received] == [event["id"]]  # one event, one webhook-id, every attempt
    finally:
        receiver.stop()


def test_gives_up_after_retry_for(ledger, db_url):
    job_id, chunk_ids = record_job(ledger, f"http://127.0.0.1:{free_port()}/")
    finish(ledger, job_id, chunk_ids)
    time.sleep(0.3)
    sender(db_url, webhook_retry_for=0.1).run_once()
    assert WebhookOutbox(db_url).events(job_id)[0]["state"] == "failed"


def test_one_sender_at_a_time(ledger, db_url):
    receiver = Receiver(SECRET).start()
    try:
        for _ in range(3):
            job_id, chunk_ids = record_job(ledger, receiver.url)
            finish(ledger, job_id, chunk_ids)
        other = sender(db_url, "w2")
        assert other.registry.acquire_lease("webhooks", "w2", 60)
        assert sender(db_url, "w1").run_once() == 0  # w2 holds the lease
        assert other.run_once() == 3
        # Claims: an event claimed by one outbox is not due for another until its hold lapses.
        job_id, chunk_ids = record_job(ledger, receiver.url)
        finish(ledger, job_id, chunk_ids)
        assert len(WebhookOutbox(db_url).claim_due(10, hold=60)) == 1
        assert WebhookOutbox(db_url).claim_due(10, hold=60) == []
    finally:
        receiver.stop()
    assert len({msg for msg, _ in receiver.received}) == len(receiver.received) == 3


def test_secret_and_url_are_checked_up_front(sqlite_url, tmp_path):
    with pytest.raises(ValueError, match="whsec_"):
        Settings(webhook_secret="not-a-secret")
    with pytest.raises(ValueError, match="bytes of key"):
        Settings(webhook_secret="whsec_" + base64.b64encode(b"short").decode())
    migrate(sqlite_url)
    manifest = write_manifest(tmp_path / "m.parquet", rows(2, 3, seed=1))
    env = {"RERANKQ_DATABASE_URL": sqlite_url, "RERANKQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    result = producer("submit", str(manifest), "--notify", "ftp://example.com/x", env=env)
    assert result.returncode == 3 and "--notify: 'ftp://example.com/x' is not an http:// or https:// URL" in result.stderr


# --- real workers -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_job_still_notifies_once(tiny_model, pg_url, redis_url, tmp_path):
    """Worker A dies holding a chunk; B takes it back, ends the job and, holding the webhooks lease once
    A's lapses, sends the one event. Every worker runs a sender: only one posts it."""
    receiver = Receiver(SECRET).start()
    migrate(pg_url)
    env = base_env(
        tiny_model, pg_url, redis_url, RERANKQ_ENGINE="tests.slow_engine:factory", RERANKQ_TEST_SECONDS_PER_CALL="1",
        RERANKQ_WORKER_DEAD_AFTER=6, RERANKQ_HEARTBEAT_INTERVAL=1, RERANKQ_CHUNKS_IN_FLIGHT=1, RERANKQ_PIPELINE_PAIRS=64,
        RERANKQ_WEBHOOK_SECRET=SECRET, RERANKQ_WEBHOOK_POLL_INTERVAL=0.5, RERANKQ_MAX_LENGTH=256,
    )  # fmt: skip
    engine = create_engine(pg_url)
    a = WorkerProcess(env, tmp_path / "a.log").start()
    b = WorkerProcess(env, tmp_path / "b.log")
    try:
        a.wait_ready(120)
        b.start().wait_ready(120)  # one after the other: two first records of one scoring context can collide
        manifest = write_manifest(tmp_path / "m.parquet", rows(12, 64, seed=3))
        out = producer("submit", str(manifest), "--chunk-size", "128", "--notify", receiver.url, env=env, check=True)
        job_id = out.stdout.strip().splitlines()[-1]

        def running_on_a():  # noqa: ANN202
            with engine.connect() as conn:
                return conn.execute(
                    text("SELECT id FROM chunks WHERE job_id=:j AND state='running' AND worker LIKE :w"),
                    {"j": job_id, "w": f"%:{a.proc.pid}:%"},
                ).first()

        victim = wait_for(running_on_a, 60, "a chunk running on worker A")
        a.kill9()
        wait_for(lambda: receiver.received, 180, "the job's webhook")
        time.sleep(3)  # a second sender, if there were one, would have posted by now
        with engine.connect() as conn:
            state, attempts = conn.execute(
                text("SELECT j.state, c.attempts FROM jobs j JOIN chunks c ON c.job_id = j.id WHERE c.id=:c"), {"c": victim.id}
            ).one()
        assert (state, attempts) == ("completed", 2)
        assert receiver.rejected == [] and receiver.types() == ["job.completed"]
        assert receiver.received[0][1]["data"]["pairs_scored"] == 12 * 64
        [event] = WebhookOutbox(pg_url).events(job_id)
        assert (event["state"], event["attempts"], event["id"]) == ("delivered", 1, receiver.received[0][0])
        assert "webhook_delivered" in b.log()
    finally:
        for w in (a, b):
            if w.proc and w.proc.poll() is None:
                w.terminate(30)
        engine.dispose()
        receiver.stop()


def test_a_batch_and_its_job_are_recorded_in_one_transaction(ledger, db_url):
    """A failure while the batch row is written leaves neither: no job would be scored without its batch."""
    from rerankq.store.models import Job

    def fails(s, job_id):  # noqa: ANN001, ANN202
        raise RuntimeError("the batch row could not be written")

    chunk = NewChunk(InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json"), 1)
    with ledger.session() as s:
        before = s.query(Job).count()
    with pytest.raises(RuntimeError, match="batch row"):
        ledger.create_job(kind="batch", chunks=[chunk], model="m", also=fails)
    with ledger.session() as s:
        assert s.query(Job).count() == before
    job_id, _ = record_job(ledger, None, kind="batch")
    from rerankq.store.batches import BatchStore

    assert BatchStore(db_url).batch(f"batch_{job_id}") is not None
