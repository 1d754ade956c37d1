"""The score cache's use recorded per generation (rerankq/store/cache_gens.py), on both databases:
writes spread their generations, a generation marked used keeps its entries, `cache prune` removes
whole unused generations only, and migration 0007 turns last_used into generations conservatively."""

from __future__ import annotations

import os
from datetime import timedelta

import psycopg
import pytest
from alembic import command
from sqlalchemy import func, select, text

from rerankq.store.cache_gens import SPREAD_DAYS, day_of, mark_used
from rerankq.store.clock import now
from rerankq.store.db import alembic_config, get_engine
from rerankq.store.ledger import Ledger
from rerankq.store.models import CachedScore
from rerankq.store.records import NewChunk, ScoreRow
from rerankq.store.score_cache import prune_cache
from rerankq.store.score_writes import fill_cache, write_chunk_rows
from tests.conftest import migrate
from tests.services import POSTGRES_URL, create_database, drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    u = f"sqlite:///{tmp_path / 'c.db'}" if request.param == "sqlite" else create_database(POSTGRES_URL)
    yield u
    get_engine(u).dispose()
    if request.param == "postgresql":
        drop_database(POSTGRES_URL, u)


def _rows(n: int) -> list[ScoreRow]:
    return [ScoreRow("q", f"d{i}", i / n, None, os.urandom(32)) for i in range(n)]


def _gens(store: Ledger) -> dict[int, int]:
    with store.session() as s:
        return {g: n for g, n in s.execute(select(CachedScore.gen, func.count()).group_by(CachedScore.gen))}


def test_writes_spread_generations_and_prune_drops_only_unused_ones(url):
    migrate(url)
    store = Ledger(url)
    job, _ = store.create_job(kind="inline", chunks=[])
    with store.session.begin() as s:  # the worker's write path (COPY on PostgreSQL) and the plain one
        write_chunk_rows(s, job, 1, _rows(1500))
        fill_cache(s, _rows(1500))
    today = day_of(now())
    gens = _gens(store)
    assert set(gens) == set(range(today, today + SPREAD_DAYS)), "spread over the next days, never before today"
    assert min(gens.values()) > 3000 / SPREAD_DAYS / 2

    old, older, oldest = (day_of(now() - timedelta(days=d)) for d in (35, 40, 45))
    with store.session.begin() as s:  # three old generations of 100 entries each
        for g in (old, older, oldest):
            keys = s.scalars(select(CachedScore.key).where(CachedScore.gen >= today).limit(100)).all()
            s.execute(CachedScore.__table__.update().where(CachedScore.key.in_(keys)).values(gen=g))
        mark_used(s, [older], now() - timedelta(days=2))  # reused two days ago: kept, all of it
        mark_used(s, [oldest], now() - timedelta(days=31))  # reused 31 days ago: unused for 30 days
    assert prune_cache(store, 30 * 86400, dry_run=True).removed == 200
    r = prune_cache(store, 30 * 86400, batch=30)
    assert (r.removed, r.kept) == (200, 2800)
    assert older in _gens(store) and old not in _gens(store) and oldest not in _gens(store)
    with store.session() as s:  # the marks of generations pruned are gone with them
        assert set(s.scalars(text("SELECT gen FROM cache_generations"))) == {older}


def test_migration_makes_generations_from_last_used(url):
    cfg = alembic_config(url)
    command.upgrade(cfg, "0006_cascade")
    t = now()
    rows = {d: os.urandom(32) for d in (1, 20, 40)}  # last used 1, 20 and 40 days ago
    if url.startswith("postgresql"):
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            for d, key in rows.items():
                conn.execute(
                    "INSERT INTO score_cache (key, score, created_at, last_used) VALUES (%s, 0.5, %s, %s)",
                    (key, t - timedelta(days=60), t - timedelta(days=d)),
                )
    else:
        engine = get_engine(url)
        with engine.begin() as conn:
            for d, key in rows.items():
                stamp = (t - timedelta(days=d)).strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's storage
                conn.execute(
                    text("INSERT INTO score_cache (key, score, created_at, last_used) VALUES (:k, 0.5, :c, :u)"),
                    {"k": key, "c": stamp, "u": stamp},
                )
        engine.dispose()
    command.upgrade(cfg, "head")
    store = Ledger(url)
    with store.session() as s:
        got = {k: g for k, g in s.execute(select(CachedScore.key, CachedScore.gen))}
    # the old touch interval (7 days) is added: a reuse within it had not rewritten last_used
    assert {d: got[k] for d, k in rows.items()} == {d: day_of(t - timedelta(days=d)) + 7 for d in rows}
    r = prune_cache(store, 30 * 86400)
    assert r.removed == 1 and rows[40] not in {k for k in _keys(store)}
    command.downgrade(cfg, "0006_cascade")
    command.upgrade(cfg, "head")


def _keys(store: Ledger) -> set[bytes]:
    with store.session() as s:
        return set(s.scalars(select(CachedScore.key)))



def test_a_generation_marked_meanwhile_fails_no_submission(pg_url):
    """The reuse stage reads in one REPEATABLE READ snapshot; another submission marking the same
    generation meanwhile must not make this one's marks a serialization failure."""
    from rerankq.store.reuse_stage import ReuseStage

    migrate(pg_url)
    store = Ledger(pg_url)
    key, gen = os.urandom(32), day_of(now()) - 3
    with store.session.begin() as s:
        fill_cache(s, [ScoreRow("q", "d", 0.5, None, key)])
        s.execute(CachedScore.__table__.update().where(CachedScore.key == key).values(gen=gen))
        mark_used(s, [gen], now() - timedelta(days=1))
    with ReuseStage(store) as stage:  # its snapshot is taken here
        stage.add([key], ["q"], ["d"])
        with store.session.begin() as s:  # another submission, committed meanwhile
            mark_used(s, [gen], now())
        job, _, reused, staged = stage.record(lambda misses: [NewChunk({}, 0) for _ in misses], "c" * 64, kind="inline")
    assert (reused, staged) == (1, 1) and store.score_count(job) == 1


def test_a_workers_cache_lookup_marks_its_generations_used(url):
    """A cascade's worker looks the cache up itself: what it finds is as used as a submission's hits."""
    from rerankq.store.cache_lookup import cached_scores

    migrate(url)
    store = Ledger(url)
    hit, unused = os.urandom(32), os.urandom(32)
    old = day_of(now() - timedelta(days=40))
    with store.session.begin() as s:
        fill_cache(s, [ScoreRow("q", "d1", 0.25, None, hit), ScoreRow("q", "d2", 0.75, None, unused)])
        s.execute(CachedScore.__table__.update().where(CachedScore.key == hit).values(gen=old))
        s.execute(CachedScore.__table__.update().where(CachedScore.key == unused).values(gen=old - 1))
    assert cached_scores(store, [hit, os.urandom(32), None]) == {hit: (0.25, None)}
    r = prune_cache(store, 30 * 86400)
    assert r.removed == 1 and _keys(store) == {hit}
