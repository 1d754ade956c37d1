"""Stream a job's scores out of SQL with ranks computed by the database (window function)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import BigInteger, Executable, Select, case, cast, func, select
from sqlalchemy.orm import Session

from producer.errors import InputError
from producer.parallel_pieces import WHOLE, Piece
from producer.table_files import Format, table_writer
from rerankq.store.ledger import Ledger
from rerankq.store.models import Score
from schemas import JobStatus

EXPORT_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("doc_id", pa.string()),
        ("score", pa.float64()),  # P(yes), the model card's score
        ("logit", pa.float64()),  # its log-odds, logit(yes) − logit(no): ranks follow it (null before 0010)
        ("rank", pa.int64()),
        ("error", pa.string()),
    ]
)
# A cascade's export adds the second model's score (its top pairs only) and the stage whose order
# decided the pair's rank: stage 2 for each query's re-scored top pairs, stage 1 for the rest.
CASCADE_SCHEMA = pa.schema(
    [
        *EXPORT_SCHEMA,
        ("stage2_score", pa.float64()),
        ("stage2_logit", pa.float64()),
        ("ranked_by_stage", pa.int64()),
        ("stage2_error", pa.string()),
    ]
)
ROWS_PER_BATCH = 50_000


def export_schema(store: Ledger, job_id: str) -> pa.Schema:
    """The export's columns, with the job's model and scoring context in the file's metadata: which
    model (and which exact files and numerics) every score in it came from. Also checks the job exists."""
    st = store.status(job_id)  # UnknownJob for an unknown id
    check_exportable(st)
    meta = {"rerankq.job_id": job_id, "rerankq.model": st.model or "", "rerankq.score_context": st.score_context or ""}
    if st.then_model:
        meta |= {"rerankq.then_model": st.then_model, "rerankq.then_top": str(st.then_top), "rerankq.then_context": st.then_context or ""}
        return CASCADE_SCHEMA.with_metadata(meta)
    return EXPORT_SCHEMA.with_metadata(meta)


def check_exportable(st: JobStatus) -> None:
    """InputError for a job whose manifest was never recorded whole: still being submitted, or refused for
    a bad row found after its first chunks were queued (producer/streaming.py). Its scores are a part of a
    manifest, never what a full run would write."""
    if not st.submitting:
        return
    if st.state.terminal:
        why = f": {st.errors[0].splitlines()[0]}" if st.errors else ""
        raise InputError(f"job {st.job_id} is {st.state.value} and was never fully submitted: nothing is exported from it{why}")
    raise InputError(f"job {st.job_id} is still being submitted ({st.pairs_total:,} pairs recorded so far): export it once it has ended")


def _ranked_select(store: Ledger, job_id: str, cascade: bool, piece: Piece, query_id: str | None = None) -> Select:
    """The job's rows with their rank, in the export's order: by query (byte order), then rank.
    One sort serves both: the rows are ordered by the keys the rank follows, not by the rank."""

    def byte_order(column):  # noqa: ANN001, ANN202 - same order on PostgreSQL as SQLite's BINARY
        return column.collate("C") if store.dialect == "postgresql" else column

    order = (Score.logit.desc().nulls_last(), Score.score.desc().nulls_last(), byte_order(Score.doc_id))
    if cascade:
        order = (Score.stage2_score.is_(None), Score.stage2_logit.desc().nulls_last(), Score.stage2_score.desc(), *order)
    number = func.row_number().over(partition_by=byte_order(Score.query_id), order_by=order)
    rank = case((Score.score.is_(None), None), else_=number).label("rank")  # failed pairs: last, unranked
    where = [Score.job_id == job_id, *piece.where(Score.query_id, store.dialect)]
    if query_id is not None:
        where.append(Score.query_id == query_id)
    columns = [Score.query_id, Score.doc_id, Score.score, Score.logit, rank, Score.error]
    if cascade:
        stage = cast(case((Score.score.is_(None), None), (Score.stage2_score.is_not(None), 2), else_=1), BigInteger)
        stage = stage.label("ranked_by_stage")
        columns += [Score.stage2_score, Score.stage2_logit, stage, Score.stage2_error]
    return select(*columns).where(*where).order_by(byte_order(Score.query_id), *order)


_PG_TYPES = {pa.string(): "text", pa.float64(): "float8", pa.int64(): "int8"}


def _batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    columns = zip(*rows, strict=True)
    return pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)


def row_batches(s: Session, statement: Executable, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The statement's rows as record batches of ``schema``, ``ROWS_PER_BATCH`` at a time. On PostgreSQL
    through ``COPY (…) TO STDOUT (FORMAT BINARY)``: psycopg decodes the binary rows in C, about half
    the client's CPU of a cursor's rows (bench/RESULTS.md, issue 30); elsewhere a streamed cursor."""
    if s.get_bind().dialect.name != "postgresql":
        for rows in s.execute(statement.execution_options(yield_per=ROWS_PER_BATCH)).partitions():
            yield _batch(rows, schema)
        return
    compiled = statement.compile(dialect=s.get_bind().dialect)
    params = {k: compiled.params[k] for k in compiled.params}
    raw = s.connection().connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY ({compiled.string}) TO STDOUT (FORMAT BINARY)", params) as copy:
        copy.set_types([_PG_TYPES[f.type] for f in schema])
        rows: list[tuple] = []
        for row in copy.rows():
            rows.append(row)
            if len(rows) >= ROWS_PER_BATCH:
                yield _batch(rows, schema)
                rows = []
        if rows:
            yield _batch(rows, schema)


def ranked_batches(
    store: Ledger, job_id: str, schema: pa.Schema, piece: Piece = WHOLE, query_id: str | None = None
) -> Iterator[pa.RecordBatch]:
    """The export's rows (``iter_ranked``) as record batches of ``schema`` (``export_schema``'s), built
    column by column from the database's rows, ``ROWS_PER_BATCH`` at a time."""
    stmt = _ranked_select(store, job_id, "stage2_score" in schema.names, piece, query_id)
    with store.session() as s:
        yield from row_batches(s, stmt, schema)


def iter_ranked(store: Ledger, job_id: str, query_id: str | None = None, piece: Piece = WHOLE) -> Iterator[dict]:
    """Rows ordered by query, then rank (1 = best, by log-odds, which never tie where probabilities
    saturate; then by probability for rows written before log-odds; ties by doc_id in byte order; failed
    pairs last, unranked). A cascade ranks each query's re-scored top pairs by their stage-2 score
    first, then the rest by stage 1, and adds ``stage2_score``, ``stage2_logit``, ``ranked_by_stage``
    and ``stage2_error``.
    ``query_id``: that query's rows only; ``piece``: the queries of that range only."""
    schema = export_schema(store, job_id)  # UnknownJob for an unknown id
    for batch in ranked_batches(store, job_id, schema, piece, query_id):
        yield from batch.to_pylist()


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
    schema = export_schema(store, job_id)  # UnknownJob before the first byte
    spool = _Spool()

    def chunks() -> Iterator[bytes]:
        with pq.ParquetWriter(spool, schema) as writer:
            for batch in ranked_batches(store, job_id, schema):
                writer.write_batch(batch)
                if data := spool.take():
                    yield data
        yield spool.take()

    return chunks()


def export_parquet(store: Ledger, job_id: str, out: str | Path) -> int:
    """Write ``query_id, doc_id, score, logit, rank, error`` to a Parquet file (whatever its name); returns rows."""
    return export_file(store, job_id, out, "parquet")


def export_file(store: Ledger, job_id: str, out: str | Path, fmt: Format | None = None, piece: Piece = WHOLE) -> int:
    """Write the export to ``out`` in bounded memory, all or nothing, as Parquet or CSV (default: by its
    suffix, producer/table_files.py); returns rows. ``piece``: that range of queries only."""
    schema = export_schema(store, job_id)
    rows = 0
    with table_writer(out, schema, fmt) as writer:
        for batch in ranked_batches(store, job_id, schema, piece):
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
