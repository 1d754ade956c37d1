"""``export``, ``export --changes-since`` and ``diff`` over query-id pieces (producer/parallel_pieces.py),
one process per piece on this host (``--parallel N``).

Each piece is a separate database session in a separate process (forked from a fresh server
process that imported this module once, so nothing of the parent's connections or threads is shared): the database ranks and compares the pieces at once, and each
process converts and writes its own rows. The outputs are the single-process ones row for row: a
dataset directory holds the pieces' files in query order (producer/parallel_output.py), a single
file is those files joined in order, and ``diff``'s counts add up (its examples are the first
queries of the first pieces that have any)."""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from producer.changes import CHANGE_KINDS, CHANGES_SCHEMA, Diff, diff, export_changes
from producer.export import export_file, export_schema
from producer.parallel_output import clear_ours, concatenate, dataset_dir, is_dataset
from producer.parallel_pieces import Piece, plan
from producer.table_files import Format, file_format
from rerankq.store.ledger import Ledger

T = TypeVar("T")
Db = Ledger | str  # the parent's ledger, or its URL for a child process to open


def _open(db: Db) -> Ledger:
    return db if isinstance(db, Ledger) else Ledger(db, check=False)  # the parent checked the revision


def _url(store: Ledger) -> str:
    return store.session.kw["bind"].url.render_as_string(hide_password=False)


def run_pieces(fn: Callable[..., T], calls: list[tuple], store: Ledger, parallel: int) -> list[T]:
    """``fn(db, *call)`` for every call, in up to ``parallel`` worker processes (in this one when one
    is asked for or there is one call); results in the calls' order. The first failure is raised."""
    if parallel <= 1 or len(calls) <= 1:
        return [fn(store, *c) for c in calls]
    url = _url(store)
    ctx = multiprocessing.get_context("forkserver")  # a fresh process, forked per piece: imports paid once
    ctx.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=min(parallel, len(calls)), mp_context=ctx) as pool:
        futures = [pool.submit(fn, url, *c) for c in calls]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _range(piece: Piece) -> dict[str, Any]:
    return {"query_id_from": piece.lo, "query_id_below": piece.hi}


def _export_piece(db: Db, job: str, piece: Piece, path: Path, fmt: Format) -> int:
    return export_file(_open(db), job, path, fmt, piece)


def _changes_piece(db: Db, old: str, job: str, options: dict, piece: Piece, path: Path, fmt: Format) -> dict[str, int]:
    return export_changes(_open(db), old, job, path, fmt=fmt, piece=piece, **options)


def _diff_piece(db: Db, old: str, job: str, top_k: int, tolerance: float, examples: int, piece: Piece) -> Diff:
    return diff(_open(db), old, job, top_k, tolerance, examples, piece)


def _write(
    store: Ledger, out: str | Path, fmt: Format | None, pieces: list[Piece], parallel: int, fn: Callable, args: tuple,
    about: dict, schema_of: Callable[[], Any],
) -> list:  # fmt: skip
    """Run ``fn(db, *args, piece, path, fmt)`` per piece into a dataset directory or one file."""
    if is_dataset(out):
        fmt = fmt or "parquet"
        with dataset_dir(out, fmt) as ds:
            results = run_pieces(fn, [(*args, p, ds.path(p.index), fmt) for p in pieces], store, parallel)
            ds.files = [{"name": ds.path(p.index).name, "rows": _rows(r), **_range(p)} | _counts(r) for p, r in zip(pieces, results, strict=True)]
            ds.about = about | ({"counts": _sum_counts(results)} if isinstance(results[0], dict) else {})
        return results
    fmt = fmt or file_format(out)
    if len(pieces) == 1:
        return [fn(store, *args, pieces[0], Path(out), fmt)]
    out = Path(out)
    tmp = out.with_name(out.name + ".pieces")
    clear_ours(tmp)
    tmp.mkdir()
    try:
        paths = [tmp / f"part-{p.index:05d}.{fmt}" for p in pieces]
        results = run_pieces(fn, [(*args, p, path, fmt) for p, path in zip(pieces, paths, strict=True)], store, parallel)
        concatenate(paths, out, schema_of(), fmt)
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rows(result: int | dict[str, int]) -> int:
    return result if isinstance(result, int) else sum(result.values())


def _counts(result: int | dict[str, int]) -> dict:
    return {"counts": result} if isinstance(result, dict) else {}


def _sum_counts(results: list[dict[str, int]]) -> dict[str, int]:
    return {k: sum(r[k] for r in results) for k in CHANGE_KINDS}


def export_parallel(
    store: Ledger, job: str, out: str | Path, parallel: int = 1, fmt: Format | None = None, pieces: int | None = None
) -> int:
    """The export of ``job`` (full id) in ``parallel`` processes, one piece each (or ``pieces`` pieces
    shared among them): into a dataset directory when ``out`` names one (``is_dataset``), else into one
    file; returns rows."""
    schema = export_schema(store, job)  # UnknownJob before anything is written
    cuts = plan(store, [job], pieces or parallel)
    about = {"step": "export", "job_id": job, "model": schema.metadata.get(b"rerankq.model", b"").decode()}
    results = _write(store, out, fmt, cuts, parallel, _export_piece, (job,), about, lambda: schema)
    return sum(results)


def changes_parallel(
    store: Ledger,
    old: str,
    job: str,
    out: str | Path,
    parallel: int = 1,
    fmt: Format | None = None,
    pieces: int | None = None,
    **options: Any,
) -> dict[str, int]:
    """The changes export from ``old`` to ``job`` (full ids) as ``export_parallel`` cuts and writes it;
    ``options``: tolerance, moves, top_k as ``export_changes`` takes them. Returns counts by kind of change."""
    cuts = plan(store, [job, old], pieces or parallel)
    about = {"step": "changes", "job_id": job, "old_job_id": old, **options}
    results = _write(store, out, fmt, cuts, parallel, _changes_piece, (old, job, options), about, lambda: CHANGES_SCHEMA)
    return _sum_counts(results)


def diff_parallel(
    store: Ledger,
    old: str,
    job: str,
    top_k: int = 10,
    tolerance: float = 0.0,
    examples: int = 10,
    parallel: int = 1,
    pieces: int | None = None,
) -> Diff:
    """``diff`` in ``parallel`` processes (one piece each, or ``pieces`` shared), its counts added up;
    the same result as one process's."""
    old, job = store.resolve_job(old), store.resolve_job(job)
    cuts = plan(store, [job, old], pieces or parallel)
    parts = run_pieces(_diff_piece, [(old, job, top_k, tolerance, examples, p) for p in cuts], store, parallel)
    summed = {f: sum(getattr(p, f) for p in parts) for f in ("unchanged", "changed", "moved", "new", "removed", "queries_top_k_changed")}
    return replace(parts[0], **summed, examples=[q for p in parts for q in p.examples][:examples])
