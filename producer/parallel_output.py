"""Where the pieces of a parallel step land: a dataset directory (one file per piece and a completion
marker), or one file made of the pieces' files in order.

A dataset directory appears all or nothing: its files are written into ``DIR.part/``, the marker
``_SUCCESS`` (JSON: what was exported, rows in all and per file) last, then the directory is renamed
into place. A reader that finds ``_SUCCESS`` has every file; Spark, pyarrow.dataset and DuckDB skip
names starting with ``_``. An existing ``DIR`` is replaced only when it is an earlier dataset (it has
``_SUCCESS``) or empty: nothing else of the user's is ever deleted."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from producer.errors import InputError
from producer.table_files import SUFFIXES, Format, table_writer

MARKER = "_SUCCESS"
ROWS_PER_BATCH = 50_000


def is_dataset(out: str | Path) -> bool:
    """``out`` names a dataset directory: it ends with ``/``, is a directory, or has no suffix."""
    p = Path(out)
    return str(out).endswith("/") or p.is_dir() or (p.suffix == "" and str(out) != "-")


_OURS = re.compile(r"part-\d{5}\.(parquet|csv)(\.part)?|" + MARKER)


def clear_ours(path: Path) -> None:
    """Remove ``path`` if it is a directory of ours (pieces and a marker only: what an interrupted run
    left); refuse anything else there, so nothing of the user's is deleted."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and all(_OURS.fullmatch(p.name) for p in path.iterdir()):
        shutil.rmtree(path)
        return
    raise InputError(f"cannot write beside {path}: it is in the way and not an earlier export's")


def part_name(index: int, fmt: Format) -> str:
    return f"part-{index:05d}.{fmt}"


@dataclass
class Dataset:
    """A dataset directory being written: ``tmp`` holds its files until ``publish``."""

    out: Path
    tmp: Path
    fmt: Format
    files: list[dict] = field(default_factory=list)  # per piece: name, rows, its query-id range
    about: dict = field(default_factory=dict)  # what was exported: step, jobs, counts

    def path(self, index: int) -> Path:
        return self.tmp / part_name(index, self.fmt)


@contextlib.contextmanager
def dataset_dir(out: str | Path, fmt: Format = "parquet") -> Iterator[Dataset]:
    """A dataset directory at ``out``, published (marker written, renamed into place) when the block
    ends without error; on error nothing of it is left."""
    out = Path(out)
    if fmt not in SUFFIXES.values():
        raise InputError(f"cannot write {out}: a dataset's files are parquet or csv")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MARKER).is_file())):
        raise InputError(f"cannot write {out}: it exists and is not an earlier export's directory (no {MARKER} in it)")
    tmp = out.with_name(out.name + ".part")
    clear_ours(tmp)  # what an interrupted run of ours left
    clear_ours(out.with_name(out.name + ".old"))
    tmp.mkdir(parents=False)
    try:
        yield (ds := Dataset(out, tmp, fmt))
        publish(ds)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(ds: Dataset) -> None:
    """The marker last, then the directory renamed into place (an earlier dataset there replaced)."""
    marker = {**ds.about, "format": ds.fmt, "rows": sum(f["rows"] for f in ds.files), "files": ds.files}
    (ds.tmp / MARKER).write_text(json.dumps(marker, indent=2, ensure_ascii=False) + "\n")
    old = ds.out.with_name(ds.out.name + ".old")
    if ds.out.exists():
        clear_ours(old)
        ds.out.rename(old)
    ds.tmp.rename(ds.out)
    shutil.rmtree(old, ignore_errors=True)


def concatenate(parts: list[Path], out: str | Path, schema: pa.Schema, fmt: Format) -> None:
    """The pieces' files (of ``fmt``), in order, as one file ``out``, all or nothing. CSV parts are
    joined as bytes, every header but the first skipped (their cells are inert already); Parquet parts
    are read back a batch at a time (bounded memory)."""
    if fmt == "csv":
        out = Path(out)
        tmp = out.with_name(out.name + ".part")
        try:
            with tmp.open("wb") as dst:
                for i, part in enumerate(parts):
                    with part.open("rb") as src:
                        header = src.readline()
                        if i == 0:
                            dst.write(header)
                        shutil.copyfileobj(src, dst, 1 << 20)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(out)
        return
    with table_writer(out, schema, "parquet") as writer:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=ROWS_PER_BATCH):
                writer.write_batch(batch)
