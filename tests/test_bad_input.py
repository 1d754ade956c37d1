"""Nothing lost, nothing half-written: every kind of bad input is refused by the real `producer` CLI
(or the worker, or the Python API) with one clear line naming the file, row and field, exit 3, no
traceback, no credentials in any output, no job in the SQL ledger and no message in the queue.

Fast: no engine is ever loaded (the one worker test exits before it would load one)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from sqlalchemy import create_engine, inspect, text

from tests.conftest import base_env, migrate, producer
from tests.corpus import rows
from tests.services import POSTGRES_URL, create_database, drop_database, free_port
from tests.workers import CELERY, REPO, WORKER_COMMAND

SECRET = "S3cretPw-xyz"
QUEUE = "gpu"
JOB = "no-such-job"
FAST = 15  # seconds: an unreachable service is an error within this, not a hang


# --- helpers -------------------------------------------------------------------------------------


def with_password(url: str) -> str:
    """The same URL carrying SECRET (the test services ignore it: trust auth, no Redis password)."""
    scheme, rest = url.split("://", 1)
    netloc, _, path = rest.partition("/")
    user, _, host = netloc.rpartition("@")
    if ":" in user:  # a password of its own already
        return url
    return f"{scheme}://{user}:{SECRET}@{host}/{path}"


def masked(url: str) -> str:
    from rerankq.store.db import safe_url

    return safe_url(url)


def rejected(manifest: str, problems: int = 1) -> str:
    return f"manifest {manifest} rejected, nothing was submitted: {problems} problem(s)\n  "


@dataclass
class Stack:
    """One migrated ledger and the module's Redis db, as the producer sees them (URLs with SECRET)."""

    db_url: str  # for this test's own queries
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        return cli(*args, env={**self.env, **{k: str(v) for k, v in extra.items()}}, timeout=timeout)


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    result = producer(*args, env=env, timeout=timeout)
    assert SECRET not in result.stdout + result.stderr, f"a password leaked:\n{result.stdout}\n{result.stderr}"
    return result


def assert_clear_error(result: subprocess.CompletedProcess, *needles: str, code: int = 3) -> None:
    """Exit 3, `error: ...` on stderr holding every needle, no traceback, no password."""
    output = result.stdout + result.stderr
    detail = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == code, detail
    assert "Traceback" not in output, detail  # neither plain nor rich (typer) tracebacks
    assert SECRET not in output, detail
    if code == 3:
        assert result.stderr.startswith("error: "), detail
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in stderr\n{detail}"


def assert_nothing_written(db_url: str | None, redis_url: str) -> None:
    """No job, chunk or score row in the ledger and no message in the queue."""
    from rerankq.broker import priority_lists

    for name in priority_lists(QUEUE).values():  # interactive and batch chunks have lists of their own
        assert redis.Redis.from_url(redis_url).llen(name) == 0, f"a message was enqueued ({name!r})"
    if db_url is None:
        return
    engine = create_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            for table in ("jobs", "chunks", "scores"):
                if table in tables:
                    assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, f"rows in {table}"
    finally:
        engine.dispose()


def assert_refused(result: subprocess.CompletedProcess, stack: Stack, *needles: str, code: int = 3) -> None:
    assert_clear_error(result, *needles, code=code)
    assert_nothing_written(stack.db_url, stack.redis_url)


def good_columns(n_queries: int = 3, docs: int = 4) -> dict[str, list]:
    """q0000 rows 0-3, q0001 rows 4-7, q0002 rows 8-11 (short documents)."""
    return rows(n_queries, docs, seed=1, long_every=10**9)


def write(path: Path, columns: dict[str, list] | pa.Table, row_group_size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def with_column(columns: dict[str, list], name: str, array: pa.Array) -> pa.Table:
    table = pa.table(columns)
    return table.set_column(table.schema.get_field_index(name), name, array)


def set_value(name: str, row: int, value: object) -> dict[str, list]:
    columns = good_columns()
    columns[name][row] = value
    return columns


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture()
def stack(tiny_model, sqlite_url, redis_url) -> Iterator[Stack]:
    """A migrated SQLite ledger of this test's own; the module's Redis db."""
    migrate(sqlite_url)
    yield Stack(sqlite_url, redis_url, base_env(tiny_model, sqlite_url, with_password(redis_url)))
    assert_nothing_written(sqlite_url, redis_url)


@pytest.fixture(scope="module")
def pg_stack(tiny_model, pg_url, redis_url) -> Stack:
    """The module's migrated PostgreSQL database, reached with a password in its URL."""
    migrate(pg_url)
    return Stack(pg_url, redis_url, base_env(tiny_model, with_password(pg_url), with_password(redis_url)))


@pytest.fixture()
def empty_pg() -> Iterator[str]:
    """A PostgreSQL database with no tables at all."""
    url = create_database(POSTGRES_URL)
    yield url
    drop_database(POSTGRES_URL, url)


@pytest.fixture()
def bogus_revision(sqlite_url) -> str:
    """A ledger stamped with a migration revision this code does not know."""
    migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'deadbeef'"))
    engine.dispose()
    return sqlite_url


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung server, a black-holed proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in [*held, server]:
        conn.close()


@pytest.fixture()
def good_manifest(tmp_path) -> Path:
    return write(tmp_path / "good.parquet", good_columns())


def head() -> str:
    from rerankq.store.db import head_revision

    return head_revision()


# --- manifests: each case writes one bad manifest and names what the error must say --------------


def _corrupt_pages(path: Path) -> Path:
    write(path, good_columns())
    meta = pq.ParquetFile(path).metadata.row_group(0).column(3)  # the document column
    start = meta.dictionary_page_offset or meta.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 20, start + meta.total_compressed_size - 20, 3):
        data[i] ^= 0x5A  # the footer stays intact: the file opens, its pages do not decode
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path) -> Path:
    data = write(path, good_columns()).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _long_query() -> dict[str, list]:
    columns = good_columns()
    for r in range(4, 8):  # every row of q0001
        columns["query"][r] = "how do rerankers score " * 60
    return columns


def _not_contiguous() -> dict[str, list]:
    columns = good_columns()
    columns["query_id"][8] = "q0000"  # q0000 again after q0001
    return columns


def _utf8_in_binary() -> pa.Table:
    columns = good_columns()
    raw = [d.encode() for d in columns["document"]]
    raw[3] = b"caf\xe9 latin-1, not UTF-8"
    return with_column(columns, "document", pa.array(raw, pa.binary()))


def _utf8_in_string() -> pa.Table:
    """Invalid UTF-8 written unchecked into a column the file declares as string."""
    columns = good_columns()
    raw = [q.encode() for q in columns["query"]]
    raw[10] = b"\xff\xfe broken"
    return with_column(columns, "query", pa.array(raw, pa.binary()).view(pa.string()))


def _zero_rows() -> pa.Table:
    return pa.table(good_columns()).slice(0, 0)


def _without(column: str) -> dict[str, list]:
    columns = good_columns()
    del columns[column]
    return columns


# (id, build(path) -> manifest argument, needles(path) -> what stderr must say, extra env)
ManifestCase = tuple[str, Callable[[Path], str], Callable[[str], list[str]], dict[str, str]]
MANIFEST_CASES: list[ManifestCase] = [
    (
        "not-parquet",
        lambda p: (p.write_text("query_id,query,doc_id,document\nq0,a,d0,b\n"), str(p))[1],
        lambda p: [rejected(p) + f"{p}: not a readable Parquet file"],
        {},
    ),
    (
        "empty-file",
        lambda p: (p.write_bytes(b""), str(p))[1],
        lambda p: [rejected(p) + f"{p}: not a readable Parquet file"],
        {},
    ),
    (
        "truncated-file",
        lambda p: str(_truncated(p)),
        lambda p: [rejected(p) + f"{p}: not a readable Parquet file"],
        {},
    ),
    (
        "corrupt-pages",
        lambda p: str(_corrupt_pages(p)),
        lambda p: [rejected(p) + f"{p} row 0: unreadable Parquet data"],
        {},
    ),
    (
        "missing-column",
        lambda p: str(write(p, _without("doc_id"))),
        lambda p: [rejected(p) + f"{p} field 'doc_id': required column is missing"],
        {},
    ),
    (
        "wrong-type-int64-query-id",
        lambda p: str(write(p, with_column(good_columns(), "query_id", pa.array(range(12), pa.int64())))),
        lambda p: [rejected(p) + f"{p} field 'query_id': must be a string column, found int64"],
        {},
    ),
    *[
        (
            f"null-{name}",
            lambda p, name=name: str(write(p, set_value(name, 5, None))),
            lambda p, name=name: [rejected(p) + f"{p} row 5 field '{name}': is null"],
            {},
        )
        for name in ("query", "query_id", "doc_id", "document")
    ],
    *[
        (
            f"empty-{name}",
            lambda p, name=name: str(write(p, set_value(name, 6, ""))),
            lambda p, name=name: [rejected(p) + f"{p} row 6 field '{name}': is an empty string"],
            {},
        )
        for name in ("query", "query_id", "doc_id", "document")
    ],
    (
        "duplicate-pair",
        lambda p: str(write(p, set_value("doc_id", 6, good_columns()["doc_id"][5]))),
        lambda p: [
            rejected(p) + f"{p} row 6 field 'doc_id': "
            f"duplicate pair (query_id='q0001', doc_id='{good_columns()['doc_id'][5]}')"
        ],
        {},
    ),
    (
        "10mb-document",
        lambda p: str(write(p, set_value("document", 9, "x" * 10_000_000))),
        lambda p: [
            rejected(p) + f"{p} row 9 field 'document': has 10,000,000 characters, over the limit of 1,000,000",
            "RERANKQ_MAX_DOCUMENT_CHARS",
        ],
        {},
    ),
    (
        "query-over-max-length",
        lambda p: str(write(p, _long_query())),
        lambda p: [rejected(p) + f"{p} row 4 field 'query': instruction and query take", "max_length 128"],
        {"RERANKQ_MAX_LENGTH": "128"},
    ),
    (
        "invalid-utf8-in-binary-column",
        lambda p: str(write(p, _utf8_in_binary())),
        lambda p: [rejected(p) + f"{p} row 3 field 'document': is not valid UTF-8"],
        {},
    ),
    (
        "invalid-utf8-in-string-column",
        lambda p: str(write(p, _utf8_in_string())),
        lambda p: [rejected(p) + f"{p} row 10 field 'query': is not valid UTF-8"],
        {},
    ),
    (
        "query-rows-not-contiguous",
        lambda p: str(write(p, _not_contiguous())),
        lambda p: [rejected(p) + f"{p} row 8 field 'query_id': query_id 'q0000' appears again after other queries"],
        {},
    ),
    (
        "zero-rows",
        lambda p: str(write(p, _zero_rows())),
        lambda p: [rejected(p) + f"{p}: the manifest has no rows"],
        {},
    ),
    ("no-such-path", lambda p: str(p), lambda p: [f"{p}: no such file or directory"], {}),
    (
        "directory-without-parquet",
        lambda p: (p.mkdir(), str(p))[1],
        lambda p: [f"{p}: the directory holds no Parquet files"],
        {},
    ),
    (
        "scheme-not-allowed",
        lambda p: "http://example.invalid/manifest.parquet",
        lambda p: [f"{p}: scheme 'http' is not allowed", "RERANKQ_MANIFEST_SCHEMES"],
        {},
    ),
    (
        "scheme-not-in-setting",
        lambda p: "s3://bucket/manifest.parquet",
        lambda p: [f"{p}: scheme 's3' is not allowed"],
        {"RERANKQ_MANIFEST_SCHEMES": '["file"]'},
    ),
]


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest_is_refused_whole(case: ManifestCase, stack: Stack, tmp_path: Path):
    _, build, needles, extra = case
    manifest = build(tmp_path / "manifest.parquet")
    assert_refused(stack.run("submit", manifest, **extra), stack, *needles(manifest))


ON_POSTGRESQL = ("not-parquet", "null-document", "duplicate-pair")


@pytest.mark.parametrize("case", [c for c in MANIFEST_CASES if c[0] in ON_POSTGRESQL], ids=ON_POSTGRESQL)
def test_bad_manifest_is_refused_on_postgresql(case: ManifestCase, pg_stack: Stack, tmp_path: Path):
    _, build, needles, extra = case
    manifest = build(tmp_path / "manifest.parquet")
    assert_refused(pg_stack.run("submit", manifest, **extra), pg_stack, *needles(manifest))


@pytest.mark.parametrize("trick", ["sibling", "dot-dot"])
def test_manifest_outside_allowed_roots(trick: str, stack: Stack, tmp_path: Path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = write(tmp_path / "other" / "m.parquet", good_columns())
    given = str(outside) if trick == "sibling" else str(allowed / ".." / "other" / "m.parquet")
    result = stack.run("submit", given, RERANKQ_MANIFEST_ROOTS=json.dumps([str(allowed)]))
    assert_refused(result, stack, f"{outside}: outside the allowed manifest roots (RERANKQ_MANIFEST_ROOTS)")


def test_every_problem_in_every_file_is_listed(stack: Stack, tmp_path: Path):
    """Bad rows in three files of one manifest: all three reported, with each file's own row number."""
    columns = rows(6, 5, seed=3, long_every=10**9)  # 30 rows, 10 per file
    columns["query"][2] = None  # part-000 row 2
    columns["document"][13] = ""  # part-001 row 3
    columns["doc_id"][27] = columns["doc_id"][26]  # part-002 row 7
    directory = tmp_path / "manifest"
    for i in range(3):
        write(directory / f"part-{i:03d}.parquet", {k: v[i * 10 : i * 10 + 10] for k, v in columns.items()})
    result = stack.run("submit", str(directory))
    assert_refused(
        result,
        stack,
        rejected(str(directory), 3) + f"{directory}/part-000.parquet row 2 field 'query': is null",
        f"{directory}/part-001.parquet row 3 field 'document': is an empty string",
        f"{directory}/part-002.parquet row 7 field 'doc_id': "
        f"duplicate pair (query_id='q0005', doc_id='{columns['doc_id'][27]}')",
    )
    assert result.stderr.count("\n  /") == 3, result.stderr


def test_many_problems_are_counted_beyond_those_shown(stack: Stack, tmp_path: Path):
    columns = rows(8, 10, seed=4, long_every=10**9)  # 80 rows
    for r in range(0, 80, 2):
        columns["document"][r] = None  # 40 null documents
    for r in range(1, 60, 2):
        columns["query"][r] = ""  # and 30 empty queries: 70 problems
    manifest = write(tmp_path / "many.parquet", columns)
    result = stack.run("submit", str(manifest))
    assert_refused(result, stack, rejected(str(manifest), 70), "\n  … and 20 more")
    listed = [line for line in result.stderr.splitlines() if line.startswith(f"  {manifest} row ")]
    assert len(listed) == len(set(listed)) == 50, result.stderr


# --- unknown jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("status", JOB), ("status", JOB, "--json"), ("wait", JOB, "--timeout", "5"), ("export", JOB, "--out", "{out}"),
     ("cancel", JOB), ("resume", JOB), ("retry", JOB)],
    ids=["status", "status-json", "wait", "export", "cancel", "resume", "retry"],
)  # fmt: skip
def test_unknown_job_id(args: tuple[str, ...], stack: Stack, tmp_path: Path):
    out = tmp_path / "scores.parquet"
    result = stack.run(*(a.format(out=out) for a in args))
    assert_refused(result, stack, f"no job '{JOB}' in the ledger")
    assert list(tmp_path.glob("scores*")) == [], "export left a file behind"


def test_unknown_job_id_on_postgresql(pg_stack: Stack):
    for command in ("status", "cancel"):
        assert_refused(pg_stack.run(command, JOB), pg_stack, f"no job '{JOB}' in the ledger")


def test_export_to_a_directory_that_does_not_exist(stack: Stack, good_manifest: Path, tmp_path: Path):
    """A real (finished-nothing) job exported to nowhere: a clear error, not a traceback."""
    sub = stack.run("submit", str(good_manifest), RERANKQ_QUEUE="unused-export-test")
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().splitlines()[-1]
    try:
        target = tmp_path / "no" / "such" / "dir" / "scores.parquet"
        result = stack.run("export", job, "--out", str(target))
        assert_clear_error(result, f"cannot write {target}: No such file or directory")
        assert not (tmp_path / "no").exists()
    finally:  # this test made a job on purpose: remove it, so the stack's end check holds
        redis.Redis.from_url(stack.redis_url).delete("unused-export-test")
        engine = create_engine(stack.db_url)
        with engine.begin() as conn:
            for table in ("scores", "chunks", "jobs"):
                conn.execute(text(f"DELETE FROM {table}"))
        engine.dispose()


# --- inline pairs --------------------------------------------------------------------------------


def test_rerank_without_doc_is_a_usage_error(stack: Stack):
    """Click's usage errors exit 2 (as for every missing option), with the option named."""
    assert_refused(stack.run("rerank", "--query", "what is a reranker"), stack, "Missing option '--doc'", code=2)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--query", "q", "--doc", ""), "pair 0 field 'document': is an empty string"),
        (("--query", "q", "--doc", "fine", "--doc", ""), "pair 1 field 'document': is an empty string"),
        (("--query", "", "--doc", "a document"), "field 'query': String should have at least 1 character"),
    ],
    ids=["empty-doc", "second-doc-empty", "empty-query"],
)
def test_rerank_with_empty_text(args: tuple[str, ...], needle: str, stack: Stack):
    assert_refused(stack.run("rerank", *args, "--timeout", "5"), stack, needle)


PAIR = {"query_id": "q", "doc_id": "d", "query": "q", "document": "x"}


@pytest.mark.parametrize(
    "pairs, needle",
    [
        ([{**PAIR, "doc_id": f"d{i}"} for i in range(4)], "more than 3 pairs in an inline job (RERANKQ_MAX_INLINE"),
        ([PAIR, PAIR], "duplicate pair (query_id='q', doc_id='d')"),
        ([{**PAIR, "document": ""}], "pair 0 field 'document': is an empty string"),
        ([{k: v for k, v in PAIR.items() if k != "document"}], "pair 0 field 'document': Field required"),
        ([{**PAIR, "document": "x" * 1_000_001}], "pair 0 field 'document': 1,000,001 characters, over the limit"),
        ([], "no pairs to rerank"),
    ],
    ids=["over-max-inline-pairs", "duplicate", "empty-document", "missing-field", "huge-document", "no-pairs"],
)
def test_submit_pairs_python_api(pairs: list[dict], needle: str, tiny_model, sqlite_url: str, redis_url: str):
    from producer import InputError, submit_pairs
    from rerankq.settings import Settings

    migrate(sqlite_url)
    settings = Settings(model=str(tiny_model), database_url=sqlite_url, broker_url=redis_url, max_inline_pairs=3)
    with pytest.raises(InputError) as raised:
        submit_pairs(pairs, settings=settings)
    assert needle in str(raised.value)
    assert_nothing_written(sqlite_url, redis_url)


# --- the ledger at another migration revision ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("submit", "{manifest}"), ("status", JOB), ("list",), ("rerank", "-q", "q", "-d", "doc"), ("resume", JOB)],
    ids=["submit", "status", "list", "rerank", "resume"],
)
def test_producer_refuses_a_database_at_another_revision(
    args: tuple[str, ...], bogus_revision: str, tiny_model, redis_url: str, good_manifest: Path
):
    env = base_env(tiny_model, bogus_revision, with_password(redis_url))
    result = cli(*(a.format(manifest=good_manifest) for a in args), env=env)
    needle = f"database {bogus_revision} is at revision deadbeef, this rerankq needs revision {head()}"
    assert_refused(result, Stack(bogus_revision, redis_url), needle + ": run `producer db upgrade`")


@pytest.mark.parametrize(
    "args", [("submit", "{manifest}"), ("status", JOB), ("list", "--json")], ids=["submit", "status", "list"]
)
def test_producer_refuses_an_empty_database(args: tuple[str, ...], empty_pg: str, tiny_model, redis_url, good_manifest):
    env = base_env(tiny_model, with_password(empty_pg), with_password(redis_url))
    result = cli(*(a.format(manifest=good_manifest) for a in args), env=env)
    shown = masked(with_password(empty_pg))
    needle = f"database {shown} has no rerankq tables, this rerankq needs revision {head()}: run `producer db upgrade`"
    assert_refused(result, Stack(empty_pg, redis_url), needle)
    engine = create_engine(empty_pg)
    assert inspect(engine).get_table_names() == [], "the producer created tables on its own"
    engine.dispose()


def test_db_upgrade_refuses_an_unknown_revision(bogus_revision: str, tiny_model, redis_url: str):
    result = cli("db", "upgrade", env=base_env(tiny_model, bogus_revision, with_password(redis_url)))
    assert_refused(
        result, Stack(bogus_revision, redis_url),
        f"cannot upgrade the database {bogus_revision}: Can't locate revision identified by 'deadbeef'",
    )  # fmt: skip


@pytest.mark.parametrize("db", ["sqlite-bogus-revision", "postgresql-empty"])
def test_worker_refuses_to_start(db: str, request, tiny_model, redis_url: str, tmp_path: Path):
    if db == "postgresql-empty":
        url = request.getfixturevalue("empty_pg")
        env_url = with_password(url)
        needle = "has no rerankq tables"
    else:
        url = env_url = request.getfixturevalue("bogus_revision")
        needle = f"database {url} is at revision deadbeef, this rerankq needs revision {head()}"
    env = {**os.environ, **base_env(tiny_model, env_url, with_password(redis_url), RERANKQ_LOG_JSON="false")}
    log_path = tmp_path / "worker.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*CELERY, *WORKER_COMMAND, "--loglevel", "INFO"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        while proc.poll() is None and time.monotonic() - started < 90:
            if " ready." in log_path.read_text(errors="replace"):
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own worker's group only
            proc.wait()
    output = log_path.read_text(errors="replace")
    elapsed = time.monotonic() - started
    assert SECRET not in output, output
    assert "engine_loading" not in output, f"the worker loaded an engine:\n{output[-3000:]}"
    assert_nothing_written(url, redis_url)
    assert " ready." not in output, f"the worker started anyway:\n{output[-3000:]}"
    assert proc.returncode not in (0, None) and proc.returncode > 0, output[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert needle in output and "run `producer db upgrade`" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


# --- unreachable services ------------------------------------------------------------------------


# A closed port (refused at once) for every command; a silent server (accepts, never answers: the timeouts
# must hold) for one command per code path.
@pytest.mark.parametrize(
    "command, server",
    [("submit", "closed-port"), ("rerank", "closed-port"), ("submit", "silent-server")],
    ids=["submit-closed-port", "rerank-closed-port", "submit-silent-server"],
)
def test_unreachable_broker(command: str, server: str, stack: Stack, good_manifest: Path, request):
    port = free_port() if server == "closed-port" else request.getfixturevalue("silent_port")
    broker = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    args = ("submit", str(good_manifest)) if command == "submit" else ("rerank", "-q", "q", "-d", "a document")
    started = time.monotonic()
    result = stack.run(*args, timeout=60, RERANKQ_BROKER_URL=broker)
    elapsed = time.monotonic() - started
    assert_refused(result, stack, f"cannot reach the broker redis://:**@127.0.0.1:{port}/0")
    assert elapsed < FAST, f"{elapsed:.1f} s: {result.stderr}"


@pytest.mark.parametrize(
    "args, server",
    [(("submit", "{manifest}"), "closed-port"), (("status", JOB), "closed-port"), (("list",), "closed-port"),
     (("db", "upgrade"), "closed-port"), (("status", JOB), "silent-server"), (("db", "upgrade"), "silent-server")],
    ids=["submit-closed-port", "status-closed-port", "list-closed-port", "db-upgrade-closed-port",
         "status-silent-server", "db-upgrade-silent-server"],
)  # fmt: skip
def test_unreachable_database(args: tuple[str, ...], server: str, tiny_model, redis_url, good_manifest: Path, request):
    port = free_port() if server == "closed-port" else request.getfixturevalue("silent_port")
    env = base_env(tiny_model, f"postgresql://u:{SECRET}@127.0.0.1:{port}/x", with_password(redis_url))
    started = time.monotonic()
    result = cli(*(a.format(manifest=good_manifest) for a in args), env=env, timeout=60)
    elapsed = time.monotonic() - started
    needle = f"port {port} failed" if server == "closed-port" else "timeout"
    assert_clear_error(result, needle, "database")
    if args[0] != "db":
        assert f"cannot reach the database postgresql+psycopg://u:***@127.0.0.1:{port}/x" in result.stderr
    assert elapsed < FAST, f"{elapsed:.1f} s: {result.stderr}"
    assert_nothing_written(None, redis_url)


# --- bad settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, needle",
    [
        ("not a url", "cannot use the database URL (unparsable): Could not parse"),
        (f"mysql://u:{SECRET}@127.0.0.1/x", "cannot use the database URL mysql://u:***@127.0.0.1/x: No module named"),
        (f"nosuchdb://u:{SECRET}@127.0.0.1/x", "cannot use the database URL nosuchdb://u:***@127.0.0.1/x: Can't load"),
        (f"postgresql://u:{SECRET}@127.0.0.1:notaport/x", "cannot use the database URL (unparsable)"),
        (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/rq_no_such_db", 'database "rq_no_such_db" does not exist'),
    ],
    ids=["unparsable", "driver-missing", "unknown-dialect", "bad-port", "no-such-database"],
)
def test_bad_database_url(url: str, needle: str, tiny_model, redis_url: str):
    for args in (("list",), ("db", "upgrade")):
        result = cli(*args, env=base_env(tiny_model, url, with_password(redis_url)))
        assert_clear_error(result, needle)
    assert_nothing_written(None, redis_url)


@pytest.mark.parametrize("name, value", [("RERANKQ_MAX_LENGTH", "lots"), ("RERANKQ_MANIFEST_SCHEMES", "file,s3")])
def test_bad_setting_value(name: str, value: str, stack: Stack):
    result = stack.run("list", **{name: value})  # asserts no password in the output
    assert result.returncode != 0
    assert_refused(result, stack, name)


# --- credentials never shown ---------------------------------------------------------------------


def test_credentials_never_appear_in_any_output(pg_stack: Stack, good_manifest: Path, tmp_path: Path):
    """A job that does go through, on PostgreSQL and Redis URLs with passwords: no command shows them."""
    queue = f"secret-test-{os.getpid()}"
    outputs = []
    try:
        sub = pg_stack.run("submit", str(good_manifest), "--name", "secret-test", RERANKQ_QUEUE=queue)
        assert sub.returncode == 0, sub.stderr
        job = sub.stdout.strip().splitlines()[-1]
        commands = [
            ("status", job), ("status", job, "--json"), ("list",), ("list", "--json"), ("wait", job, "--timeout", "1"),
            ("db", "current"), ("db", "upgrade"), ("resume", job), ("cancel", job), ("status", job), ("retry", job),
            ("export", job, "--out", str(tmp_path / "s.parquet")),
        ]  # fmt: skip
        for args in commands:
            outputs.append(pg_stack.run(*args, RERANKQ_QUEUE=queue))  # cli() asserts SECRET is in none of them
        assert json.loads(outputs[1].stdout)["job_id"] == job
        assert "postgres:***@" in outputs[6].stdout and "cancelled" in outputs[8].stdout
    finally:
        redis.Redis.from_url(pg_stack.redis_url).delete(queue)
        engine = create_engine(pg_stack.db_url)
        with engine.begin() as conn:
            for table in ("scores", "chunks", "jobs"):
                conn.execute(text(f"DELETE FROM {table}"))
        engine.dispose()
    assert_nothing_written(pg_stack.db_url, pg_stack.redis_url)
