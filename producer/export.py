"""Stream a job's scores out of SQL with ranks computed by the database (window function)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select

from producer.errors import InputError
from producer.table_files import Format, table_writer
from rerankq.store.ledger import Ledger
from rerankq.store.models import Score

EXPORT_SCHEMA = pa.schema(
    [("query_id", pa.string()), ("doc_id", pa.string()), ("score", pa.float64()), ("rank", pa.int64()), ("error", pa.string())]
)
ROWS_PER_BATCH = 50_000


def iter_ranked(store: Ledger, job_id: str, query_id: str | None = None) -> Iterator[dict]:
    """Rows ordered by query, then rank (1 = best; ties by doc_id in byte order; failed pairs last, unranked).
    ``query_id``: that query's rows only."""
    store.status(job_id)  # UnknownJob for an unknown id

    def byte_order(column):  # noqa: ANN001, ANN202 - same order on PostgreSQL as SQLite's BINARY
        return column.collate("C") if store.dialect == "postgresql" else column

    rank = (
        func.row_number()
        .over(partition_by=Score.query_id, order_by=(Score.score.desc().nulls_last(), byte_order(Score.doc_id)))
        .label("rank")
    )
    where = [Score.job_id == job_id] + ([Score.query_id == query_id] if query_id is not None else [])
    inner = select(Score.query_id, Score.doc_id, Score.score, Score.error, rank).where(*where).subquery()
    stmt = select(inner).order_by(byte_order(inner.c.query_id), inner.c.rank)
    with store.session() as s:
        for row in s.execute(stmt.execution_options(yield_per=ROWS_PER_BATCH)).mappings():
            item = dict(row)
            if item["score"] is None:
                item["rank"] = None
            yield item


def _batches(store: Ledger, job_id: str) -> Iterator[pa.RecordBatch]:
    batch: list[dict] = []
    for item in iter_ranked(store, job_id):
        batch.append(item)
        if len(batch) >= ROWS_PER_BATCH:
            yield pa.RecordBatch.from_pylist(batch, schema=EXPORT_SCHEMA)
            batch = []
    if batch:
        yield pa.RecordBatch.from_pylist(batch, schema=EXPORT_SCHEMA)


class _Spool:
    """A write-only file for ParquetWriter whose bytes are taken out as they come (HTTP streaming)."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def iter_parquet_bytes(store: Ledger, job_id: str) -> Iterator[bytes]:
    """The export as Parquet bytes, one row group at a time (bounded memory); the job is checked first."""
    store.status(job_id)  # UnknownJob before the first byte
    spool = _Spool()

    def chunks() -> Iterator[bytes]:
        with pq.ParquetWriter(spool, EXPORT_SCHEMA) as writer:
            for batch in _batches(store, job_id):
                writer.write_batch(batch)
                if data := spool.take():
                    yield data
        yield spool.take()

    return chunks()


def export_parquet(store: Ledger, job_id: str, out: str | Path) -> int:
    """Write ``query_id, doc_id, score, rank, error`` to a Parquet file (whatever its name); returns rows."""
    return export_file(store, job_id, out, "parquet")


def export_file(store: Ledger, job_id: str, out: str | Path, fmt: Format | None = None) -> int:
    """Write the export to ``out`` in bounded memory, all or nothing, as Parquet or CSV (default: by its
    suffix, producer/table_files.py); returns rows."""
    rows = 0
    with table_writer(out, EXPORT_SCHEMA, fmt) as writer:
        for batch in _batches(store, job_id):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


@contextlib.contextmanager
def writing(out: str | Path) -> Iterator[None]:
    """An export file that cannot be written (no such directory, no permission, disk full ...) is an
    input error naming it, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot write {out}: {os.strerror(exc.errno) if exc.errno else exc}") from None
