"""What changed between two jobs, computed by the database: ranks by window function (the export's
definition), the comparison as a LEFT JOIN plus an anti-join for removed pairs (a FULL OUTER JOIN
that SQLite also runs), streamed out in bounded memory."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from sqlalchemy import text

from producer.export import check_exportable, row_batches
from producer.parallel_pieces import WHOLE, Piece
from producer.table_files import Format, table_writer
from rerankq.store.ledger import Ledger

CHANGES_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("doc_id", pa.string()),
        ("change", pa.string()),  # new | removed | changed (score) | moved (same score, other rank)
        ("old_score", pa.float64()),
        ("new_score", pa.float64()),
        ("old_logit", pa.float64()),  # the log-odds each rank follows (README "Scores and raw scores")
        ("new_logit", pa.float64()),
        ("old_rank", pa.int64()),
        ("new_rank", pa.int64()),
        ("error", pa.string()),
    ]
)
CHANGE_KINDS = ("new", "removed", "changed", "moved")


def _ranked(store: Ledger, param: str, piece: Piece) -> str:
    """A job's scores with the export's rank: 1 = best (by log-odds), ties by doc_id in byte order, failed
    pairs unranked; the queries of ``piece`` only."""
    c = ' COLLATE "C"' if store.dialect == "postgresql" else ""
    return (
        "SELECT query_id, doc_id, score, logit, error, CASE WHEN score IS NULL THEN NULL ELSE row_number() OVER "
        f"(PARTITION BY query_id ORDER BY logit DESC NULLS LAST, score DESC NULLS LAST, doc_id{c}) END AS rank "
        f"FROM scores WHERE job_id = :{param} AND {piece.sql('query_id', store.dialect)[0]}"
    )


_SCORE_DIFFERS = (
    "(CASE WHEN o.score IS NULL AND n.score IS NULL THEN 0 WHEN o.score IS NULL OR n.score IS NULL THEN 1 "
    "WHEN ABS(n.score - o.score) > :tol THEN 1 ELSE 0 END) = 1"
)
_RANK_DIFFERS = "((o.rank IS NULL) <> (n.rank IS NULL) OR o.rank <> n.rank)"
_GONE = "NOT EXISTS (SELECT 1 FROM scores x WHERE x.job_id = :new AND x.query_id = o.query_id AND x.doc_id = o.doc_id)"


def _with(store: Ledger, piece: Piece) -> str:
    return f"WITH n AS ({_ranked(store, 'new', piece)}), o AS ({_ranked(store, 'old', piece)}) "


def _resolve(store: Ledger, old_job: str, job: str) -> tuple[str, str]:
    """Both jobs' full ids, each given by its id or a unique prefix (UnknownJob otherwise), both whole
    (``check_exportable``)."""
    ids = store.resolve_job(old_job), store.resolve_job(job)
    for job_id in ids:
        check_exportable(store.status(job_id))
    return ids


def _moves_kept(keep_moves: bool, top_k: int | None) -> str:
    """The SQL condition on a row ``u`` of the changes that keeps it: every row, no rank-only move
    (``keep_moves`` false), or only the moves that take a pair into or out of each query's top ``top_k``."""
    if not keep_moves:
        return "u.change <> 'moved'"
    if top_k is not None:  # an unranked pair (failed, removed, new) is outside every top k
        return "(u.change <> 'moved' OR (COALESCE(u.old_rank, :k + 1) <= :k) <> (COALESCE(u.new_rank, :k + 1) <= :k))"
    return "1 = 1"


def iter_changes(
    store: Ledger,
    old_job: str,
    job: str,
    tolerance: float = 0.0,
    *,
    moves: bool = True,
    top_k: int | None = None,
    piece: Piece = WHOLE,
) -> Iterator[dict]:
    """Pairs of ``job`` that are new or whose score (beyond ``tolerance``) or rank differs from
    ``old_job``, and the pairs of ``old_job`` that ``job`` no longer has; by query, then doc_id.
    ``moves=False`` leaves rank-only moves out; ``top_k`` keeps only the moves into or out of a
    query's top k (an index that holds each query's top k needs no others). Jobs: ids or prefixes.
    ``piece``: the queries of that range only (producer/parallel_pieces.py)."""
    for batch in change_batches(store, old_job, job, tolerance, moves=moves, top_k=top_k, piece=piece):
        yield from batch.to_pylist()


def change_batches(
    store: Ledger,
    old_job: str,
    job: str,
    tolerance: float = 0.0,
    *,
    moves: bool = True,
    top_k: int | None = None,
    piece: Piece = WHOLE,
) -> Iterator[pa.RecordBatch]:
    """``iter_changes``'s rows as record batches of ``CHANGES_SCHEMA``, built column by column."""
    old_job, job = _resolve(store, old_job, job)
    c = ' COLLATE "C"' if store.dialect == "postgresql" else ""
    sql = (
        _with(store, piece)
        + "SELECT * FROM ("
        f"SELECT n.query_id, n.doc_id, CASE WHEN o.doc_id IS NULL THEN 'new' WHEN {_SCORE_DIFFERS} THEN 'changed' "
        "ELSE 'moved' END AS change, o.score AS old_score, n.score AS new_score, o.logit AS old_logit, "
        "n.logit AS new_logit, o.rank AS old_rank, "
        "n.rank AS new_rank, n.error AS error "
        "FROM n LEFT JOIN o ON o.query_id = n.query_id AND o.doc_id = n.doc_id "
        f"WHERE o.doc_id IS NULL OR {_SCORE_DIFFERS} OR {_RANK_DIFFERS} "
        "UNION ALL "
        "SELECT o.query_id, o.doc_id, 'removed', o.score, NULL, o.logit, NULL, o.rank, NULL, NULL "
        f"FROM o WHERE {_GONE}"
        f") u WHERE {_moves_kept(moves, top_k)} ORDER BY u.query_id{c}, u.doc_id{c}"
    )
    params = {"new": job, "old": old_job, "tol": tolerance, "k": top_k, **piece.sql("query_id", store.dialect)[1]}
    with store.session() as s:
        used = {k: v for k, v in params.items() if re.search(rf":{k}\b", sql)}  # text() binds only the names it holds
        yield from row_batches(s, text(sql).bindparams(**used), CHANGES_SCHEMA)


def export_changes(
    store: Ledger,
    old_job: str,
    job: str,
    out: str | Path,
    tolerance: float = 0.0,
    *,
    moves: bool = True,
    top_k: int | None = None,
    fmt: Format | None = None,
    piece: Piece = WHOLE,
) -> dict[str, int]:
    """Write the changes (``iter_changes``) to Parquet or CSV (``fmt``, default by ``out``'s suffix), all
    or nothing like the export; returns counts by kind of change. ``piece``: that range of queries only."""
    import pyarrow.compute as pc

    counts = dict.fromkeys(CHANGE_KINDS, 0)
    with table_writer(out, CHANGES_SCHEMA, fmt) as writer:
        for batch in change_batches(store, old_job, job, tolerance, moves=moves, top_k=top_k, piece=piece):
            for kind in pc.value_counts(batch.column("change")).to_pylist():
                counts[kind["values"]] += kind["counts"]
            writer.write_batch(batch)
    return counts


@dataclass
class Diff:
    old_job: str
    job: str
    unchanged: int = 0
    changed: int = 0  # score differs (rank may too)
    moved: int = 0  # same score, other rank
    new: int = 0
    removed: int = 0
    top_k: int = 10
    queries_top_k_changed: int = 0
    examples: list[str] = field(default_factory=list)  # a few of those queries


def diff(
    store: Ledger, old_job: str, job: str, top_k: int = 10, tolerance: float = 0.0, examples: int = 10, piece: Piece = WHOLE
) -> Diff:
    """Counts of unchanged, changed, moved, new and removed pairs, and the queries whose top-k
    (documents and their order) differs, new and vanished queries included; ``examples``: the first of
    those queries in byte order. Jobs: ids or unique prefixes. ``piece``: the queries of that range only
    (the counts of several pieces add up, see producer/parallel_steps.py)."""
    old_job, job = _resolve(store, old_job, job)
    where, bounds = piece.sql("o.query_id", store.dialect)
    params = {"new": job, "old": old_job, "tol": tolerance, "k": top_k, **bounds}
    c = ' COLLATE "C"' if store.dialect == "postgresql" else ""
    counts = (
        _with(store, piece)
        + "SELECT COALESCE(SUM(CASE WHEN o.doc_id IS NULL THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN o.doc_id IS NOT NULL AND {_SCORE_DIFFERS} THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN o.doc_id IS NOT NULL AND NOT ({_SCORE_DIFFERS}) AND {_RANK_DIFFERS} THEN 1 ELSE 0 END), 0), "
        f"COUNT(*) FROM n LEFT JOIN o ON o.query_id = n.query_id AND o.doc_id = n.doc_id"
    )
    removed = f"SELECT COUNT(*) FROM scores o WHERE o.job_id = :old AND {where} AND {_GONE}"
    tops = (
        _with(store, piece)
        + ", tn AS (SELECT query_id, doc_id, rank FROM n WHERE rank <= :k), "
        "tk AS (SELECT query_id, doc_id, rank FROM o WHERE rank <= :k) "
        "SELECT query_id FROM (SELECT query_id, doc_id, rank FROM tn EXCEPT SELECT query_id, doc_id, rank FROM tk) a "
        "UNION SELECT query_id FROM (SELECT query_id, doc_id, rank FROM tk EXCEPT SELECT query_id, doc_id, rank FROM tn) b"
    )
    with store.session() as s:
        new, changed, moved, total = s.execute(text(counts), params).one()
        gone = s.scalar(text(removed), params) or 0
        some = f"SELECT query_id, COUNT(*) OVER () FROM ({tops}) t ORDER BY query_id{c} LIMIT :examples"
        first = s.execute(text(some), {**params, "examples": max(examples, 1)}).all()
    n_queries = first[0][1] if first else 0
    queries = [q for q, _ in first][: max(examples, 0)]
    return Diff(
        old_job=old_job,
        job=job,
        unchanged=total - new - changed - moved,
        changed=changed,
        moved=moved,
        new=new,
        removed=gone,
        top_k=top_k,
        queries_top_k_changed=n_queries,
        examples=queries,
    )
