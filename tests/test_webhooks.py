"""Webhooks: an event recorded in the transaction that ends a job, delivered by one sender, signed so
that ``standardwebhooks`` (a real HTTP receiver on 127.0.0.1) verifies it, retried with backoff while
the receiver is down, never lost to a worker killed mid-job."""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import ssl
import time

import pytest
from sqlalchemy import create_engine, text

from rerankq.settings import Settings
from rerankq.store.batches import BatchStore
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from rerankq.store.registry import Registry
from rerankq.store.webhooks import WebhookOutbox
from schemas import InlinePair, InlineSpec
from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.polling import wait_for
from tests.webhook_receiver import Gauge, Hanging, Receiver, free_port
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


LOOPBACK = "127.0.0.0/8"  # the receivers here are on loopback: allowed explicitly, as an operator would


def settings_for(url: str, **extra: object) -> Settings:
    options = {"webhook_retry_backoff": 0.3, "webhook_timeout": 2, "webhook_allow": [LOOPBACK], **extra}
    return Settings(database_url=url, webhook_secret=SECRET, **options)


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
        assert sender(db_url).run_once() == 0  # a batch's event waits for its output files
        BatchStore(db_url).finalized(f"batch_{batch_job}", None, None, 2, 0)
        assert sender(db_url).run_once() == 1
        assert receiver.received[-1][1]["type"] == "batch.completed"
        assert receiver.received[-1][1]["data"]["id"] == f"batch_{batch_job}"
    finally:
        receiver.stop()


def test_the_sender_expires_batches_past_their_window(ledger, db_url):
    receiver = Receiver(SECRET).start()
    try:
        job_id, _ = record_job(ledger, receiver.url, kind="batch", window_seconds=-1)
        assert sender(db_url).run_once() == 0  # expired; its event waits for the output files
        assert ledger.status(job_id).state == "cancelled"
        BatchStore(db_url).finalized(f"batch_{job_id}", None, None, 0, 2)
        assert sender(db_url).run_once() == 1
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
        assert len(WebhookOutbox(db_url).claim_next([receiver.url], hold=60)) == 1
        assert WebhookOutbox(db_url).claim_next([receiver.url], hold=60) == []
        assert WebhookOutbox(db_url).due_urls(10) == []
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
    assert result.returncode == 3 and "notify: 'ftp://example.com/x' is not an http:// or https:// URL" in result.stderr


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
        RERANKQ_WEBHOOK_ALLOW=LOOPBACK,
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


# --- egress: where webhooks may go (rerankq/egress.py, worker/webhook_post.py) -------------------------
LOOPBACK_FORMS = [
    "http://127.0.0.1:6379/", "http://localhost:8080/hook", "http://2130706433/", "http://[::1]/", "http://0x7f.1/",
    "http://0177.0.0.1/", "http://127.1/", "http://[::ffff:127.0.0.1]/",
]  # fmt: skip
OTHER_FORMS = [
    ("http://0.0.0.0/", "unspecified"), ("http://[::]/", "unspecified"), ("http://10.1.2.3/", "private"),
    ("http://192.168.0.1/", "private"), ("http://[fc00::1]/", "private"), ("http://169.254.169.254/latest", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"), ("http://224.0.0.1/", "multicast"), ("http://100.64.0.1/", "non-global"),
    ("http://240.0.0.1/", "reserved"), ("http://[2002:7f00:1::]/", r"loopback \(embedded 127.0.0.1\)"),
]  # fmt: skip


@pytest.mark.parametrize("url", LOOPBACK_FORMS)
def test_loopback_in_any_spelling_is_refused_unless_allowed(url):
    from rerankq.egress import Allow, RefusedTarget, check_webhook_url

    with pytest.raises(RefusedTarget, match="is a loopback .*address: refused unless RERANKQ_WEBHOOK_ALLOW lists it"):
        check_webhook_url(url, Allow())
    assert check_webhook_url(url, Allow.parse([LOOPBACK, "::1"])) == url


@pytest.mark.parametrize(("url", "kind"), OTHER_FORMS)
def test_private_link_local_multicast_reserved_refused_unless_allowed(url, kind):
    from rerankq.egress import Allow, RefusedTarget, check_webhook_url

    with pytest.raises(RefusedTarget, match=f"is an? {kind} address"):
        check_webhook_url(url, Allow.parse([LOOPBACK]))
    everything = Allow.parse(["0.0.0.0/0", "::/0"])
    assert check_webhook_url(url, everything) == url
    assert check_webhook_url("http://1.1.1.1/hook", Allow()) == "http://1.1.1.1/hook"  # public: no allow-list needed


def test_allow_list_setting_takes_hosts_and_cidrs(monkeypatch):
    from rerankq.egress import Allow, RefusedTarget, check_webhook_url

    monkeypatch.setenv("RERANKQ_WEBHOOK_ALLOW", "10.0.0.0/8, hooks.internal ,[::1]")
    allow = Allow.parse(Settings().webhook_allow)
    assert check_webhook_url("http://10.9.9.9/x", allow) and check_webhook_url("http://[::1]:9/", allow)
    assert check_webhook_url("http://[::ffff:10.1.1.1]/", allow)  # the mapped form of an allowed address
    assert check_webhook_url("https://HOOKS.internal./x", allow)  # a name: whatever it resolves to
    with pytest.raises(RefusedTarget, match="127.0.0.1 is a loopback address"):
        check_webhook_url("http://127.0.0.1/", allow)
    with pytest.raises(ValueError, match="RERANKQ_WEBHOOK_ALLOW: 'not a host!' is neither"):
        Settings(webhook_allow="not a host!,10.0.0.0/8")


def test_submission_refuses_internal_targets_and_credentials(sqlite_url, tmp_path):
    """The CLI (and so the Python API, which it calls) and RERANKQ_WEBHOOK_URL: refused before anything is recorded."""
    migrate(sqlite_url)
    manifest = write_manifest(tmp_path / "m.parquet", rows(2, 3, seed=1))
    env = {"RERANKQ_DATABASE_URL": sqlite_url, "RERANKQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    result = producer("submit", str(manifest), "--notify", "http://2130706433:6379/", env=env)
    assert result.returncode == 3, result.stderr
    assert "notify: 'http://2130706433:6379/': 2130706433 resolves to 127.0.0.1, which is a loopback address" in result.stderr
    result = producer("submit", str(manifest), "--notify", "https://user:hunter2@1.1.1.1/x", env=env)
    assert result.returncode == 3 and "notify: 'https://***@1.1.1.1/x' carries credentials" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    result = producer("submit", str(manifest), env={**env, "RERANKQ_WEBHOOK_URL": "http://localhost:9/"})
    assert result.returncode == 3 and "RERANKQ_WEBHOOK_URL: 'http://localhost:9/': localhost resolves to" in result.stderr
    # Allowed: the URL passes, and the submission goes on to the next check (the broker, away here).
    result = producer("submit", str(manifest), "--notify", "http://localhost:9/", env={**env, "RERANKQ_WEBHOOK_ALLOW": LOOPBACK})
    assert "notify" not in result.stderr and "broker" in result.stderr.lower(), result.stderr
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
    engine.dispose()


def test_service_refuses_internal_notify_for_jobs_and_batches(sqlite_url, tmp_path, redis_url, tiny_model):
    from fastapi.testclient import TestClient

    from producer.service import create_app

    migrate(sqlite_url)
    settings = Settings(
        database_url=sqlite_url, broker_url=redis_url, model=str(tiny_model), files_dir=tmp_path / "files",
        manifest_roots=[str(tmp_path)],
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/jobs", json={"manifest": str(tmp_path / "none.parquet"), "notify": "http://[::1]:6379/"})
        assert r.status_code == 400 and "notify: 'http://[::1]:6379/': ::1 is a loopback address" in r.json()["detail"]
        line = {"custom_id": "a", "method": "POST", "url": "/v1/rerank", "body": {"query": "q", "documents": ["d"]}}
        upload = c.post("/v1/files", files={"file": ("b.jsonl", (json.dumps(line) + "\n").encode())}, data={"purpose": "batch"})
        assert upload.status_code == 200, upload.text
        body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/rerank", "completion_window": "24h"}
        r = c.post("/v1/batches", json={**body, "notify": "http://admin:pw@hooks.example/x"})
        assert r.status_code == 400 and "notify: 'http://***@hooks.example/x' carries credentials" in r.json()["detail"]
        r = c.post("/v1/batches", json={**body, "notify": "http://169.254.169.254/latest/meta-data"})
        assert r.status_code == 400 and "169.254.169.254 is a link-local address" in r.json()["detail"]
        assert c.get("/v1/batches").json()["data"] == []


def test_dns_rebinding_is_refused_at_send_time(ledger, db_url, monkeypatch):
    """The name was public at submission and points at loopback by the time the event goes: nothing is sent."""
    from producer.submission import notify_url
    from rerankq import egress

    receiver = Receiver(SECRET).start()
    answers = {"hooks.rebind.test": "1.1.1.1"}
    monkeypatch.setattr(egress, "resolve", lambda host, port: [ipaddress.ip_address(answers[host])])
    try:
        url = notify_url(f"http://hooks.rebind.test:{receiver.port}/hooks/rerankq", Settings(database_url=db_url))
        job_id, chunk_ids = record_job(ledger, url)
        finish(ledger, job_id, chunk_ids)
        answers["hooks.rebind.test"] = "127.0.0.1"  # rebound
        # A retry a minute away: run_once sends all that is due, and with the suite's 0.3 s backoff a loaded machine
        # made the retry due within the same call (two attempts seen on a clean run).
        assert sender(db_url, webhook_allow=[], webhook_retry_backoff=60).run_once() == 0
        [event] = WebhookOutbox(db_url).events(job_id)
        assert (event["state"], event["attempts"]) == ("pending", 1)  # retried: the name may move back
        assert "refused: hooks.rebind.test resolves to 127.0.0.1, which is a loopback address" in event["last_error"]
        assert receiver.requests == []
    finally:
        receiver.stop()


def test_the_connection_goes_to_the_checked_address(ledger, db_url, monkeypatch):
    """One resolution per attempt, checked, then connected to as is: the name is unknown to the system
    resolver, so only the pinned address can reach the receiver; Host still names it."""
    from rerankq import egress

    receiver = Receiver(SECRET).start()
    looked_up: list[str] = []
    monkeypatch.setattr(egress, "resolve", lambda host, port: looked_up.append(host) or [ipaddress.ip_address("127.0.0.1")])
    try:
        url = f"http://hooks.pinned.test:{receiver.port}/hooks/rerankq"
        job_id, chunk_ids = record_job(ledger, url)
        finish(ledger, job_id, chunk_ids)
        assert sender(db_url).run_once() == 1
        assert looked_up == ["hooks.pinned.test"]
        assert receiver.headers[0]["host"] == f"hooks.pinned.test:{receiver.port}"
    finally:
        receiver.stop()


def test_https_keeps_the_name_for_sni_and_the_certificate(monkeypatch, tmp_path):
    from rerankq import egress
    from rerankq.egress import Allow
    from rerankq.webhook_signing import signed_headers
    from worker.webhook_post import post

    cert, key = self_signed(tmp_path, "hooks.tls.test")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    receiver = Receiver(SECRET, tls=server).start()
    client = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(egress, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
    headers = signed_headers(SECRET, "msg_tls", "{}")
    try:
        url = f"https://hooks.tls.test:{receiver.port}/hooks/rerankq"
        assert post(url, "{}", headers, 5, Allow.parse(["hooks.tls.test"]), context=client) is None
        assert receiver.sni == ["hooks.tls.test"] and receiver.headers[0]["host"] == f"hooks.tls.test:{receiver.port}"
        other = f"https://hooks.other.test:{receiver.port}/hooks/rerankq"  # same address, a name the certificate lacks
        error = post(other, "{}", headers, 5, Allow.parse([LOOPBACK]), context=client)
        assert error is not None and "certificate" in error.lower() and len(receiver.received) == 1
    finally:
        receiver.stop()


def self_signed(tmp_path, name: str):  # noqa: ANN001, ANN201
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now_ = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now_ - dt.timedelta(minutes=5))
        .not_valid_after(now_ + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_redirects_are_not_followed_nor_delivered(ledger, db_url):
    """A 302 to an internal address: no request reaches it, the event is not delivered, the error says where."""
    internal = Receiver(SECRET).start()
    redirecting = Receiver(SECRET, redirect_to=f"http://127.0.0.1:{internal.port}/admin?x=1").start()
    to_https = Receiver(SECRET, redirect_to="https://hooks.example/rerankq").start()
    try:
        job_id, chunk_ids = record_job(ledger, redirecting.url)
        finish(ledger, job_id, chunk_ids)
        job2, chunks2 = record_job(ledger, to_https.url)
        finish(ledger, job2, chunks2)
        assert sender(db_url).run_once() == 0
        assert internal.requests == [] and redirecting.attempts == 1 and to_https.attempts == 1
        [event] = WebhookOutbox(db_url).events(job_id)
        assert (event["state"], event["attempts"]) == ("pending", 1)
        assert event["last_error"] == (
            f"HTTP 302: a redirect to 'http://127.0.0.1:{internal.port}/admin?x=1', not followed "
            "(only a 2xx from the URL delivers)"
        )
        [event2] = WebhookOutbox(db_url).events(job2)  # http -> https: a visible failure, not a silent loss
        assert event2["state"] == "pending" and "redirect to 'https://hooks.example/rerankq'" in event2["last_error"]
    finally:
        for r in (internal, redirecting, to_https):
            r.stop()


def test_credentials_in_an_old_row_fail_at_once(ledger, db_url):
    """A URL recorded before the submission check: the sender refuses it for good, without the password."""
    receiver = Receiver(SECRET).start()
    try:
        job_id, chunk_ids = record_job(ledger, f"http://user:hunter2@127.0.0.1:{receiver.port}/hooks/rerankq")
        finish(ledger, job_id, chunk_ids)
        assert sender(db_url).run_once() == 0
        [event] = WebhookOutbox(db_url).events(job_id)
        assert (event["state"], event["attempts"]) == ("failed", 1)
        assert "carries credentials" in event["last_error"] and "hunter2" not in event["last_error"]
        assert receiver.requests == []
    finally:
        receiver.stop()


def test_slow_receivers_do_not_delay_a_good_one(sqlite_url):
    """Five receivers that never answer (one with two events), each on a host of its own, and one good
    receiver whose event is the last recorded: it arrives before even one stuck attempt has timed out,
    and a stuck host never has two attempts at once."""
    migrate(sqlite_url)
    ledger = Ledger(sqlite_url)
    stuck = [Hanging(f"127.0.0.{i}").start() for i in range(2, 7)]
    good = Receiver(SECRET).start()
    for url in [h.url for h in stuck] + [stuck[0].url, good.url]:
        job_id, chunk_ids = record_job(ledger, url, n_chunks=1)
        finish(ledger, job_id, chunk_ids)
    timeout = 3.0
    send = sender(sqlite_url, webhook_timeout=timeout, webhook_poll_interval=0.2, webhook_retry_backoff=600)
    started = time.monotonic()
    send.start()
    try:
        wait_for(lambda: good.received, 2 * timeout, "the good receiver's event")
        assert good.arrived[0] - started < timeout  # sent one after the other, it would have waited 6 x 3 s
        wait_for(lambda: stuck[0].connections == 2, 3 * timeout, "the stuck host's second event")
        assert [h.most_at_once for h in stuck] == [1] * 5
    finally:
        send.stop()
        good.stop()
        for h in stuck:
            h.stop()


def test_attempts_in_flight_are_bounded(sqlite_url):
    migrate(sqlite_url)
    ledger = Ledger(sqlite_url)
    gauge = Gauge()
    stuck = [Hanging(f"127.0.0.{i}", gauge).start() for i in range(2, 6)]
    for h in stuck:
        job_id, chunk_ids = record_job(ledger, h.url, n_chunks=1)
        finish(ledger, job_id, chunk_ids)
    try:
        assert sender(sqlite_url, webhook_timeout=1, webhook_concurrency=2, webhook_retry_backoff=600).run_once() == 0
        assert gauge.total == 4 and gauge.most == 2
        errors = {e["last_error"] for h in stuck for e in [WebhookOutbox(sqlite_url).events(job_for(sqlite_url, h.url))[0]]}
        assert errors == {"timeout: no complete answer within 1 s"}
    finally:
        for h in stuck:
            h.stop()


def job_for(url: str, notify: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        job_id = conn.execute(text("SELECT id FROM jobs WHERE notify=:n"), {"n": notify}).scalar_one()
    engine.dispose()
    return job_id
