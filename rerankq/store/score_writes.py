"""A finishing chunk's rows: its scores into ``scores`` and its cacheable scores into ``score_cache``,
both inside the chunk's transaction, so a cache entry exists only for a score that was committed,
and only under the context (key) of the worker that produced it.

PostgreSQL with psycopg: COPY into a per-connection staging table, then idempotent INSERT … SELECTs
(several times the rows/s of a multi-row INSERT: bench/write_bench.py). Elsewhere: multi-row INSERTs."""

from __future__ import annotations

import random
from collections.abc import Sequence

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from rerankq.store.cache_gens import SPREAD_DAYS, day_of, jittered_gen_sql
from rerankq.store.clock import now
from rerankq.store.models import CachedScore, Score
from rerankq.store.records import ScoreRow


def _insert(dialect: str):  # noqa: ANN202 - the dialect's INSERT … ON CONFLICT construct
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def copies(s: Session) -> bool:
    """Whether this session can take the COPY path."""
    dialect = s.get_bind().dialect
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def write_chunk_rows(s: Session, job_id: str, chunk_id: int, rows: Sequence[ScoreRow], use_copy: bool = True) -> None:
    """Upsert the scores on (job, query_id, doc_id) and fill the cache; existing rows and keys are kept."""
    if not rows:
        return
    if use_copy and copies(s):
        _copy_rows(s, job_id, chunk_id, rows)
        return
    insert = _insert(s.get_bind().dialect.name)
    values = [
        {
            "job_id": job_id, "query_id": r.query_id, "doc_id": r.doc_id, "chunk_id": chunk_id,
            "score": r.score, "logit": r.logit, "error": r.error,
        }  # fmt: skip
        for r in rows
    ]
    s.execute(insert(Score).on_conflict_do_nothing(index_elements=["job_id", "query_id", "doc_id"]), values)
    fill_cache(s, rows)


def write_stage2_rows(s: Session, job_id: str, rows: Sequence[ScoreRow]) -> None:
    """A cascade's stage-2 scores, onto the rows stage 1 wrote (each at most once: a second delivery
    changes nothing), and into the cache under the second model's context."""
    if not rows:
        return
    stmt = (
        update(Score)
        .where(
            Score.job_id == job_id,
            Score.query_id == bindparam("qid"),
            Score.doc_id == bindparam("did"),
            Score.stage2_score.is_(None),
            Score.stage2_error.is_(None),
        )
        .values(stage2_score=bindparam("s2_score"), stage2_logit=bindparam("s2_logit"), stage2_error=bindparam("s2_error"))
        .execution_options(synchronize_session=False)
    )
    s.connection().execute(stmt, [
        {"qid": r.query_id, "did": r.doc_id, "s2_score": r.score, "s2_logit": r.logit, "s2_error": r.error} for r in rows
    ])
    fill_cache(s, rows)


def fill_cache(s: Session, rows: Sequence[ScoreRow]) -> None:
    """Cache the scored pairs of a finishing chunk (in its transaction); existing keys are kept."""
    t = now()
    today = day_of(t)
    values = [
        {"key": r.key, "score": r.score, "logit": r.logit, "created_at": t, "gen": today + random.randrange(SPREAD_DAYS)}
        for r in rows
        if r.key is not None and r.score is not None and r.error is None
    ]
    if values:
        insert = _insert(s.get_bind().dialect.name)
        s.execute(insert(CachedScore).on_conflict_do_nothing(index_elements=["key"]), values)


def _copy_rows(s: Session, job_id: str, chunk_id: int, rows: Sequence[ScoreRow]) -> None:
    cursor = s.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(  # named for its columns: a connection that made an older layout never reuses it
        "CREATE TEMP TABLE IF NOT EXISTS score_stage_logit "
        "(query_id text, doc_id text, score double precision, logit double precision, error text, key bytea) "
        "ON COMMIT DELETE ROWS"
    )
    with cursor.copy("COPY score_stage_logit (query_id, doc_id, score, logit, error, key) FROM STDIN") as copy:
        for r in rows:
            copy.write_row((r.query_id, r.doc_id, r.score, r.logit, r.error, r.key))
    cursor.execute(
        "INSERT INTO scores (job_id, query_id, doc_id, chunk_id, score, logit, error) "
        "SELECT %s, query_id, doc_id, %s, score, logit, error FROM score_stage_logit "
        "ON CONFLICT (job_id, query_id, doc_id) DO NOTHING",
        (job_id, chunk_id),
    )
    if any(r.key is not None for r in rows):
        t = now()
        cursor.execute(
            "INSERT INTO score_cache (key, score, logit, created_at, gen) "
            f"SELECT key, score, logit, %s, {jittered_gen_sql('postgresql', '%s')} FROM score_stage_logit "
            "WHERE key IS NOT NULL AND score IS NOT NULL AND error IS NULL "
            "ON CONFLICT (key) DO NOTHING",
            (t, day_of(t)),
        )
