"""Export files in the format their name asks for: Parquet (``.parquet``, ``.pq``) or CSV (``.csv``).

Any other name is refused before anything is written (a ``scores.csv`` that silently held Parquet
misled a user). A file is written all or nothing: beside it as ``NAME.part``, renamed when complete."""

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
        with pq.ParquetWriter(tmp, schema) if fmt == "parquet" else pacsv.CSVWriter(tmp, schema) as writer:
            yield writer
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
