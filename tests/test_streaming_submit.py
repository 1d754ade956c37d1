"""Streaming submission (issue 30), on SQLite and PostgreSQL with a real Redis: chunks are recorded and
queued piece by piece while the manifest is still read (producer/streaming.py).

A later file of the manifest is held back (its opening blocks on an event) so each test can look at the
job while it is being submitted: its first chunk is in the ledger and in Redis, the job says
``submitting``, it cannot end, and then a bad row in that file refuses it with its row and field (queued
chunks cancelled, nothing exported), a cancel stops the submission, or a kill leaves a true ledger.
Chunks are scored here by the fake worker of tests/test_reuse.py (the ledger's own calls, as a worker
makes them); a real worker scoring the first chunk before the last file is read is the last test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

import producer.manifest
from producer.changes import diff
from producer.errors import InputError
from producer.export import iter_ranked
from producer.queueing import queue_depths
from producer.submission import submit_manifest
from rerankq.manifest_source import ManifestError
from rerankq.settings import Settings
from rerankq.store.ledger import Ledger
from rerankq.store.models import Chunk, Score
from schemas import JobState
from tests.conftest import base_env, migrate
from tests.conftest import producer as run_producer
from tests.corpus import rows, write_manifest
from tests.nightly import night2
from tests.polling import wait_for
from tests.services import POSTGRES_URL, create_database, drop_database, redis_client
from tests.test_reuse import MAX_LENGTH, FakeWorker, exported, fake_score
from tests.workers import REPO, WorkerProcess
from worker.chunk_pairs import load_pairs

CHUNK = 20


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path, tiny_model, redis_url) -> Iterator[tuple[Ledger, Settings]]:
    """A fresh ledger per test (a database of its own on PostgreSQL); the module's Redis database, emptied."""
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" else create_database(POSTGRES_URL)
    migrate(url)
    redis_client(redis_url).flushdb()
    settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), dtype="float32", max_length=MAX_LENGTH)
    yield Ledger(url), settings
    if request.param == "postgresql":
        from rerankq.store.db import get_engine

        get_engine(url).dispose()
        drop_database(POSTGRES_URL, url)


class HeldFile:
    """Opening the manifest's file named ``name`` blocks until ``release()``: the submission is seen
    mid-way, its first files recorded and queued, the held one not read yet."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str):
        self.name, self.reached, self.go = name, threading.Event(), threading.Event()
        real = producer.manifest.open_parquet

        def held(fs, path):  # noqa: ANN001, ANN202
            if Path(path).name == name:
                self.reached.set()
                assert self.go.wait(300), "the held file was never released"
            return real(fs, path)

        monkeypatch.setattr(producer.manifest, "open_parquet", held)

    def release(self) -> None:
        self.go.set()


class Submitting(threading.Thread):
    """``submit_manifest`` in a thread: its job id as soon as the job exists, its outcome at the end."""

    def __init__(self, manifest: Path, settings: Settings, **kw: object):
        super().__init__(daemon=True)
        self.manifest, self.settings, self.kw = manifest, settings, kw
        self.job_id: str | None = None
        self.result: str | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = submit_manifest(
                str(self.manifest), settings=self.settings, chunk_size=CHUNK, on_job=self._job, **self.kw  # type: ignore[arg-type]
            )
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def _job(self, job_id: str) -> None:
        self.job_id = job_id

    def outcome(self) -> str | BaseException | None:
        self.join(300)
        assert not self.is_alive(), "the submission did not end"
        return self.error or self.result


def three_files(tmp_path: Path, seed: int = 5, bad: bool = False) -> tuple[Path, dict]:
    """150 pairs in 3 files of 50 (queries spanning files); ``bad``: an empty document in the last file."""
    cols = rows(n_queries=15, docs_per_query=10, seed=seed)
    if bad:
        cols["document"][130] = ""  # row 30 of part-002.parquet
    return write_manifest(tmp_path / f"m{seed}{'bad' if bad else ''}", cols, files=3, row_group_size=10), cols


def queued_in_redis(settings: Settings) -> int:
    return queue_depths(settings)["batch"]


def first_chunk_queued(store: Ledger, settings: Settings, job_id: str | None) -> bool:
    if job_id is None:
        return False
    with store.session() as s:
        sent = s.scalar(select(func.count()).where(Chunk.job_id == job_id, Chunk.enqueued_at.is_not(None)))
    return bool(sent) and queued_in_redis(settings) > 0


def score_queued(store: Ledger, worker: FakeWorker, job_id: str) -> int:
    """Score the chunks of the job that are pending, as a worker does; how many it finished."""
    done = 0
    for msg in store.resumable(job_id):
        if store.begin_chunk(job_id, msg.chunk_id, "test:1", worker.model, worker.context.digest) is not None:
            continue
        keyed = load_pairs(msg.spec)
        from rerankq.store.records import ScoreRow
        from tests.test_reuse import fake_logit

        keys = worker.context.keys([k.pair.instruction for k in keyed], [k.pair.query for k in keyed], [k.pair.document for k in keyed])
        worker.scored += [(k.query_id, k.doc_id) for k in keyed]
        rows_ = [ScoreRow(k.query_id, k.doc_id, fake_score(k.pair), None, key, fake_logit(k.pair)) for k, key in zip(keyed, keys)]
        done += store.finish_chunk(job_id, msg.chunk_id, rows_)
    return done


def test_first_chunk_is_queued_and_scored_before_the_last_file_is_read(env, tmp_path, monkeypatch, tiny_model):
    store, settings = env
    manifest, cols = three_files(tmp_path)
    held = HeldFile(monkeypatch, "part-002.parquet")
    sub = Submitting(manifest, settings)
    wait_for(held.reached.is_set, 120, "the submission to reach the last file")
    wait_for(lambda: first_chunk_queued(store, settings, sub.job_id), 120, "the first chunk in the ledger and in Redis")
    st = store.status(sub.job_id)
    assert st.submitting and st.state == JobState.queued and 0 < st.pairs_total < 150
    worker = FakeWorker(store, settings, tiny_model)
    assert score_queued(store, worker, sub.job_id) >= 1  # a worker scores it while the rest is unread
    st = store.status(sub.job_id)
    assert st.submitting and not st.state.terminal, "a job cannot end while it is being submitted"
    assert not st.chunks.pending and not st.chunks.running
    with pytest.raises(InputError, match="still being submitted"):
        list(iter_ranked(store, sub.job_id))
    held.release()
    assert sub.outcome() == sub.job_id
    st = store.status(sub.job_id)
    assert not st.submitting and st.pairs_total == 150 and st.state == JobState.running
    score_queued(store, worker, sub.job_id)
    st = store.status(sub.job_id)
    assert st.state == JobState.completed and st.pairs_scored == 150
    exported = [(r["query_id"], r["doc_id"]) for r in iter_ranked(store, sub.job_id)]
    assert sorted(exported) == sorted(zip(cols["query_id"], cols["doc_id"])), "every pair exactly once"
    assert sorted(worker.scored) == sorted(exported), "every pair scored exactly once"


def test_a_bad_row_in_the_last_file_refuses_the_job_and_its_queued_chunks(env, tmp_path, monkeypatch, tiny_model):
    store, settings = env
    manifest, _ = three_files(tmp_path, bad=True)
    held = HeldFile(monkeypatch, "part-002.parquet")
    sub = Submitting(manifest, settings)
    wait_for(lambda: first_chunk_queued(store, settings, sub.job_id), 120, "the first chunk in the ledger and in Redis")
    wait_for(held.reached.is_set, 120, "the submission to reach the last file")
    worker = FakeWorker(store, settings, tiny_model)
    (first, *rest) = store.resumable(sub.job_id)
    assert store.begin_chunk(sub.job_id, first.chunk_id, "test:1", worker.model, worker.context.digest) is None
    held.release()
    error = sub.outcome()
    assert isinstance(error, ManifestError)
    assert f"job {sub.job_id} refused" in str(error) and "nothing is exported" in str(error)
    assert "part-002.parquet row 30 field 'document': is an empty string" in str(error)
    st = store.status(sub.job_id)
    assert st.state == JobState.failed and st.submitting
    assert "part-002.parquet row 30 field 'document'" in st.errors[0]
    assert st.chunks.cancelled == len(rest) and st.chunks.running == 1 and not st.chunks.pending
    for msg in rest:  # their messages are still in Redis: a worker taking one skips it
        assert store.begin_chunk(sub.job_id, msg.chunk_id, "test:1", worker.model, worker.context.digest) is not None
    keyed = load_pairs(first.spec)
    from rerankq.store.records import ScoreRow

    store.finish_chunk(sub.job_id, first.chunk_id, [ScoreRow(k.query_id, k.doc_id, fake_score(k.pair), None) for k in keyed])
    assert store.status(sub.job_id).state == JobState.failed, "a chunk finishing late never revives the job"
    assert store.score_count(sub.job_id) == len(keyed), "its scores are kept, as a cancelled job's are"
    with pytest.raises(InputError, match="never fully submitted"):
        list(iter_ranked(store, sub.job_id))
    with pytest.raises(InputError, match="never fully submitted"):
        diff(store, sub.job_id, sub.job_id)


def test_reuse_in_pieces_copies_exactly_the_unchanged_pairs(env, tmp_path, monkeypatch, tiny_model):
    """Night 2 recorded in pieces of 7 rows: unchanged pairs copied from the cache, the others scored,
    the export what a full re-score gives."""
    store, settings = env
    monkeypatch.setattr(producer.manifest, "BATCH_ROWS", 7)
    night1 = rows(n_queries=20, docs_per_query=(3, 15), seed=9)
    worker = FakeWorker(store, settings, tiny_model)
    job1 = submit_manifest(str(write_manifest(tmp_path / "n1", night1, files=2)), settings=settings, chunk_size=CHUNK)
    score_queued(store, worker, job1)
    cols2, changes = night2(night1)
    notes: list[str] = []
    worker.scored = []
    job2 = submit_manifest(str(write_manifest(tmp_path / "n2", cols2, files=3)), settings=settings, chunk_size=CHUNK, report=notes.append)
    score_queued(store, worker, job2)
    st = store.status(job2)
    assert st.state == JobState.completed and not st.submitting
    assert sorted(worker.scored) == sorted(changes["edited"] | changes["new"]), "only what changed reaches a worker"
    assert st.pairs_reused == len(cols2["query_id"]) - len(worker.scored) and notes[0].startswith(f"reused {st.pairs_reused:,} of")
    full = submit_manifest(str(write_manifest(tmp_path / "n2full", cols2)), settings=settings, reuse=False, chunk_size=10_000)
    score_queued(store, worker, full)  # one piece, one chunk, every pair scored
    assert exported(store, job2) == exported(store, full)


def test_cancel_while_submitting_stops_the_submission(env, tmp_path, monkeypatch):
    store, settings = env
    manifest, _ = three_files(tmp_path)
    held = HeldFile(monkeypatch, "part-002.parquet")
    sub = Submitting(manifest, settings)
    wait_for(held.reached.is_set, 120, "the submission to reach the last file")
    wait_for(lambda: sub.job_id, 120, "the job")
    assert store.cancel(sub.job_id) == JobState.cancelled
    held.release()
    error = sub.outcome()
    assert isinstance(error, InputError) and "cancelled while it was being submitted" in str(error)
    st = store.status(sub.job_id)
    assert st.state == JobState.cancelled and st.submitting and not st.chunks.pending


KILLED_SUBMIT = """
import sys, threading
from pathlib import Path
import producer.manifest
from producer.submission import submit_manifest
from rerankq.settings import Settings

real = producer.manifest.open_parquet
def held(fs, path):
    if Path(path).name == "part-002.parquet":
        print("HELD", flush=True)
        threading.Event().wait()
    return real(fs, path)
producer.manifest.open_parquet = held
settings = Settings(database_url=sys.argv[2], broker_url=sys.argv[3], model=sys.argv[4], dtype="float32", max_length=512)
submit_manifest(sys.argv[1], settings=settings, chunk_size=20, on_job=lambda job: print("JOB", job, flush=True))
"""


def test_a_submitter_killed_mid_way_leaves_a_true_ledger(env, tmp_path, tiny_model):
    """kill -9 while a later file is read: every recorded piece is whole, the job stays ``submitting``
    (it cannot end, nothing is exported), and `producer cancel` ends it."""
    store, settings = env
    manifest, _ = three_files(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SUBMIT, str(manifest), settings.database, settings.broker, str(tiny_model)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    job_id = None
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("JOB "):
            job_id = line.split()[1]
        if line.startswith("HELD"):
            break
    assert job_id is not None
    wait_for(lambda: first_chunk_queued(store, settings, job_id), 120, "the first chunk queued")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = store.status(job_id)
    assert st.submitting and st.state == JobState.queued
    with store.session() as s:
        chunk_pairs = s.scalar(select(func.sum(Chunk.pairs)).where(Chunk.job_id == job_id))
        scores = s.scalar(select(func.count()).select_from(Score).where(Score.job_id == job_id))
    assert st.pairs_total == chunk_pairs + scores, "the counters match the recorded chunks: each piece is whole"
    env_vars = base_env(tiny_model, settings.database, settings.broker)
    shown = json.loads(run_producer("status", job_id, "--json", env=env_vars, check=True).stdout)
    assert shown["submitting"] is True
    assert "submitting" in run_producer("list", env=env_vars, check=True).stdout
    assert f"submitting: {st.pairs_total} pairs recorded so far" in run_producer("status", job_id, env=env_vars, check=True).stdout
    assert run_producer("export", job_id, "--out", str(tmp_path / "x.parquet"), env=env_vars).returncode == 3
    run_producer("cancel", job_id, env=env_vars, check=True)
    st = store.status(job_id)
    assert st.state == JobState.cancelled and not st.chunks.pending


@pytest.mark.slow
def test_a_real_worker_scores_the_first_chunk_before_the_last_file_is_read(tiny_model, tmp_path, monkeypatch, redis_url):
    """PostgreSQL, the worker users start: the job's first chunk is scored while the submission waits on
    its last file; the job then completes with every pair exactly once."""
    url = create_database(POSTGRES_URL)
    migrate(url)
    redis_client(redis_url).flushdb()
    worker = WorkerProcess(base_env(tiny_model, url, redis_url, RERANKQ_MAX_LENGTH=MAX_LENGTH), tmp_path / "worker.log")
    try:
        worker.start().wait_ready()
        store = Ledger(url)
        settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), dtype="float32", max_length=MAX_LENGTH)
        manifest, cols = three_files(tmp_path)
        held = HeldFile(monkeypatch, "part-002.parquet")
        sub = Submitting(manifest, settings, reuse=False)
        wait_for(held.reached.is_set, 120, "the submission to reach the last file")

        def first_scored() -> bool:
            return sub.job_id is not None and store.status(sub.job_id).chunks.done > 0

        wait_for(first_scored, 300, "the real worker to score the first chunk")
        assert store.status(sub.job_id).submitting
        held.release()
        assert sub.outcome() == sub.job_id
        wait_for(lambda: store.status(sub.job_id).state.terminal, 300, "the job to end")
        st = store.status(sub.job_id)
        assert st.state == JobState.completed and st.pairs_scored == 150, worker.log()[-3000:]
        exported = sorted((r["query_id"], r["doc_id"]) for r in iter_ranked(store, sub.job_id))
        assert exported == sorted(zip(cols["query_id"], cols["doc_id"]))
    finally:
        worker.terminate()
        from rerankq.store.db import get_engine

        get_engine(url).dispose()
        drop_database(POSTGRES_URL, url)


def test_a_cascade_hands_on_stage_2_chunks_while_it_is_submitted(env, tmp_path, monkeypatch, tiny_model):
    """A stage-1 chunk finishing during the submission records its stage-2 chunk (the next number under the
    job's lock, as the submission numbers its own): no number is taken twice, and the job ends after both."""
    from rerankq.store.records import NewChunk, ScoreRow

    store, settings = env
    manifest, cols = three_files(tmp_path)
    held = HeldFile(monkeypatch, "part-002.parquet")
    sub = Submitting(manifest, settings, then=f"{tiny_model}:top=2")
    wait_for(lambda: first_chunk_queued(store, settings, sub.job_id), 120, "the first chunk queued")
    wait_for(held.reached.is_set, 120, "the submission to reach the last file")
    first = store.resumable(sub.job_id)[0]
    assert store.begin_chunk(sub.job_id, first.chunk_id, "test:1", str(tiny_model)) is None
    keyed = load_pairs(first.spec)
    top = [k for k in keyed][:2]
    stage2 = NewChunk({"kind": "inline", "pairs": [{"query_id": k.query_id, "doc_id": k.doc_id, "query": k.pair.query,
                                                    "document": k.pair.document} for k in top]}, len(top))  # fmt: skip
    assert store.finish_chunk(sub.job_id, first.chunk_id, [ScoreRow(k.query_id, k.doc_id, 0.5, None) for k in keyed], then=stage2)
    held.release()
    assert sub.outcome() == sub.job_id
    with store.session() as s:
        seqs = list(s.scalars(select(Chunk.seq).where(Chunk.job_id == sub.job_id)))
    assert len(seqs) == len(set(seqs)) == store.status(sub.job_id).chunks_total
    assert not store.status(sub.job_id).state.terminal, "its stage-2 chunk and the rest are still to score"
