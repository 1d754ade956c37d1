"""Score reuse without an engine, on SQLite and PostgreSQL: the cache key (a miss for each part of it),
submission that copies cached scores and chunks only the rest, changes between jobs, and retention.

A "scoring" here is done by this test in place of a worker: it takes the chunks the ledger holds,
reads their pairs as a worker does (worker/chunk_pairs.py), gives each a score that depends on its
texts only, and finishes the chunk with the keys of the worker's context. The real worker is in
tests/test_incremental.py."""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, update

from producer.changes import diff, export_changes
from producer.export import iter_ranked
from producer.submission import submit_manifest, submit_pairs
from producer.tiny_model import write_tiny_model
from rerankq.log_odds import log_odds
from rerankq.prompt import Pair
from rerankq.score_key import context_for, model_fingerprint, pair_keys
from rerankq.settings import DEFAULT_INSTRUCTION, Settings
from rerankq.store.cache_gens import day_of
from rerankq.store.clock import now
from rerankq.store.contexts import record_worker_context
from rerankq.store.ledger import Ledger
from rerankq.store.models import CachedScore, Job
from rerankq.store.records import ScoreRow
from rerankq.store.retention import parse_age, prune_jobs
from rerankq.store.score_cache import prune_cache
from schemas import ChunkMessage, JobState
from tests.conftest import migrate
from tests.corpus import rows, write_manifest
from tests.nightly import night2
from tests.services import POSTGRES_URL, REDIS_URL, create_database, drop_database, redis_client
from worker.chunk_pairs import load_pairs

MAX_LENGTH = 512


# --- the key: a miss for each of its parts ------------------------------------------------------------
def _settings(model: Path, **kw) -> Settings:
    return Settings(model=str(model), dtype=kw.pop("dtype", "float32"), max_length=kw.pop("max_length", MAX_LENGTH), **kw)


def _key(model: Path, instruction="Find it", query="what is a reranker?", document="it orders passages", **kw) -> bytes:
    return context_for(_settings(model, **kw), model).key(Pair(query, document, instruction))  # type: ignore[return-value]


def _header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: 8 + int.from_bytes(data[:8], "little")]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model):
    """The tiny model; another model in another directory; and a directory whose weights get replaced."""
    root = tmp_path_factory.mktemp("models")
    other = write_tiny_model(root / "other", seed=1)
    same = root / "same"
    shutil.copytree(tiny_model, same)
    return tiny_model, other, same


def test_same_context_and_pair_hit(models):
    tiny, _, same = models
    assert _key(tiny) == _key(tiny)
    assert _key(tiny) == _key(same), "a byte-identical copy of the model elsewhere is the same model"
    assert _key(tiny, instruction=None) == _key(tiny, instruction=DEFAULT_INSTRUCTION), "resolved, as the worker does"


def test_another_model_directory_misses(models):
    tiny, other, _ = models
    assert _key(tiny) != _key(other)


def test_other_weights_with_the_same_name_and_directory_miss(models, tmp_path):
    tiny, _, _ = models
    target = tmp_path / "model"
    shutil.copytree(tiny, target)
    before = _key(target)
    header = _header(target / "model.safetensors")
    write_tiny_model(target, seed=7)  # same shapes, names, dtype and file size: other values
    assert _header(target / "model.safetensors") == header
    assert (target / "model.safetensors").stat().st_size == (tiny / "model.safetensors").stat().st_size
    assert _key(target) != before


def test_other_weights_miss_when_sampled_not_hashed(models, tmp_path, monkeypatch):
    """Large checkpoints are sampled per tensor (rerankq/score_key.py): new values still change the key."""
    import rerankq.score_key as score_key

    tiny, _, _ = models
    monkeypatch.setattr(score_key, "FULL_HASH_BYTES", 0)
    target = tmp_path / "model"
    shutil.copytree(tiny, target)
    before = model_fingerprint(target)
    write_tiny_model(target, seed=8)
    assert model_fingerprint(target) != before
    assert model_fingerprint(target) != model_fingerprint(target, full=True)


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 1024},
        {"dtype": "bfloat16"},
        {"instruction": "Find something else"},
        {"instruction": None},
        {"document": "it orders passages!"},
        {"query": "what is a reranker"},
        {"quantization": "awq"},
        {"enable_prefix_caching": True},
        {"engine": "hf"},
        {"tensor_parallel_size": 2},
    ],
    ids=lambda c: next(iter(c)),
)
def test_each_part_of_the_key_misses(models, change):
    tiny, _, _ = models
    assert _key(tiny, **change) != _key(tiny)


def test_prompt_recipe_and_batch_invariance_miss(models, monkeypatch):
    import rerankq.score_key as score_key

    tiny, _, _ = models
    base = _key(tiny)
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")
    assert _key(tiny) != base
    monkeypatch.delenv("VLLM_BATCH_INVARIANT")
    monkeypatch.setattr(score_key, "PROMPT_RECIPE", "qwen3-reranker-card/2")
    ctx = context_for(_settings(tiny), tiny)
    assert ctx.prompt_recipe == "qwen3-reranker-card/1"  # the default was bound at import: build it explicitly
    from dataclasses import replace

    assert replace(ctx, prompt_recipe="qwen3-reranker-card/2").digest != ctx.digest


def test_pair_fields_cannot_run_into_each_other():
    ctx = "00" * 32
    assert pair_keys(ctx, ["ab"], ["c"], ["d"]) != pair_keys(ctx, ["a"], ["bc"], ["d"])
    assert pair_keys(ctx, ["a"], ["bc"], ["d"]) != pair_keys(ctx, ["a"], ["b"], ["cd"])


# --- submission with reuse, both databases -------------------------------------------------------------
def fake_score(pair) -> float:
    text = f"{pair.instruction}\x00{pair.query}\x00{pair.document}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:6], "big") / 2**48


def fake_logit(pair) -> float:
    """The log-odds the fake worker records with ``fake_score``: reuse must carry both."""
    return log_odds(fake_score(pair))


class FakeWorker:
    """Scores what the ledger holds pending, as a worker would (keys in its own context)."""

    def __init__(self, store: Ledger, settings: Settings, model: Path, worker_id: str = "test:1"):
        self.store, self.context, self.model = store, context_for(settings, model), settings.model
        record_worker_context(store, worker_id, settings, self.context)
        self.scored: list[tuple[str, str]] = []

    def run(self, job_id: str) -> None:
        for msg in self.store.resumable(job_id):
            assert self.store.begin_chunk(job_id, msg.chunk_id, "test:1", self.model, self.context.digest) is None
            keyed = load_pairs(msg.spec)
            keys = self.context.keys([k.pair.instruction for k in keyed], [k.pair.query for k in keyed], [k.pair.document for k in keyed])
            self.scored += [(k.query_id, k.doc_id) for k in keyed]
            rows = [ScoreRow(k.query_id, k.doc_id, fake_score(k.pair), None, key, fake_logit(k.pair)) for k, key in zip(keyed, keys)]
            self.store.finish_chunk(job_id, msg.chunk_id, rows)


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path, tiny_model):
    """A fresh ledger per test (a database of its own on PostgreSQL), and a Redis database."""
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" else create_database(POSTGRES_URL)
    migrate(url)
    broker = f"{REDIS_URL}/{9 if request.param == 'sqlite' else 10}"
    redis_client(broker).flushdb()
    settings = Settings(database_url=url, broker_url=broker, model=str(tiny_model), dtype="float32", max_length=MAX_LENGTH)
    yield Ledger(url), settings
    if request.param == "postgresql":
        from rerankq.store.db import get_engine

        get_engine(url).dispose()
        drop_database(POSTGRES_URL, url)


def exported(store: Ledger, job: str) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Each pair's (probability, log-odds, rank): a reused pair must give all three as a scored one."""
    out = {(r["query_id"], r["doc_id"]): (r["score"], r["logit"], r["rank"]) for r in iter_ranked(store, job)}
    assert all(v[1] is not None for k, v in out.items() if v[0] is not None), "every score has its log-odds"
    return out


def test_nightly_reuse_scores_only_what_changed(env, tmp_path, tiny_model):
    store, settings = env
    night1 = rows(n_queries=30, docs_per_query=(5, 40), seed=3)
    m1 = write_manifest(tmp_path / "n1", night1, files=3)
    cols2, changes = night2(night1)
    m2 = write_manifest(tmp_path / "n2", cols2, files=3)
    notes: list[str] = []

    job0 = submit_manifest(str(m1), chunk_size=50, settings=settings, report=notes.append)
    assert "no worker has recorded" in notes[-1] and store.status(job0).pairs_reused == 0
    worker = FakeWorker(store, settings, tiny_model)
    job1 = submit_manifest(str(m1), chunk_size=50, settings=settings, report=notes.append)
    assert store.status(job1).pairs_reused == 0, "nothing is cached before a worker scores"
    worker.run(job1)
    assert store.status(job1).state == JobState.completed

    worker.scored.clear()
    job2 = submit_manifest(str(m2), chunk_size=50, settings=settings, report=notes.append)
    st = store.status(job2)
    assert notes[-1].startswith("reused ")
    expected = changes["edited"] | changes["new"]
    assert st.pairs_reused == len(cols2["query_id"]) - len(expected)
    assert st.pairs_total == len(cols2["query_id"])
    chunks = store.resumable(job2)
    assert sum(len(load_pairs(m.spec)) for m in chunks) == len(expected), "chunks hold only the misses"
    assert any(seg.rows for m in chunks for seg in m.spec.segments), "scattered misses name their rows"
    for m in chunks:  # still cut between queries: a query's misses all in one chunk
        assert ChunkMessage.model_validate(m.model_dump(mode="json")) == m
    worker.run(job2)
    assert sorted(worker.scored) == sorted(expected), "only edited and new pairs are scored"
    st = store.status(job2)
    assert st.state == JobState.completed and (st.pairs_scored, st.pairs_reused) == (len(expected), st.pairs_total - len(expected))

    full = submit_manifest(str(m2), chunk_size=50, settings=settings, reuse=False)
    assert store.status(full).pairs_reused == 0
    worker.run(full)
    assert exported(store, job2) == exported(store, full)

    # inline pairs: the same behaviour through the Python API
    pairs = [
        {"query_id": q, "doc_id": d, "query": qt, "document": dt, "instruction": i}
        for q, d, qt, dt, i in zip(*(cols2[k] for k in ("query_id", "doc_id", "query", "document", "instruction")))
    ][:120]
    for p in pairs[::17]:  # 8 documents edited since
        p["document"] += " (edited again)"
    worker.scored.clear()
    inline = submit_pairs(pairs, settings=settings, chunk_size=40)
    st = store.status(inline)
    assert st.pairs_reused == 120 - 8
    worker.run(inline)
    assert sorted(worker.scored) == sorted((p["query_id"], p["doc_id"]) for p in pairs[::17])
    assert store.status(inline).state == JobState.completed
    ref = exported(store, full)
    got = exported(store, inline)
    assert all(got[k][0] == ref[k][0] for k in got if k not in set(worker.scored))


def test_fully_cached_job_is_complete_at_once_and_enqueues_nothing(env, tmp_path, tiny_model):
    store, settings = env
    cols = rows(n_queries=6, docs_per_query=8, seed=5)
    m = write_manifest(tmp_path / "m.parquet", cols)
    worker = FakeWorker(store, settings, tiny_model)
    first = submit_manifest(str(m), settings=settings)
    worker.run(first)
    queue = redis_client(settings.broker)
    before = queue.llen("gpu")
    again = submit_manifest(str(m), settings=settings)
    st = store.status(again)
    assert st.state == JobState.completed and st.pairs_reused == st.pairs_total == 48 and st.chunks_total == 0
    assert queue.llen("gpu") == before
    assert exported(store, again) == exported(store, first)
    # another instruction for rows without one: those miss
    other = submit_manifest(str(m), settings=settings, instruction="Rank by something else")
    assert store.status(other).pairs_reused == sum(i is not None for i in cols["instruction"])


def test_no_reuse_when_settings_or_files_differ_or_context_is_ambiguous(env, tmp_path, tiny_model, models):
    store, settings = env
    cols = rows(n_queries=3, docs_per_query=5, seed=6)
    m = write_manifest(tmp_path / "m.parquet", cols)
    worker = FakeWorker(store, settings, tiny_model)
    worker.run(submit_manifest(str(m), settings=settings))
    notes: list[str] = []
    longer = settings.model_copy(update={"max_length": 1024})
    assert store.status(submit_manifest(str(m), settings=longer, report=notes.append)).pairs_reused == 0
    assert "no worker has recorded" in notes[-1]
    # a worker ran other weights under the same model name: ambiguous without a live worker to decide
    _, other, _ = models
    ctx = context_for(settings, other)
    from rerankq.score_key import configured
    from rerankq.store.contexts import record_context

    record_context(store, ctx.digest, settings.model, configured(settings), ctx.as_dict())
    from unittest import mock

    with mock.patch("producer.reuse.local_model_path", return_value=None):  # a producer without the files
        assert store.status(submit_manifest(str(m), settings=settings, report=notes.append)).pairs_reused == 0
        assert notes[-1].startswith("no reuse") and "ambiguous" in notes[-1]
    # with the files here, the local fingerprint decides
    assert store.status(submit_manifest(str(m), settings=settings, report=notes.append)).pairs_reused == 15


# --- changes between jobs -------------------------------------------------------------------------------
def _job(store: Ledger, scores: dict[tuple[str, str], float | None]) -> str:
    from rerankq.store.records import NewChunk
    from schemas import InlinePair, InlineSpec

    pairs = [InlinePair(query_id=q, doc_id=d, query="q", document="d") for q, d in scores]
    job, (msg,) = store.create_job(kind="inline", chunks=[NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), len(pairs))])
    store.begin_chunk(job, msg.chunk_id, "w", "m")
    rows = [ScoreRow(q, d, s, None if s is not None else "bad", None, None if s is None else log_odds(s)) for (q, d), s in scores.items()]
    store.finish_chunk(job, msg.chunk_id, rows)
    return job


def test_changes_and_diff(env, tmp_path):
    store, _ = env
    old = _job(store, {("a", "1"): 0.9, ("a", "2"): 0.5, ("a", "3"): 0.1, ("b", "1"): 0.3, ("b", "2"): 0.2, ("c", "1"): 0.4})
    new = _job(store, {("a", "1"): 0.9, ("a", "2"): 0.05, ("a", "3"): 0.1, ("b", "1"): 0.3, ("b", "2"): 0.2, ("b", "9"): 0.8, ("d", "1"): None})
    out = tmp_path / "changes.parquet"
    counts = export_changes(store, old, new, out)
    got = {(r["query_id"], r["doc_id"]): r for r in pq.read_table(out).to_pylist()}
    assert {k: r["change"] for k, r in got.items()} == {
        ("a", "2"): "changed",  # 0.5 -> 0.05: rank 2 -> 3
        ("a", "3"): "moved",  # same score, rank 3 -> 2
        ("b", "9"): "new",
        ("b", "1"): "moved",  # pushed down by the new pair
        ("b", "2"): "moved",
        ("c", "1"): "removed",
        ("d", "1"): "new",
    }
    assert (got[("a", "2")]["old_rank"], got[("a", "2")]["new_rank"]) == (2, 3)
    assert (got[("a", "2")]["old_score"], got[("a", "2")]["new_score"]) == (0.5, 0.05)
    assert got[("c", "1")]["new_rank"] is None and got[("c", "1")]["old_rank"] == 1
    assert got[("d", "1")]["new_rank"] is None and got[("d", "1")]["error"] == "bad"
    assert counts == {"new": 2, "removed": 1, "changed": 1, "moved": 3}
    d = diff(store, old, new, top_k=1)
    assert (d.unchanged, d.changed, d.moved, d.new, d.removed) == (1, 1, 3, 2, 1)
    assert d.examples == ["b", "c"] and d.queries_top_k_changed == 2  # d has no ranked pair: no top 1
    d = diff(store, old, new, top_k=10)
    assert d.examples == ["a", "b", "c"]
    assert diff(store, new, new).unchanged == 7 and export_changes(store, new, new, out) == dict.fromkeys(counts, 0)


# --- retention ------------------------------------------------------------------------------------------
def test_prune_jobs_only_finished_old_ones(env):
    store, _ = env
    done = _job(store, {("a", "1"): 0.5})
    running = _job(store, {("a", "1"): 0.5})
    from rerankq.store.records import NewChunk
    from schemas import InlinePair, InlineSpec

    spec = InlineSpec(pairs=[InlinePair(query_id="q", doc_id="d", query="q", document="d")]).model_dump(mode="json")
    queued, _ = store.create_job(kind="inline", chunks=[NewChunk(spec, 1)])
    cancelled, (m,) = store.create_job(kind="inline", chunks=[NewChunk(spec, 1)])
    store.begin_chunk(cancelled, m.chunk_id, "w", "m")
    store.cancel(cancelled)  # its chunk still runs on a worker
    old = now() - timedelta(days=40)
    with store.session.begin() as s:
        s.execute(update(Job).values(created_at=old, finished_at=old))
        s.execute(update(Job).where(Job.id == running).values(state="running", finished_at=None))
    assert prune_jobs(store, parse_age("30d"), dry_run=True).jobs == [done]
    report = prune_jobs(store, parse_age("30d"))
    assert report.jobs == [done] and (report.scores, report.chunks) == (1, 1)
    assert {j.job_id for j in store.list_jobs()} >= {running, queued, cancelled}
    assert done not in {j.job_id for j in store.list_jobs()}
    assert prune_jobs(store, parse_age("30d")).jobs == []
    with pytest.raises(ValueError):
        parse_age("thirty days")


def test_prune_cache_by_last_use(env, tmp_path, tiny_model):
    store, settings = env
    cols = rows(n_queries=2, docs_per_query=5, seed=9)
    m = write_manifest(tmp_path / "m.parquet", cols)
    worker = FakeWorker(store, settings, tiny_model)
    worker.run(submit_manifest(str(m), settings=settings))
    old = now() - timedelta(days=40)
    with store.session.begin() as s:  # use is recorded per generation (rerankq/store/cache_gens.py)
        s.execute(update(CachedScore).values(gen=day_of(old), created_at=old))
    submit_manifest(str(m), settings=settings)  # reuses every pair: their generation is used now
    with store.session() as s:  # and, that old, they moved to a fresh one
        assert min(s.scalars(select(CachedScore.gen))) >= day_of(now())
    m2 = write_manifest(tmp_path / "m2.parquet", rows(n_queries=2, docs_per_query=5, seed=10))
    worker.run(submit_manifest(str(m2), settings=settings))
    with store.session.begin() as s:  # m2's ten: in a generation unused for 41 days
        s.execute(update(CachedScore).where(CachedScore.created_at > old + timedelta(days=1)).values(gen=day_of(old) - 1))
    assert prune_cache(store, parse_age("30d"), dry_run=True).removed == 10
    r = prune_cache(store, parse_age("30d"), batch=3)
    assert (r.removed, r.kept) == (10, 10)
    assert store.status(submit_manifest(str(m), settings=settings)).pairs_reused == 10


def test_bad_manifest_with_reuse_refuses_the_job(env, tmp_path, tiny_model, monkeypatch):
    """Reuse records the job piece by piece (producer/streaming.py): a bad row in a later piece refuses the
    job, with its row and field, and nothing is exported from it; a bad first piece records nothing."""
    import producer.manifest
    from producer.errors import InputError

    monkeypatch.setattr(producer.manifest, "BATCH_ROWS", 5)  # the bad row comes batches after the first
    store, settings = env
    cols = rows(n_queries=4, docs_per_query=6, seed=12)
    good = write_manifest(tmp_path / "good.parquet", cols)
    worker = FakeWorker(store, settings, tiny_model)
    worker.run(submit_manifest(str(good), settings=settings))
    jobs_before = {j.job_id for j in store.list_jobs()}
    cols["document"][-1] = ""  # the last row is bad: every other pair was staged and its hit copied
    bad = write_manifest(tmp_path / "bad.parquet", cols, row_group_size=5)
    from rerankq.manifest_source import ManifestError

    with pytest.raises(ManifestError, match=r"refused.*\n.*row 23 field 'document': is an empty string"):
        submit_manifest(str(bad), settings=settings)
    (refused,) = [j for j in store.list_jobs() if j.job_id not in jobs_before]
    assert refused.state == JobState.failed and refused.submitting
    assert "row 23 field 'document'" in refused.errors[0]
    assert not refused.chunks.pending and not refused.chunks.running
    with pytest.raises(InputError, match="never fully submitted"):
        list(iter_ranked(store, refused.job_id))
    cols["document"][0] = ""  # in the first piece: refused before anything is recorded
    first = write_manifest(tmp_path / "first.parquet", cols, row_group_size=5)
    with pytest.raises(ManifestError, match="nothing was submitted"):
        submit_manifest(str(first), settings=settings)
    assert len(store.list_jobs()) == len(jobs_before) + 1
