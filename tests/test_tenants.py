"""Keys, tenants, the audit trail, console sessions, cross-site requests and manifest roots (issue 25):
each attempt an attacker made on main, replayed on loopback against the real service, real Redis, real
SQLite and PostgreSQL ledgers and a real browser, bounded in count and time."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rerankq.settings import Settings
from rerankq.store.keys import KeyStore
from tests.conftest import migrate, producer
from tests.corpus import rows, write_manifest
from tests.services import free_port, redis_client, wait_port
from tests.test_service_console import browser, serve  # noqa: F401 - the module's browser fixture

LEGACY = "legacy-Adm1n-key"


@pytest.fixture()
def settings(tmp_path: Path, redis_url: str, tiny_model: Path) -> Settings:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(db)
    redis_client(redis_url).flushdb()
    data = tmp_path / "data"
    data.mkdir()
    return Settings(
        database_url=db, broker_url=redis_url, model=str(tiny_model), max_length=512, manifest_roots=[str(data)],
        files_dir=tmp_path / "files",
    )  # fmt: skip


def client(settings: Settings, **overrides) -> TestClient:
    from producer.service import create_app

    return TestClient(create_app(Settings(**{**dict(settings), **overrides})))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_of(settings: Settings) -> KeyStore:
    return KeyStore(settings.database)


def env_of(settings: Settings) -> dict[str, str]:
    return {"RERANKQ_DATABASE_URL": settings.database, "RERANKQ_BROKER_URL": settings.broker, "RERANKQ_MODEL": settings.model}


def manifest(settings: Settings, name: str, seed: int = 1) -> str:
    return str(write_manifest(Path(settings.manifest_roots[0]) / f"{name}.parquet", rows(n_queries=2, docs_per_query=3, seed=seed)))


def batch_file(name: str) -> bytes:
    line = {"custom_id": "c1", "method": "POST", "url": "/v1/rerank", "body": {"query": f"q {name}", "documents": ["a", "b"]}}
    return (json.dumps(line) + "\n").encode()


# --- keys --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path, pg_url) -> str:
    url = f"sqlite:///{tmp_path / 'keys.db'}" if request.param == "sqlite" else pg_url
    migrate(url)
    return url


def test_keys_are_created_listed_and_revoked_from_the_cli_and_kept_only_as_digests(tmp_path):
    ledger_url = f"sqlite:///{tmp_path / 'keys.db'}"  # PostgreSQL: the store-level test below
    migrate(ledger_url)
    env = {"RERANKQ_DATABASE_URL": ledger_url}
    made = producer("keys", "create", "search-team", "--scope", "read", "--scope", "submit", "--tenant", "search", env=env, check=True)
    key = made.stdout.strip()
    assert re.fullmatch(r"rq_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key), made.stdout
    key_id = key.split("_")[1]
    assert f"key {key_id} (search-team): tenant search, scopes read, submit" in made.stderr and key not in made.stderr
    admin = producer("keys", "create", "ops", "--scope", "admin", env=env, check=True).stdout.strip()
    again = producer("keys", "create", "search-team", env=env)
    assert again.returncode == 3 and "a key named 'search-team' exists already" in again.stderr
    bad = producer("keys", "create", "x", "--scope", "write", env=env)
    assert bad.returncode == 3 and "choose among read, submit, admin" in bad.stderr

    listed = json.loads(producer("keys", "list", "--json", env=env, check=True).stdout)
    assert [(k["id"], k["name"], k["tenant"], k["scopes"]) for k in listed] == [
        (key_id, "search-team", "search", ["read", "submit"]), (admin.split("_")[1], "ops", "ops", ["admin"]),
    ]  # fmt: skip
    table = producer("keys", "list", env={**env, "COLUMNS": "200"}, check=True).stdout
    assert key_id in table and key not in table and key.split("_", 2)[2] not in table

    store = KeyStore(ledger_url)
    with store.session() as s:
        from rerankq.store.models import ApiKey

        row = s.get(ApiKey, key_id)
        assert row.digest == hashlib.sha256(key.encode()).digest()
    actor = store.authenticate(key)
    assert actor is not None and actor.tenant == "search" and not actor.admin and actor.may("submit")
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("rq_" + key_id + "_") is None and store.authenticate("") is None

    producer("keys", "revoke", "search-team", env=env, check=True)
    assert store.authenticate(key) is None
    assert [k["name"] for k in json.loads(producer("keys", "list", "--json", env=env, check=True).stdout)] == ["ops"]
    assert producer("keys", "revoke", "nobody", env=env).returncode == 3
    trail = json.loads(producer("audit", "--json", env=env, check=True).stdout)
    assert [(e["action"], e["object_id"]) for e in trail] == [
        ("key.revoke", key_id), ("key.create", admin.split("_")[1]), ("key.create", key_id)
    ]
    assert all(e["key_name"].startswith("cli:") for e in trail)
    kept = producer("prune", "--audit-older-than", "1d", "--dry-run", env=env, check=True).stdout
    assert kept.startswith("would delete 0 audit event(s) from before ")
    nothing = producer("prune", env=env)
    assert nothing.returncode == 3 and "say what to prune: --jobs-older-than AGE, --audit-older-than AGE" in nothing.stderr


# --- tenants -----------------------------------------------------------------------------------------


def test_what_a_request_makes_is_its_tenants_and_a_batchs_output_files_are_its_batchs(ledger_url):
    """On both databases: the acting key's tenant owns the job, the batch and the upload; the output files
    written later (by whoever looks) belong to the batch's tenant; what nobody's request makes is no tenant's."""
    from rerankq.store.actor import Actor, acting
    from rerankq.store.batches import BatchStore, FileRow, new_file_id
    from rerankq.store.clock import now
    from rerankq.store.ledger import Ledger

    ledger, batches = Ledger(ledger_url), BatchStore(ledger_url)
    alice = Actor("k1", "alice", "alice", frozenset({"read", "submit"}))
    bob = Actor("k2", "bob", "bob", frozenset({"read", "submit"}))
    token = acting.set(alice)
    try:
        upload = batches.add_file("batch", "in.jsonl", 10, "in.jsonl")
        recorder = batches.batch_recorder(
            endpoint="/v1/rerank", completion_window="24h", window_seconds=3600, metadata=None, input_file_id=upload.id,
            lines_total=1, lines_rejected=0,
        )  # fmt: skip
        job_id, _ = ledger.create_job(kind="batch", chunks=[], also=recorder)
    finally:
        acting.reset(token)
    operators, _ = ledger.create_job(kind="inline", chunks=[])
    batch = batches.batch(job_id)
    out = FileRow(new_file_id(), "batch_output", "out.jsonl", 5, "out.jsonl", now())
    batches.finalized(batch.id, out, None, 1, 0)
    assert [j.job_id for j in ledger.list_jobs(actor=alice)] == [job_id] and ledger.list_jobs(actor=bob) == []
    assert {j.job_id for j in ledger.list_jobs()} == {job_id, operators}
    assert {f.id for f in batches.files(actor=alice)} == {out.id, upload.id}
    assert batches.files(actor=bob) == [] and batches.file(out.id, bob) is None and batches.batch(batch.id, bob) is None
    assert batches.batch(batch.id, alice) is not None and [b.id for b in batches.batches(actor=alice)] == [batch.id]
    assert ledger.resolve_job(job_id[:4], actor=alice) == job_id
    with pytest.raises(Exception, match="no job"):
        ledger.resolve_job(job_id[:4], actor=bob)
    with pytest.raises(Exception, match="no job"):
        ledger.resolve_job(operators, actor=alice)


def test_keys_sessions_and_the_audit_trail_in_the_ledger(ledger_url):
    """On both databases: digests only, revoked keys and their sessions end, expired sessions are nothing."""
    from rerankq.store.audit import AuditLog
    from rerankq.store.clock import now
    from rerankq.store.keys import KeyError_, env_actor

    store, trail = KeyStore(ledger_url), AuditLog(ledger_url)
    assert not store.any_key()
    key, row = store.create_key("team-a", ["submit", "read"], tenant="a")
    assert store.any_key() and row.scopes == ["read", "submit"] and key.startswith(f"rq_{row.id}_")
    with pytest.raises(KeyError_, match="exists already"):
        store.create_key("team-a", ["read"])
    with pytest.raises(KeyError_, match="letters, digits"):
        store.create_key("a b", ["read"])
    actor = store.authenticate(key)
    assert (actor.key_id, actor.name, actor.tenant, actor.scopes) == (row.id, "team-a", "a", frozenset({"read", "submit"}))
    token = store.open_session(row.id, 3600)
    short = store.open_session(row.id, 0.001)
    assert store.session_actor(token, None) == actor and store.session_actor(key, None) is None
    time.sleep(0.01)
    assert store.session_actor(short, None) is None
    legacy = store.open_session(env_actor(LEGACY).key_id, 3600)
    assert store.session_actor(legacy, LEGACY) == env_actor(LEGACY) and store.session_actor(legacy, "another") is None
    store.close_session(legacy)
    assert store.session_actor(legacy, LEGACY) is None
    trail.record(actor, "job.cancel", "j1", "127.0.0.1")
    store.revoke(row.id)
    assert store.authenticate(key) is None and store.session_actor(token, None) is None and not store.any_key()
    assert [k.name for k in store.keys(revoked=True)] == ["team-a"] and store.keys() == []
    events = trail.events()
    assert [(e.action, e.object_id, e.key_id, e.tenant, e.client) for e in events] == [("job.cancel", "j1", row.id, "a", "127.0.0.1")]
    assert trail.events(viewer=actor) == events and trail.events(tenant="b") == []
    trail.record(actor, "job.submit", "j0", None)
    with trail.session.begin() as s:  # an event from 400 days ago
        from sqlalchemy import update

        from rerankq.store.models import AuditEvent

        s.execute(update(AuditEvent).where(AuditEvent.object_id == "j0").values(at=now() - timedelta(days=400)))
    assert trail.prune(365 * 86400, dry_run=True)[0] == 1 and len(trail.events()) == 2
    assert trail.prune(365 * 86400)[0] == 1 and trail.events() == events  # only the old one went



def test_a_key_sees_and_changes_only_its_tenants_jobs_batches_and_files(settings):
    """Another tenant's job, batch or file is 404 with the very words of an unknown id; admin sees all."""
    store = keys_of(settings)
    alice, _ = store.create_key("alice", ["read", "submit"])
    bob, _ = store.create_key("bob", ["read", "submit"])
    root, _ = store.create_key("root", ["admin"])
    with client(settings) as c:
        job = c.post("/v1/jobs", json={"manifest": manifest(settings, "a")}, headers=bearer(alice))
        assert job.status_code == 201, job.text
        job_id = job.json()["job_id"]
        up = c.post("/v1/files", files={"file": ("a.jsonl", batch_file("a"))}, data={"purpose": "batch"}, headers=bearer(alice))
        assert up.status_code == 200, up.text
        file_id = up.json()["id"]
        batch = c.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/rerank"}, headers=bearer(alice))
        assert batch.status_code == 200, batch.text
        batch_id = batch.json()["id"]

        def ids(key: str) -> tuple[list, list, list]:
            jobs = [j["job_id"] for j in c.get("/v1/jobs", headers=bearer(key)).json()]
            batches = [b["id"] for b in c.get("/v1/batches", headers=bearer(key)).json()["data"]]
            files = [f["id"] for f in c.get("/v1/files", headers=bearer(key)).json()["data"]]
            return jobs, batches, files

        a_jobs, a_batches, a_files = ids(alice)
        assert job_id in a_jobs and len(a_jobs) == 2 and a_batches == [batch_id] and a_files == [file_id]  # the batch's job too
        assert ids(bob) == ([], [], [])
        assert ids(root) == ids(alice)

        unknown = c.get("/v1/jobs/ffffffff-0000-0000-0000-000000000000", headers=bearer(bob)).json()["detail"]
        for method, path, words in [
            ("get", f"/v1/jobs/{job_id}", f"no job {job_id!r} in the ledger"),
            ("get", f"/v1/jobs/{job_id[:6]}", f"no job {job_id[:6]!r} in the ledger"),
            ("get", f"/v1/jobs/{job_id}/export", f"no job {job_id!r}"),
            ("get", f"/v1/jobs/{job_id}/throughput", f"no job {job_id!r}"),
            ("get", f"/v1/jobs/{job_id}/queries/q0000", f"no job {job_id!r}"),
            ("post", f"/v1/jobs/{job_id}/cancel", f"no job {job_id!r}"),
            ("get", f"/jobs/{job_id}", f"no job {job_id!r}"),
            ("get", f"/v1/batches/{batch_id}", f"no batch {batch_id!r}"),
            ("post", f"/v1/batches/{batch_id}/cancel", f"no batch {batch_id!r}"),
            ("get", f"/v1/files/{file_id}", f"no file {file_id!r}"),
            ("get", f"/v1/files/{file_id}/content", f"no file {file_id!r}"),
            ("delete", f"/v1/files/{file_id}", f"no file {file_id!r}"),
        ]:  # fmt: skip
            r = getattr(c, method)(path, headers=bearer(bob))
            assert r.status_code == 404 and words in r.json()["detail"], (path, r.text)
        assert unknown.replace("ffffffff-0000-0000-0000-000000000000", job_id) == f"no job {job_id!r} in the ledger (see `producer list`)"
        other_file = c.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/rerank"}, headers=bearer(bob))
        assert other_file.status_code == 404 and f"no file {file_id!r}" in other_file.json()["detail"]
        assert c.get(f"/v1/jobs/{job_id}", headers=bearer(alice)).json()["state"] == "queued"  # bob changed nothing

        # the owner does all of it, by prefix too; admin sees and cancels any tenant's
        assert c.get(f"/v1/jobs/{job_id[:6]}", headers=bearer(alice)).json()["job_id"] == job_id
        assert c.get(f"/v1/files/{file_id}/content", headers=bearer(alice)).content == batch_file("a")
        assert c.post(f"/v1/batches/{batch_id}/cancel", headers=bearer(alice)).status_code == 200
        assert c.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(root)).json()["state"] == "cancelled"
        assert c.get(f"/v1/files/{file_id}", headers=bearer(root)).status_code == 200

        # a read key reads, a submit key does not read the audit trail
        reader, _ = store.create_key("reader", ["read"], tenant="alice")
        assert job_id in [j["job_id"] for j in c.get("/v1/jobs", headers=bearer(reader)).json()]
        refused = c.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(reader))
        assert refused.status_code == 403 and "lacks the 'submit' scope" in refused.json()["detail"]
        assert c.get("/v1/audit", headers=bearer(alice)).status_code == 403

        trail = c.get("/v1/audit", headers=bearer(root)).json()
        done = [(e["action"], e["object_id"], e["key_name"], e["tenant"]) for e in reversed(trail)]
        assert done == [
            ("job.submit", job_id, "alice", "alice"), ("file.upload", file_id, "alice", "alice"),
            ("batch.create", batch_id, "alice", "alice"), ("batch.cancel", batch_id, "alice", "alice"),
            ("job.cancel", job_id, "root", "root"),
        ]  # fmt: skip
        assert all(e["client"] == "testclient" and e["key_id"] for e in trail)
        assert c.delete(f"/v1/files/{file_id}", headers=bearer(alice)).status_code in (200, 409)


def test_rerankq_api_key_stays_one_admin_key_and_what_the_cli_makes_is_the_operators(settings):
    from producer.submission import submit_manifest

    cli_job = submit_manifest(manifest(settings, "cli"), settings=settings)  # no tenant: the operator's
    alice, _ = keys_of(settings).create_key("alice", ["read", "submit"])
    with client(settings, api_key=LEGACY) as c:
        assert [j["job_id"] for j in c.get("/v1/jobs", headers=bearer(LEGACY)).json()] == [cli_job]
        assert c.get("/v1/jobs", headers=bearer(alice)).json() == []
        assert c.get(f"/v1/jobs/{cli_job}", headers=bearer(alice)).status_code == 404
        assert c.get("/v1/audit", headers=bearer(LEGACY)).status_code == 200


def test_metrics_need_a_metrics_key_once_keys_are_in_force_unless_kept_open(settings):
    """/metrics holds every tenant's job counts and model names: a tenant's read key does not reach it."""
    store = keys_of(settings)
    with client(settings) as c:
        assert c.get("/metrics").status_code == 200  # no key in force: open, as the rest
    alice, _ = store.create_key("alice", ["read", "submit"])
    scraper, _ = store.create_key("prometheus", ["metrics"])
    root, _ = store.create_key("root", ["admin"])
    with client(settings) as c:
        assert c.get("/metrics").status_code == 401
        r = c.get("/metrics", headers=bearer(alice))
        assert r.status_code == 403 and "'metrics' scope" in r.json()["detail"]
        for key in (scraper, root):
            r = c.get("/metrics", headers=bearer(key))
            assert r.status_code == 200 and "rerankq_jobs" in r.text
        assert c.get("/v1/jobs", headers=bearer(scraper)).status_code == 403  # the scraper's key reads nothing else
    with client(settings, metrics_open=True) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/jobs").status_code == 401


# --- an open service ---------------------------------------------------------------------------------


def test_with_no_key_a_proxied_request_is_refused_unless_the_service_is_meant_to_be_open(settings):
    with client(settings) as c:
        assert c.get("/v1/jobs").status_code == 200  # loopback, no proxy: open, as before
        job_id = c.post("/v1/jobs", json={"manifest": manifest(settings, "open")}).json()["job_id"]
        for header in ({"Sec-Fetch-Site": "same-site"}, {"Origin": "http://127.0.0.1:9"}):  # another port's page
            r = c.post(f"/v1/jobs/{job_id}/cancel", headers=header)
            assert r.status_code == 403 and "cross-site request refused" in r.json()["detail"], header
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
        for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}, {"X-Real-IP": "203.0.113.9"}):
            r = c.get("/v1/jobs", headers=header)
            assert r.status_code == 403 and "RERANKQ_OPEN=true" in r.json()["detail"], header
        assert c.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    with client(settings, open=True) as c:
        assert c.get("/v1/jobs", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    keys_of(settings).create_key("alice", ["read"])
    with client(settings) as c:  # a key in force: proxied or not, it is the key that counts
        assert c.get("/v1/jobs", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401


def test_serve_refuses_to_listen_beyond_loopback_with_no_key_unless_open(settings, tmp_path):
    """The real `producer serve` on 0.0.0.0: refused with no key; it starts with --open or RERANKQ_OPEN, and with a key."""
    import requests

    env = env_of(settings)
    refused = producer("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=env, timeout=60)
    assert refused.returncode == 3 and "refusing to serve on 0.0.0.0 with no API key" in refused.stderr
    assert "--open" in refused.stderr
    exe = str(Path(sys.executable).with_name("producer"))

    def served(extra: dict, args: list[str], headers: dict) -> tuple[int, int]:
        port = free_port()
        with open(tmp_path / "serve.log", "ab") as log:
            proc = subprocess.Popen([exe, "serve", "--host", "0.0.0.0", "--port", str(port), *args], env={**os.environ, **env, **extra},
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_port(port, 60)
            url = f"http://127.0.0.1:{port}/v1/jobs"
            return requests.get(url, headers=headers, timeout=10).status_code, requests.get(url, timeout=10).status_code
        finally:
            proc.terminate()
            proc.wait(30)

    assert served({}, ["--open"], {}) == (200, 200)
    assert served({"RERANKQ_OPEN": "true"}, [], {}) == (200, 200)
    key, _ = keys_of(settings).create_key("alice", ["read"])
    assert served({}, [], bearer(key)) == (200, 401)
    assert key not in (tmp_path / "serve.log").read_text()


# --- the console: throttled sign-in, sessions, CSRF --------------------------------------------------


def test_login_is_throttled_per_address_and_overall(settings):
    """On main 200 wrong keys took 6.5 s; now the sixth quick attempt waits (429, Retry-After), the right key too."""
    key, _ = keys_of(settings).create_key("alice", ["read"])
    with client(settings) as c:
        codes = [c.post("/login", data={"key": f"rq_guess{i}"}).status_code for i in range(8)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3, codes
        late = c.post("/login", data={"key": key}, follow_redirects=False)
        assert late.status_code == 429 and 1 <= int(late.headers["retry-after"]) <= 10
        assert "rerankq_session" not in late.headers.get("set-cookie", "")

    from producer.service.throttle import Throttle

    throttle = Throttle(per_client=2, client_per_second=1.0, overall=3, overall_per_second=1.0)
    assert [throttle.take("a") for _ in range(3)] == [0.0, 0.0, 1.0]  # a's own bucket
    assert throttle.take("b") == 0.0 and throttle.take("c") > 0  # everyone's bucket: 3 at once
    small = Throttle(max_clients=100)
    for i in range(1000):
        small.take(f"10.0.{i // 256}.{i % 256}")
    assert len(small._clients) == 100  # bounded memory whatever the addresses


def test_the_cookie_is_a_session_never_the_key_and_ends_with_the_key(settings):
    store = keys_of(settings)
    key, row = store.create_key("alice", ["read", "submit"])
    with client(settings, api_key=LEGACY) as c:
        r = c.post("/login", data={"key": key}, follow_redirects=False)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert key not in cookie and row.id not in cookie and LEGACY not in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
        token = c.cookies["rerankq_session"]
        with store.session() as s:
            from rerankq.store.models import LoginSession

            stored = [x.digest for x in s.query(LoginSession)]
        assert stored == [hashlib.sha256(token.encode()).digest()]
        assert c.get("/").status_code == 200 and c.get("/v1/jobs").status_code == 200
        page = c.get("/").text
        assert key not in page and token not in page
        legacy = c.post("/login", data={"key": LEGACY}, follow_redirects=False).headers["set-cookie"]
        assert LEGACY not in legacy
        c.cookies.clear()
        c.cookies.set("rerankq_session", token)
        store.revoke("alice")  # its sessions end with it
        assert c.get("/v1/jobs").status_code == 401
        assert c.get("/", follow_redirects=False).headers["location"] == "/login"
        c.cookies.set("rerankq_session", key)  # the key itself as the cookie: no session
        assert c.get("/v1/jobs").status_code == 401


def test_a_cross_site_bodyless_post_with_the_consoles_cookie_is_refused(settings):
    """What cancelled a job on main: POST /v1/jobs/{id}/cancel with no body, the cookie riding along."""
    key, _ = keys_of(settings).create_key("alice", ["read", "submit"])
    with client(settings) as c:
        job_id = c.post("/v1/jobs", json={"manifest": manifest(settings, "x")}, headers=bearer(key)).json()["job_id"]
        c.post("/login", data={"key": key}, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', c.get(f"/jobs/{job_id}").text).group(1)
        for headers in (
            {},  # no token: a form or fetch from another site cannot know it
            {"Origin": "http://127.0.0.1:9", "Sec-Fetch-Site": "same-site"},  # another port of this host
            {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf},
            {"Origin": "null"},
            {"X-CSRF-Token": "0" * 64},
        ):
            r = c.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
            assert r.status_code == 403, (headers, r.text)
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
        login = c.post("/login", data={"key": key}, headers={"Sec-Fetch-Site": "cross-site"})
        assert login.status_code == 403  # nor can another site sign you in with its key
        same = c.post(f"/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 200 and same.json()["state"] == "cancelled"


def test_in_a_browser_another_port_cannot_cancel_and_the_consoles_own_button_can(settings, browser):  # noqa: F811
    """A real chromium: signed in to the console, it opens a page on another local port that posts a body-less
    cancel (a form and a no-cors fetch, the cookie riding along); the job stays queued. Then the job page's
    Cancel button does it, carrying the page's CSRF token."""
    from selenium.webdriver.common.by import By

    key, _ = keys_of(settings).create_key("alice", ["read", "submit"])
    server, base = serve(settings)
    try:
        import requests

        job_id = requests.post(f"{base}/v1/jobs", json={"manifest": manifest(settings, "b")}, headers=bearer(key), timeout=30).json()["job_id"]
        browser.get(f"{base}/login")
        browser.find_element(By.NAME, "key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        _wait(lambda: browser.current_url.rstrip("/") == base)
        assert key not in str(browser.get_cookies())

        target = f"{base}/v1/jobs/{job_id}/cancel"
        page = f"""<html><body><form id=f method=post action="{target}"></form><script>
          fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include"}}).finally(() => document.getElementById("f").submit());
        </script></body></html>""".encode()
        evil = _page_server(page)
        try:
            browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
            _wait(lambda: "cross-site request refused" in browser.page_source or "CSRF" in browser.page_source)
        finally:
            evil.shutdown()
        assert requests.get(f"{base}/v1/jobs/{job_id}", headers=bearer(key), timeout=30).json()["state"] == "queued"

        browser.get(f"{base}/jobs/{job_id}")
        browser.find_element(By.ID, "cancel").click()
        browser.switch_to.alert.accept()
        _wait(lambda: requests.get(f"{base}/v1/jobs/{job_id}", headers=bearer(key), timeout=30).json()["state"] == "cancelled")
        session = {c["name"]: c["value"] for c in browser.get_cookies()}
        assert requests.get(f"{base}/v1/jobs", cookies=session, timeout=30).status_code == 200
        browser.find_element(By.ID, "logout").click()
        _wait(lambda: browser.current_url.endswith("/login"))
        assert requests.get(f"{base}/v1/jobs", cookies=session, timeout=30).status_code == 401  # ended in the ledger
    finally:
        server.should_exit = True


def _wait(predicate, timeout: float = 20) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _page_server(body: bytes) -> http.server.ThreadingHTTPServer:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- manifest roots ----------------------------------------------------------------------------------


def test_the_service_reads_manifests_only_under_its_roots_and_reveals_nothing_else(settings, tmp_path):
    data = Path(settings.manifest_roots[0])
    inside = manifest(settings, "inside")
    outside = write_manifest(tmp_path / "outside.parquet", rows(n_queries=1, docs_per_query=2, seed=4))
    (data / "escape.parquet").symlink_to(outside)
    (data / "etc").symlink_to("/etc")
    nested = data / "dir"
    nested.mkdir()
    write_manifest(nested / "a.parquet", rows(n_queries=1, docs_per_query=2, seed=5))
    (nested / "b.parquet").symlink_to(outside)  # a directory manifest with one file leading out
    attempts = [
        "/etc/shadow", "/etc/no-such-file", "/proc/self/environ", "/root", "/root/.bashrc", "/", str(outside),
        str(data / "escape.parquet"), str(data / "etc" / "passwd"), str(data / ".." / "outside.parquet"),
        f"{data}/../../../etc/shadow", f"file://{data}/../outside.parquet", "file:///etc/shadow", str(nested),
        f"{data}x/m.parquet", "s3://bucket/other/m.parquet", f"file://otherhost{data}/m.parquet",
    ]  # fmt: skip
    with client(settings) as c:
        for uri in attempts:
            r = c.post("/v1/jobs", json={"manifest": uri})
            assert r.status_code == 403, (uri, r.text)
            assert r.json()["detail"] == f"field 'manifest': {uri!r} is not under a directory this service reads (RERANKQ_MANIFEST_ROOTS)"
        ok = c.post("/v1/jobs", json={"manifest": inside})
        assert ok.status_code == 201 and ok.json()["manifest"] == inside
        via_dotdot = c.post("/v1/jobs", json={"manifest": f"{data}/dir/../inside.parquet"})
        assert via_dotdot.status_code == 201 and via_dotdot.json()["manifest"] == inside
        missing = c.post("/v1/jobs", json={"manifest": str(data / "missing.parquet")})
        assert missing.status_code == 400  # under a root, the service says what is wrong
        assert c.get("/v1/jobs").json()[0]["manifest"] == inside
    with client(settings, manifest_roots=[]) as c:
        for uri in ("/etc/shadow", "/etc/no-such-file", inside):
            r = c.post("/v1/jobs", json={"manifest": uri})
            assert r.status_code == 403 and "reads no manifest paths" in r.json()["detail"] and "shadow" not in r.json()["detail"]
    with client(settings, manifest_roots=["s3://bucket/nightly"]) as c:
        for uri in ("s3://bucket/nightly/../secret/m.parquet", "s3://bucket/nightlyx/m.parquet", "s3://other/nightly/m", inside):
            assert c.post("/v1/jobs", json={"manifest": uri}).status_code == 403, uri


def test_the_cli_keeps_reading_what_its_user_can_read(settings, tmp_path):
    """Roots are the service's: `producer submit` of a manifest outside them is no business of theirs."""
    outside = write_manifest(tmp_path / "mine.parquet", rows(n_queries=2, docs_per_query=3, seed=6))
    with client(settings) as c:
        assert c.post("/v1/jobs", json={"manifest": str(outside)}).status_code == 403
    result = producer("submit", str(outside), env=env_of(settings), timeout=120)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    producer("cancel", job_id[:8], env=env_of(settings), check=True)
    trail = json.loads(producer("audit", "--json", env=env_of(settings), check=True).stdout)  # the CLI's changes too
    assert [(e["action"], e["object_id"], e["tenant"]) for e in trail] == [("job.cancel", job_id, None), ("job.submit", job_id, None)]
    assert all(e["key_name"].startswith("cli:") and e["key_id"] is None for e in trail)
