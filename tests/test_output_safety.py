"""Issue 25's smaller items, through the real `producer` command: CSV exports are inert in spreadsheets
(OWASP's CSV injection advice), no password of any URL form is printed, and user-given names reach the
terminal as text (no markup, no escape sequences)."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rerankq.redact import mask_url
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from schemas import InlinePair, InlineSpec
from tests.conftest import migrate, producer

FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "=cmd|' /C calc'!A0"]
TITLE = "\x1b]0;pwned\x07"
LINK = "[link=https://evil.example]x[/link]"


@pytest.fixture()
def ledger(tmp_path: Path) -> tuple[Ledger, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    # an unreachable broker: none of these commands needs one
    return Ledger(url), {"RERANKQ_DATABASE_URL": url, "RERANKQ_BROKER_URL": "redis://127.0.0.1:1/0"}


def scored_job(store: Ledger, doc_ids: list[str], name: str | None = None, score: float = 0.5) -> str:
    """A finished job whose pairs have these ids (as a worker leaves it)."""
    pairs = [InlinePair(query_id=d, doc_id=d, query="q", document="d") for d in doc_ids]
    job, (m,) = store.create_job(kind="inline", chunks=[NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), len(pairs))], name=name)
    assert store.begin_chunk(job, m.chunk_id, "worker", "model") is None
    assert store.finish_chunk(job, m.chunk_id, [ScoreRow(p.query_id, p.doc_id, score, None) for p in pairs])
    return job


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_exports_neutralise_formula_cells(ledger, tmp_path):
    store, env = ledger
    ids = [*FORMULAS, "plain", "a=b"]
    old = scored_job(store, ids[:4] + ["plain"], score=0.1)
    job = scored_job(store, ids, score=0.9)

    out = tmp_path / "scores.csv"
    producer("export", job, "--out", str(out), env=env, check=True)
    rows = read_csv(out)
    assert sorted(r["doc_id"] for r in rows) == sorted(f"'{d}" if d in FORMULAS else d for d in ids)
    assert all(r["query_id"] == r["doc_id"] for r in rows)
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for r in rows for cell in r.values() if cell)
    assert {r["score"] for r in rows} == {"0.9"}, "numbers are written as they are"

    changes = tmp_path / "changes.csv"
    producer("export", job, "--changes-since", old, "--out", str(changes), env=env, check=True)
    rows = read_csv(changes)
    assert {r["doc_id"] for r in rows if r["change"] == "new"} == {f"'{d}" for d in FORMULAS[4:]} | {"a=b"}
    assert not any(r["doc_id"][:1] in ("=", "+", "-", "@", "\t", "\r") for r in rows)

    parquet = tmp_path / "scores.parquet"
    producer("export", job, "--out", str(parquet), env=env, check=True)
    assert sorted(pq.read_table(parquet).column("doc_id").to_pylist()) == sorted(ids), "Parquet keeps the ids as they are"


SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://rq@127.0.0.1:1/db?password={SECRET}", "postgresql://rq@127.0.0.1:1/db?password=***"),
        (f"postgresql://rq:{SECRET}@127.0.0.1:1/db", "postgresql://rq:***@127.0.0.1:1/db"),
        (f"host=127.0.0.1 port=1 dbname=db password={SECRET}", "host=127.0.0.1 port=1 dbname=db password=***"),
        (f"host=127.0.0.1 password='{SECRET} x' dbname=db", "host=127.0.0.1 password=*** dbname=db"),
        (f"redis://:{SECRET}@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        (f"rediss://default:{SECRET}@h:6380/0?ssl_cert_reqs=none", "rediss://default:***@h:6380/0?ssl_cert_reqs=none"),
        (f"amqp://guest:{SECRET}@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        (f"sqla+postgresql://u@h/db?sslmode=require&password={SECRET}&x=1", "sqla+postgresql://u@h/db?sslmode=require&password=***&x=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:////var/lib/rerankq/ledger.db", "sqlite:////var/lib/rerankq/ledger.db"),
    ],
)
def test_every_url_form_is_masked(url, shown):
    assert mask_url(url) == shown
    assert mask_url(f"cannot reach {url}: refused") == f"cannot reach {shown}: refused"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://rq@127.0.0.1:1/db?password={SECRET}",  # the issue's: libpq's ?password=
        f"postgresql://rq:{SECRET}@127.0.0.1:1/db",
        f"host=127.0.0.1 port=1 dbname=db password={SECRET}",  # a libpq DSN: not even a URL
        f"postgresql:///db?host=/nonexistent&password={SECRET}",
    ],
)
def test_no_database_password_is_printed_by_a_failing_command(url):
    env = {"RERANKQ_DATABASE_URL": url, "RERANKQ_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:1/0?password={SECRET}"}
    for args in (("status", "00000000"), ("db", "upgrade")):
        result = producer(*args, env=env, timeout=120)
        shown = result.stdout + result.stderr
        assert result.returncode != 0 and "error" in shown, shown
        assert SECRET not in shown, (args, shown)
        if args[0] == "status":  # says which database it could not use, its password masked (a DSN: not a URL)
            assert "***" in shown or "database URL (unparsable)" in shown, shown


def test_no_broker_password_is_printed_by_a_failing_submit(ledger, tmp_path):
    _, env = ledger
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text('{"query_id": "q", "doc_id": "d", "query": "q", "document": "d"}\n')
    env = {**env, "RERANKQ_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:1/0?password={SECRET}"}
    result = producer("rerank", "--query", "q", "--doc", "d", env=env, timeout=120)
    shown = result.stdout + result.stderr
    assert result.returncode != 0 and SECRET not in shown, shown


def test_log_records_mask_passwords():
    """A driver's or library's message carrying a URL is masked in the log line itself."""
    from rerankq.logs import configure_logging, get_logger

    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        get_logger("rerankq.test").warning("connect_failed", url=f"postgresql://u@h/db?password={SECRET}")
        logging.getLogger("kombu.test").error("Cannot connect to redis://:%s@h:6379//: refused", SECRET)
        text = stream.getvalue()
        assert SECRET not in text and text.count("***") == 2, text
    finally:
        configure_logging("INFO", json=True, stream=None)


def test_user_given_names_reach_the_terminal_inert(ledger):
    store, env = ledger
    titled = scored_job(store, ["d"], name=f"a{TITLE}b")
    linked = scored_job(store, ["d"], name=f"see {LINK} \x9b2J\u202eevil")
    env = {**env, "FORCE_COLOR": "1", "COLUMNS": "200"}  # as on a terminal: Rich writes its own escapes
    outputs = {
        "list": producer("list", env=env, check=True).stdout,
        "status-title": producer("status", titled, env=env, check=True).stdout,
        "status-link": producer("status", linked, env=env, check=True).stdout,
    }
    for what, text in outputs.items():
        assert "\x1b]" not in text and "\x07" not in text and "\x9b" not in text and "\u202e" not in text, (what, text)
    assert "a\\x1b]0;pwned\\x07b" in outputs["list"] and "a\\x1b]0;pwned\\x07b" in outputs["status-title"]
    assert LINK in outputs["list"] and LINK in outputs["status-link"], "markup in a name stays text"
    assert "\\x9b2J\\u202eevil" in outputs["status-link"]


def test_audit_clients_reach_the_terminal_inert(ledger):
    """`producer audit` shows the client (a User-Agent, anyone's) as text; a key name with an escape is
    refused, and the refusal shows it inert."""
    from rerankq.store.actor import SCOPES, Actor
    from rerankq.store.audit import AuditLog

    _, env = ledger
    env = {**env, "FORCE_COLOR": "1", "COLUMNS": "250"}
    refused = producer("keys", "create", f"team{TITLE}", env=env)
    assert refused.returncode == 3 and "\x1b]" not in refused.stderr and "\x07" not in refused.stderr, refused.stderr
    producer("keys", "create", "team", "--tenant", "t1", env=env, check=True)
    AuditLog(env["RERANKQ_DATABASE_URL"]).record(
        Actor(None, "k", "t1", frozenset(SCOPES)), "job.cancel", "job-1", client=f"curl {LINK}\x1b[2J{TITLE}"
    )
    for args in (("keys", "list"), ("audit",)):
        text = producer(*args, env=env, check=True).stdout
        assert "\x1b]" not in text and "\x07" not in text and "\x1b[2J" not in text, (args, text)
    assert f"{LINK}\\x1b[2J\\x1b]0;pwned\\x07" in producer("audit", env=env, check=True).stdout
