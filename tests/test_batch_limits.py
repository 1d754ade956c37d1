"""Bounded batch input (issue 25): the line, line-length and error-output caps, uploads written once
straight into RERANKQ_FILES_DIR, hostile filenames, and the batch faults (a full disk, a missing input
file). The service runs in-process over real PostgreSQL and Redis; no worker is needed (the batches
here fail, are cancelled, or wait)."""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from producer.batch_lines import BadLine, GoodLine, LineReader
from producer.batch_reading import LongLine, physical_lines, request_lines
from producer.errors import InputError
from rerankq.settings import Settings
from tests.conftest import migrate
from tests.polling import wait_for
from tests.services import redis_client

HOOK = "http://127.0.0.1:9/hook"  # never delivered here: the tests read the ledger's outbox


def rerank_line(cid: str, query: str = "q", docs: list | None = None) -> bytes:
    body = {"query": query, "documents": docs if docs is not None else ["d"]}
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/rerank", "body": body}).encode()


def message(response) -> str:  # noqa: ANN001 - the service's error body, either shape
    body = response.json()
    return body["error"]["message"] if isinstance(body.get("error"), dict) else body["detail"]


@pytest.fixture(scope="module")
def db(pg_url: str) -> str:
    migrate(pg_url)
    return pg_url


@pytest.fixture()
def settings(db: str, redis_url: str, tiny_model: Path, tmp_path: Path) -> Settings:
    redis_client(redis_url).flushdb()
    return Settings(
        database_url=db, broker_url=redis_url, model=str(tiny_model), max_length=512, files_dir=tmp_path / "files",
        batch_max_lines=50, batch_max_line_bytes=4096, batch_max_error_lines=5, webhook_allow=["127.0.0.1"],
    )  # fmt: skip


def client(settings: Settings, **overrides: object) -> TestClient:
    from producer.service import create_app

    return TestClient(create_app(settings.model_copy(update=overrides)))


def upload(c: TestClient, data: bytes, filename: str = "in.jsonl"):  # noqa: ANN201
    return c.post("/v1/files", files={"file": (filename, data)}, data={"purpose": "batch"})


def raw_upload(c: TestClient, disposition: bytes, data: bytes = b"x\n"):  # noqa: ANN201
    """A multipart body written by hand: the bytes of a filename exactly as an attacker sends them."""
    body = (
        b'--B0UND\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--B0UND\r\nContent-Disposition: " + disposition + b"\r\nContent-Type: application/jsonl\r\n\r\n"
        + data + b"\r\n--B0UND--\r\n"
    )  # fmt: skip
    return c.post("/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=B0UND"})


def on_disk(settings: Settings) -> list[str]:
    return sorted(p.name for p in Path(settings.files_dir).iterdir()) if Path(settings.files_dir).exists() else []


def events(settings: Settings, job_id: str) -> list[str]:
    """The job's webhook events in the ledger's outbox (what the sender will deliver)."""
    engine = create_engine(settings.database)
    with engine.connect() as conn:
        types = list(conn.execute(text("SELECT type FROM webhook_events WHERE job_id = :j"), {"j": job_id}).scalars())
    engine.dispose()
    return types


def file_rows(settings: Settings) -> int:
    engine = create_engine(settings.database)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM files")).scalar_one()
    engine.dispose()
    return n


# --- reading: the caps ------------------------------------------------------------------------------
def test_an_over_long_line_fails_alone_and_is_never_held_whole():
    long_line = b'{"custom_id": "huge", "body": {"documents": ["' + b"a" * (8 << 20) + b'"]}}'
    data = b"\n".join([b"first", long_line, b"", b"last"]) + b"\n"
    tracemalloc.start()
    got = list(physical_lines(io.BytesIO(data), max_line_bytes=64 * 1024, block=256 * 1024))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 << 20, f"{peak:,} bytes held to read an 8 MiB line"  # a block and a capped line, not the line
    assert [n for n, _ in got] == [0, 1, 2, 3]
    assert got[0][1] == b"first" and got[2][1] == b"" and got[3][1] == b"last"
    assert isinstance(got[1][1], LongLine) and got[1][1].size == len(long_line)

    settings = Settings(batch_max_line_bytes=64 * 1024)
    items = list(request_lines(io.BytesIO(data), LineReader(settings, "/v1/rerank"), settings))
    bad = items[1]
    assert isinstance(bad, BadLine) and (bad.number, bad.custom_id, bad.param) == (1, "huge", "line")
    assert bad.message == f"line 2 (custom_id 'huge'): {len(long_line):,} bytes, over the limit of 65,536 (RERANKQ_BATCH_MAX_LINE_BYTES)"
    assert [type(i) for i in items] == [BadLine, BadLine, BadLine]  # "first" and "last" are not JSON; the blank line is skipped


def test_lines_at_every_block_boundary_are_read_whole():
    lines = [rerank_line(f"id-{i}", docs=["x" * (i * 7 % 50 + 1)]) for i in range(300)]
    data = b"\n".join(lines)  # no final newline
    for block in (1, 7, 64, 4096):
        got = list(physical_lines(io.BytesIO(data), max_line_bytes=4096, block=block))
        assert [raw for _, raw in got] == lines, block


def test_more_lines_than_the_cap_refuse_the_file_before_parsing_them_all():
    settings = Settings(batch_max_lines=3)
    data = b"\n\n".join(rerank_line(f"l{i}") for i in range(3)) + b"\n\n\n"  # blank lines do not count
    assert all(isinstance(i, GoodLine) for i in request_lines(io.BytesIO(data), LineReader(settings, "/v1/rerank"), settings))
    seen = []

    class Counting(LineReader):
        def line(self, number: int, raw: bytes):  # noqa: ANN201
            seen.append(number)
            return super().line(number, raw)

    many = b"x\n" * 1_000_000
    with pytest.raises(InputError, match=r"^line 4: more than 3 request lines in one batch file \(RERANKQ_BATCH_MAX_LINES\)"):
        list(request_lines(io.BytesIO(many), Counting(settings, "/v1/rerank"), settings))
    assert seen == [0, 1, 2]


# --- the service: caps end to end --------------------------------------------------------------------
def test_error_output_is_capped_and_the_rest_counted(settings):
    c = client(settings)
    lines = [b"x"] * 12 + [rerank_line("long", docs=["y" * 5000])]  # 13 bad lines, one of them over 4,096 bytes
    f = upload(c, b"\n".join(lines) + b"\n").json()
    r = c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/rerank"})
    assert r.status_code == 200, r.text
    batch = c.get(f"/v1/batches/{r.json()['id']}").json()
    assert batch["status"] == "failed" and batch["request_counts"] == {"total": 13, "completed": 0, "failed": 13}
    errors = c.get(f"/v1/files/{batch['error_file_id']}/content").text.splitlines()
    first = json.loads(errors[0])["error"]
    first = first.get("error", first)  # vLLM's ErrorResponse may nest it
    assert len(errors) == 5 and first["message"].startswith("line 1: not a JSON object")
    notes = [e for e in batch["errors"]["data"] if e["code"] == "more_errors"]
    assert [n["message"] for n in notes] == ["8 more failed lines are not in the error file (RERANKQ_BATCH_MAX_ERROR_LINES)"]
    assert any(e["line"] == 13 and e["param"] == "line" and "RERANKQ_BATCH_MAX_LINE_BYTES" in e["message"] for e in batch["errors"]["data"])

    over = upload(c, b"x\n" * 51).json()
    r = c.post("/v1/batches", json={"input_file_id": over["id"], "endpoint": "/v1/rerank"})
    assert r.status_code == 400 and "more than 50 request lines" in message(r)


def test_good_lines_run_beside_an_over_long_one(settings):
    c = client(settings)
    data = b"\n".join([rerank_line("ok-0"), rerank_line("huge", docs=["z" * 10_000]), rerank_line("ok-1")]) + b"\n"
    f = upload(c, data).json()
    batch = c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/rerank"}).json()
    assert batch["status"] == "in_progress" and batch["request_counts"] == {"total": 3, "completed": 0, "failed": 1}
    job = c.get(f"/v1/jobs/{batch['job_id']}").json()
    assert job["pairs_total"] == 2  # the two good lines wait for a worker


# --- good lines: submitted a chunk at a time -------------------------------------------------------------
def good_lines(size: int, doc_chars: int = 2000) -> bytes:
    """Good lines of one query and ten documents of ``doc_chars`` characters each, up to ``size`` bytes."""
    docs = [f"document {i} " + "lorem ipsum dolor sit amet " * (doc_chars // 27) for i in range(10)]
    out, i = [], 0
    while sum(map(len, out)) < size:
        out.append(rerank_line(f"r{i}", query=f"query {i}", docs=docs) + b"\n")
        i += 1
    return b"".join(out)


def test_good_lines_are_submitted_in_the_memory_of_a_few_chunks_whatever_the_file_size(settings, monkeypatch):
    """Python's peak while a batch is checked, recorded and queued is a chunk's, not the file's: a 4x
    larger file peaks within a few MB of the smaller one (it held 2x to 5x the file's bytes before)."""
    import producer.batch_submission as batch_submission
    from producer.batch_files import batch_store, store_file, submit_batch

    monkeypatch.setattr(batch_submission, "CHUNK_CHARS", 1 << 20)  # chunks of ~1 MiB of text: small files show it
    settings = settings.model_copy(update={"batch_max_lines": 50_000, "batch_max_line_bytes": 16 << 20})
    store = batch_store(settings)
    submit_batch(store_file(store, settings, [good_lines(1)], "warm.jsonl"), settings=settings)  # tokenizer, imports
    peaks, jobs = {}, {}
    for mb in (4, 16):
        data = good_lines(mb << 20)
        row = store_file(store, settings, [data], f"{mb}.jsonl")
        lines, pairs = data.count(b"\n"), data.count(b"\n") * 10
        del data
        tracemalloc.start()
        try:
            batch = submit_batch(row, settings=settings)
            peaks[mb] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert batch.lines_total == lines and batch.lines_rejected == 0
        jobs[mb] = batch.job_id
        engine = create_engine(settings.database)
        with engine.connect() as conn:
            total, chunks, unsent, chunk_pairs = conn.execute(
                text(
                    "SELECT j.pairs_total, count(c.id), count(c.id) - count(c.enqueued_at), sum(c.pairs) "
                    "FROM jobs j JOIN chunks c ON c.job_id = j.id WHERE j.id = :j GROUP BY j.pairs_total"
                ),
                {"j": batch.job_id},
            ).one()
        engine.dispose()
        assert total == chunk_pairs == pairs and unsent == 0  # every pair in a chunk, every chunk queued
        assert chunks >= mb  # ~1 MiB of text a chunk
    assert peaks[16] < peaks[4] + (6 << 20), f"peak {peaks[16]:,} bytes for 16 MiB vs {peaks[4]:,} for 4 MiB"
    assert peaks[16] < (16 << 20) // 2, f"peak {peaks[16]:,} bytes for a 16 MiB file"


def test_a_failure_while_the_chunks_are_written_leaves_no_job_and_nothing_queued(settings, monkeypatch, redis_url):
    """The job, its batch row and its chunks commit together: a failure after some chunks were written
    (here the file reading otherwise the second time) leaves none of them, and nothing on the broker."""
    import producer.batch_submission as batch_submission
    from producer.batch_files import batch_store, store_file, submit_batch

    monkeypatch.setattr(batch_submission, "CHUNK_CHARS", 50_000)
    settings = settings.model_copy(update={"batch_max_line_bytes": 1 << 20})
    row = store_file(batch_store(settings), settings, [good_lines(400_000)], "in.jsonl")
    read, calls = batch_submission._read, []

    def failing(f, reader, line):  # noqa: ANN001, ANN202
        calls.append(line.number)
        if len(calls) > 6:
            raise OSError("the disk went away")
        return read(f, reader, line)

    monkeypatch.setattr(batch_submission, "_read", failing)
    engine = create_engine(settings.database)
    count = "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM batches), (SELECT count(*) FROM chunks)"
    with engine.connect() as conn:
        before = conn.execute(text(count)).one()
    with pytest.raises(OSError, match="the disk went away"):
        submit_batch(row, settings=settings)
    with engine.connect() as conn:
        assert conn.execute(text(count)).one() == before
    engine.dispose()
    assert len(calls) > 6 and redis_client(redis_url).dbsize() == 0


@pytest.mark.parametrize("ledger", ["postgresql", "sqlite"])
def test_a_batch_submitted_again_queues_only_the_pairs_the_cache_lacks(settings, tiny_model, tmp_path, ledger, monkeypatch):
    """Reuse through the chunk-at-a-time path: a second batch, with some documents edited, copies the
    cached pairs at once and queues chunks of exactly the edited ones (a fake worker scores them)."""
    import producer.batch_submission as batch_submission
    from producer.batch_files import batch_store, store_file, submit_batch
    from rerankq.store.ledger import Ledger
    from tests.test_reuse import FakeWorker

    monkeypatch.setattr(batch_submission, "CHUNK_CHARS", 2000)  # several chunks, a line cut in pieces
    if ledger == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        migrate(url)
        settings = settings.model_copy(update={"database_url": SecretStr(url)})
    settings = settings.model_copy(update={"dtype": "float32", "batch_max_line_bytes": 1 << 20})
    store = Ledger(settings.database)
    worker = FakeWorker(store, settings, tiny_model)
    docs = [[f"line {i} document {j} " + "w" * 200 for j in range(8)] for i in range(6)]
    first = store_file(batch_store(settings), settings, [b"\n".join(rerank_line(f"r{i}", f"q{i}", d) for i, d in enumerate(docs))], "a.jsonl")
    job1 = submit_batch(first, settings=settings).job_id
    worker.run(job1)
    assert store.status(job1).state == "completed" and len(worker.scored) == 48
    edited = {(1, 2), (1, 7), (4, 0), (5, 5)}
    for i, j in edited:
        docs[i][j] = "edited " + docs[i][j]
    again = store_file(batch_store(settings), settings, [b"\n".join(rerank_line(f"r{i}", f"q{i}", d) for i, d in enumerate(docs))], "b.jsonl")
    job2 = submit_batch(again, settings=settings).job_id
    worker.scored.clear()
    worker.run(job2)
    assert sorted(worker.scored) == sorted((f"{i:09d}", str(j)) for i, j in edited)
    st = store.status(job2)
    assert (st.state, st.pairs_total, st.pairs_reused) == ("completed", 48, 44)


def test_a_chunk_holds_the_misses_of_its_lines_read_again_from_the_file(tmp_path, monkeypatch):
    """The plan keeps line numbers and pair indexes only; each chunk's pairs come from the file again,
    exactly the pairs left to score, and a line with more text than a chunk's share is cut."""
    import producer.batch_submission as batch_submission
    monkeypatch.setattr(batch_submission, "CHUNK_CHARS", 4000)
    settings = Settings(batch_max_line_bytes=1 << 20)
    lines = [rerank_line(f"l{i}", query=f"q{i % 3}", docs=[f"doc {i}-{j} " + "x" * 300 for j in range(6)]) for i in range(8)]
    lines.insert(3, b"not json")
    lines.insert(5, rerank_line("big", query="big", docs=["y" * 1500 for _ in range(10)]))  # 15,000 characters
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = LineReader(settings, "/v1/rerank")
    with open(path, "rb") as f:
        found = batch_submission.scan(f, reader, settings)
    assert (found.total, found.rejected, found.pairs) == (10, 1, 58)
    seqs = [s for s in range(found.pairs) if s % 4 != 1]  # the cache held every fourth pair
    qid_of = [(line.number, i) for line in found.lines for i in range(line.pairs)]
    misses = iter((s, f"{qid_of[s][0]:09d}", bytes(8) + s.to_bytes(24, "big")) for s in seqs)
    chunks = list(batch_submission._Planner(found, 4).misses(misses).chunks(path, reader))
    got = sorted((int(p["query_id"]), int(p["doc_id"])) for c in chunks for p in c.spec["pairs"])
    assert got == sorted(qid_of[s] for s in seqs) and sum(c.pairs for c in chunks) == len(seqs)
    for c in chunks:
        assert c.pairs == len(c.spec["pairs"])
        assert sum(len(p["query"]) + len(p["document"]) for p in c.spec["pairs"]) <= batch_submission.GROWTH * 4000
    big = [c for c in chunks if any(p["query"] == "big" for p in c.spec["pairs"])]
    assert len(big) >= 2  # its 8 misses' 12,000 characters were cut into pieces
    assert next(p for c in chunks for p in c.spec["pairs"] if p["query_id"] == "000000000")["document"].startswith("doc 0-0")


# --- uploads ---------------------------------------------------------------------------------------
def test_an_upload_is_written_once_straight_into_the_files_dir(settings, tmp_path, monkeypatch):
    spool = tmp_path / "tmpdir"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where an UploadFile would spool
    c = client(settings)
    data = b"".join(rerank_line(f"r{i}", docs=["w" * 2000]) + b"\n" for i in range(1500))  # 3 MB
    f = upload(c, data).json()
    assert f["bytes"] == len(data) and list(spool.iterdir()) == []
    assert on_disk(settings) == [f"{f['id']}.jsonl"] and (Path(settings.files_dir) / f"{f['id']}.jsonl").read_bytes() == data

    small = client(settings, max_file_bytes=4096)
    r = upload(small, b"x" * 100_000)
    assert r.status_code == 413 and on_disk(settings) == [f"{f['id']}.jsonl"]  # no .part left
    r = small.post("/v1/files", files={"file": ("a.jsonl", b"x\n")}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "only 'batch'" in message(r) and on_disk(settings) == [f"{f['id']}.jsonl"]
    r = small.post("/v1/files", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "multipart/form-data" in message(r)


def test_hostile_filenames_are_refused_or_kept_inert(settings):
    c = client(settings)
    rows = file_rows(settings)
    for name in (b"a\x00b.jsonl", b"tab\there.jsonl", b"\x1b]0;title\x07.jsonl", b"del\x7f.jsonl"):
        r = raw_upload(c, b'form-data; name="file"; filename="' + name + b'"')
        assert r.status_code == 400 and "filename holds the control character" in message(r), name
    assert on_disk(settings) == [] and file_rows(settings) == rows  # nothing orphaned

    r = raw_upload(c, b'form-data; name="file"; filename="we\\"ird\\"; evil=1.jsonl"')
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["filename"] == 'we"ird"; evil=1.jsonl'
    got = c.get(f"/v1/files/{f['id']}/content")
    assert got.headers["content-disposition"] == "attachment; filename*=utf-8''we%22ird%22%3B%20evil%3D1.jsonl"
    assert got.content == b"x\n"

    r = raw_upload(c, b"form-data; name=\"file\"; filename*=utf-8''donn%C3%A9es.jsonl")
    assert r.status_code == 200 and r.json()["filename"] == "données.jsonl"
    plain = upload(c, b"x\n", "plain.jsonl").json()
    assert c.get(f"/v1/files/{plain['id']}/content").headers["content-disposition"] == 'attachment; filename="plain.jsonl"'


# --- faults ----------------------------------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs as RERANKQ_FILES_DIR (a real ENOSPC); skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_full_files_dir_creates_the_batch_once_and_finalizes_when_space_returns(settings, small_disk, db):
    c = client(settings, files_dir=small_disk)
    bad = b"".join(b'{"custom_id": "c%d", "oops": %s}\n' % (i, b"1" * 100) for i in range(40))  # every line fails
    f = upload(c, bad).json()
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as out, pytest.raises(OSError):
        while True:
            out.write(b"\0" * 4096)
            out.flush()

    r = upload(c, bad, "second.jsonl")
    assert r.status_code == 507 and "No space left on device" in message(r)
    assert sorted(p.name for p in small_disk.iterdir()) == [f"{f['id']}.jsonl", "filler"]  # no part file

    r = c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/rerank", "notify": HOOK})
    assert r.status_code == 200, r.text  # created: said so, not a 500 the client would retry into a duplicate
    batch = r.json()
    assert events(settings, batch["job_id"]) == []  # no batch.failed before its error file exists
    assert batch["status"] == "finalizing" and batch["output_file_id"] is None and batch["error_file_id"] is None
    assert any(e["code"] == "output_not_written" and "No space left on device" in e["message"] for e in batch["errors"]["data"])
    engine = create_engine(db)
    with engine.connect() as conn:
        count, claim = conn.execute(
            text("SELECT count(*), max(finalizing_at) FROM batches WHERE input_file_id = :f"), {"f": f["id"]}
        ).one()
    engine.dispose()
    assert (count, claim) == (1, None)  # one batch, its claim released
    assert c.get("/v1/batches").status_code == 200

    filler.unlink()
    done = c.get(f"/v1/batches/{batch['id']}").json()  # the next look retries at once, not 600 s later
    assert done["status"] == "failed" and done["error_file_id"] and done["request_counts"]["failed"] == 40
    assert not any(e["code"] == "output_not_written" for e in done["errors"]["data"])
    assert len(c.get(f"/v1/files/{done['error_file_id']}/content").text.splitlines()) == 5
    assert events(settings, batch["job_id"]) == ["batch.failed"]


def test_a_batch_event_waits_for_its_output_and_the_service_writes_it_unasked(settings, db):
    from producer.job_control import cancel
    from producer.service import create_app

    c = client(settings)
    f = upload(c, rerank_line("w") + b"\n").json()
    batch = c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/rerank", "notify": HOOK}).json()
    cancel(batch["job_id"], settings)  # the job ends; no client looks at the batch
    assert events(settings, batch["job_id"]) == []

    def written() -> bool:
        engine = create_engine(db)
        with engine.connect() as conn:
            at = conn.execute(text("SELECT completed_at FROM batches WHERE id = :b"), {"b": batch["id"]}).scalar_one()
        engine.dispose()
        return at is not None

    with TestClient(create_app(settings)):  # the service's lifespan runs its finalizer
        wait_for(written, 30, "the service writing the cancelled batch's output")
    assert events(settings, batch["job_id"]) == ["batch.cancelled"]
    done = c.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "cancelled" and done["error_file_id"]


def test_the_listing_survives_a_batch_whose_input_bytes_are_gone(settings):
    c = client(settings)
    fine = upload(c, b"x\n").json()
    fine_batch = c.post("/v1/batches", json={"input_file_id": fine["id"], "endpoint": "/v1/rerank"}).json()
    waiting = upload(c, rerank_line("w") + b"\n").json()
    broken = c.post("/v1/batches", json={"input_file_id": waiting["id"], "endpoint": "/v1/rerank"}).json()
    assert broken["status"] == "in_progress"
    (Path(settings.files_dir) / f"{waiting['id']}.jsonl").unlink()
    cancelled = c.post(f"/v1/batches/{broken['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelling", "finalizing")

    listing = c.get("/v1/batches", params={"limit": 100})
    assert listing.status_code == 200, listing.text
    by_id = {b["id"]: b for b in listing.json()["data"]}
    assert by_id[fine_batch["id"]]["status"] == "failed" and by_id[fine_batch["id"]]["error_file_id"]
    gone = by_id[broken["id"]]
    assert gone["status"] == "finalizing"
    assert [e["code"] for e in gone["errors"]["data"]] == ["output_not_written"]
    assert "No such file or directory" in gone["errors"]["data"][0]["message"]
    again = c.post("/v1/batches", json={"input_file_id": waiting["id"], "endpoint": "/v1/rerank"})
    assert again.status_code == 400 and "its bytes are gone" in message(again)


def test_prune_removes_part_files_of_writers_that_died(settings, sqlite_url):
    import os
    import time

    from producer.batch_files import prune_files

    migrate(sqlite_url)
    settings = settings.model_copy(update={"database_url": SecretStr(sqlite_url)})  # a ledger of its own: nothing else to prune
    c = client(settings)
    kept = upload(c, b"x\n").json()
    files = Path(settings.files_dir)
    dead, live = files / "file-dead.jsonl.part", files / "file-live.jsonl.part"
    dead.write_bytes(b"half an upload")
    live.write_bytes(b"an upload in flight")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    assert prune_files(settings, older_than=60, dry_run=True) == (1, 14) and dead.exists()
    assert prune_files(settings, older_than=60) == (1, 14)
    assert on_disk(settings) == sorted([f"{kept['id']}.jsonl", "file-live.jsonl.part"])
