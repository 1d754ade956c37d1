"""Stream a job's scores out of SQL with ranks computed by the database (window function)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select

from worker.store.ledger import Ledger
from worker.store.models import Score

EXPORT_SCHEMA = pa.schema(
    [("query_id", pa.string()), ("doc_id", pa.string()), ("score", pa.float64()), ("rank", pa.int64()), ("error", pa.string())]
)
ROWS_PER_BATCH = 50_000


def iter_ranked(store: Ledger, job_id: str) -> Iterator[dict]:
    """Rows ordered by query, then rank (1 = best; ties by doc_id in byte order; failed pairs last, unranked)."""
    store.status(job_id)  # UnknownJob for an unknown id

    def byte_order(column):  # noqa: ANN001, ANN202 - same order on PostgreSQL as SQLite's BINARY
        return column.collate("C") if store.dialect == "postgresql" else column

    rank = (
        func.row_number()
        .over(partition_by=Score.query_id, order_by=(Score.score.desc().nulls_last(), byte_order(Score.doc_id)))
        .label("rank")
    )
    inner = select(Score.query_id, Score.doc_id, Score.score, Score.error, rank).where(Score.job_id == job_id).subquery()
    stmt = select(inner).order_by(byte_order(inner.c.query_id), inner.c.rank)
    with store.session() as s:
        for row in s.execute(stmt.execution_options(yield_per=ROWS_PER_BATCH)).mappings():
            item = dict(row)
            if item["score"] is None:
                item["rank"] = None
            yield item


def export_parquet(store: Ledger, job_id: str, out: str | Path) -> int:
    """Write ``query_id, doc_id, score, rank, error`` to a Parquet file in bounded memory; returns rows."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, EXPORT_SCHEMA) as writer:
            batch: list[dict] = []
            for item in iter_ranked(store, job_id):
                batch.append(item)
                if len(batch) >= ROWS_PER_BATCH:
                    writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=EXPORT_SCHEMA))
                    rows += len(batch)
                    batch = []
            if batch:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=EXPORT_SCHEMA))
                rows += len(batch)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written export left behind
        raise
    tmp.replace(out)
    return rows
