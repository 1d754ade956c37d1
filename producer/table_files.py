"""Export files in the format their name asks for: Parquet (``.parquet``, ``.pq``) or CSV (``.csv``).

Any other name is refused before anything is written (a ``scores.csv`` that silently held Parquet
misled a user). A file is written all or nothing: beside it as ``NAME.part``, renamed when complete.

CSV cells are made inert for spreadsheets (issue 25, OWASP's CSV injection advice): a text cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``, so an id like
``=HYPERLINK(...)`` is shown as text, never run as a formula. Numbers and Parquet are written as they are."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

import pyarrow as pa

from producer.errors import InputError

Format = Literal["parquet", "csv"]
SUFFIXES: dict[str, Format] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class BatchWriter(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...


FORMULA_START = r"^([=+\-@\t\r])"  # the first characters a spreadsheet reads as a formula (OWASP)


def inert_text(column: pa.Array) -> pa.Array:
    """A text column with each formula-looking cell prefixed by ``'``; any other column as it is."""
    import pyarrow.compute as pc

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column
    return pc.replace_substring_regex(column, pattern=FORMULA_START, replacement="'\\1")


class _InertCsv:
    """pyarrow's CSV writer with every text cell made inert (``inert_text``)."""

    def __init__(self, writer: BatchWriter, schema: pa.Schema):
        self.writer, self.schema = writer, schema

    def write_batch(self, batch: pa.RecordBatch) -> None:
        columns = [inert_text(column) for column in batch.columns]
        self.writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))


def file_format(out: str | Path) -> Format:
    """The format ``out``'s suffix names; InputError for any other suffix."""
    fmt = SUFFIXES.get(Path(out).suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {out}: exports are Parquet (FILE.parquet) or CSV (FILE.csv)")
    return fmt


@contextlib.contextmanager
def table_writer(out: str | Path, schema: pa.Schema, fmt: Format | None = None) -> Iterator[BatchWriter]:
    """A writer of record batches to ``out`` in ``fmt`` (default: by its suffix); the file appears only
    once every batch is written, and no partial file is left behind on failure."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = Path(out)
    fmt = fmt or file_format(out)
    tmp = out.with_name(out.name + ".part")
    try:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                yield writer
        else:
            with pacsv.CSVWriter(tmp, schema) as writer:
                yield _InertCsv(writer, schema)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
