"""Issue 30: export, the changes export and diff cut into query-id pieces and run in parallel processes
equal the single-process outputs row for row (ranks included), on SQLite and PostgreSQL; a dataset
directory holds one file per piece and a completion marker, and replaces only an earlier dataset."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from producer.changes import diff, export_changes
from producer.errors import InputError
from producer.export import export_file
from producer.parallel_output import MARKER
from producer.parallel_pieces import Piece, byte_key, cut, plan
from producer.parallel_steps import changes_parallel, diff_parallel, export_parallel
from rerankq.log_odds import probability
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from schemas import InlinePair, InlineSpec
from tests.conftest import base_env, producer

# Ids whose byte order is not their "natural" one: upper before lower case, digits as text, accents and
# CJK after ASCII, a formula-looking id (CSV output makes it inert), a combining accent, a space.
QUERIES = ["B", "a", "b", "q-10", "q-9", "é", "ß", "日本", "=cmd", "a\u0301", " lead", "zz", *[f"q{i:03d}" for i in range(40)]]


def _night(store: Ledger, logits: dict[tuple[str, str], float | None]) -> str:
    """A job holding exactly these pairs (None: a failed pair), recorded as a worker would, one chunk per query."""
    by_query: dict[str, list[tuple[str, float | None]]] = {}
    for (q, d), x in logits.items():
        by_query.setdefault(q, []).append((d, x))
    chunks = [
        NewChunk(InlineSpec(pairs=[InlinePair(query_id=q, doc_id=d, query=q, document=d) for d, _ in docs]).model_dump(mode="json"), len(docs))
        for q, docs in by_query.items()
    ]
    job, messages = store.create_job(kind="inline", chunks=chunks)
    for msg, (q, docs) in zip(messages, by_query.items(), strict=True):
        assert store.begin_chunk(job, msg.chunk_id, "w", "m") is None
        rows = [ScoreRow(q, d, None if x is None else probability(x), "bad" if x is None else None, None, x) for d, x in docs]
        assert store.finish_chunk(job, msg.chunk_id, rows)
    return job


def _logits(seed: int) -> dict[tuple[str, str], float | None]:
    out: dict[tuple[str, str], float | None] = {}
    for qi, q in enumerate(QUERIES):
        for di in range(12):
            x = ((qi * 7 + di * 13 + seed) % 17) / 4.0 - 2.0  # repeats: ties broken by doc_id
            out[(q, f"d{di:02d}" if di % 3 else f"D{di}")] = None if (qi + di) % 11 == 0 else x
    return out


@pytest.fixture()
def nights(store: Ledger) -> tuple[Ledger, str, str]:
    first = _logits(0)
    second = dict(first)
    for i, key in enumerate(sorted(first)):
        if i % 5 == 0:
            second[key] = (first[key] or 0.0) + 0.75  # changed (a failed pair now scored)
        elif i % 23 == 0:
            del second[key]  # removed
    for q in QUERIES[:3]:
        del second[(q, "d01")]
    second |= {("new query", "d00"): 1.0, ("new query", "d01"): 1.0, ("a", "d99"): 3.0}  # new pairs and a new query
    del first[("zz", "d02")]
    return store, _night(store, first), _night(store, second)


def _dataset(out: Path) -> pa.Table:
    marker = json.loads((out / MARKER).read_text())
    tables = [pq.read_table(out / f["name"]) for f in marker["files"]]
    assert [t.num_rows for t in tables] == [f["rows"] for f in marker["files"]]
    table = pa.concat_tables(tables)
    assert table.num_rows == marker["rows"]
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, *(f["name"] for f in marker["files"])])
    return table


def test_pieces_cover_every_query_in_byte_order():
    pieces = cut(["b", "a", "a", "é", "B", "c", "c", "c"], 3)
    assert pieces[0].lo is None and pieces[-1].hi is None
    assert all(byte_key(a.hi) == byte_key(b.lo) for a, b in zip(pieces, pieces[1:]))  # type: ignore[arg-type]
    assert cut(["x"] * 10, 4) == [Piece(0)], "one distinct id: one piece"
    assert cut([], 4) == [Piece(0)]


def test_parallel_export_equals_one_process(nights, tmp_path: Path):
    store, job, _ = nights
    pieces = plan(store, [job], 3)
    assert len(pieces) == 3, "the job is cut into three pieces"
    one = tmp_path / "one.parquet"
    rows = export_file(store, job, one)
    single = pq.read_table(one)
    assert rows == single.num_rows == sum(1 for _ in _logits(0)) - 1
    assert export_parallel(store, job, tmp_path / "dir", parallel=3) == rows
    assert _dataset(tmp_path / "dir").equals(single), "the pieces, in order, are the export row for row"
    marker = json.loads((tmp_path / "dir" / MARKER).read_text())
    assert (marker["step"], marker["job_id"], len(marker["files"])) == ("export", job, 3)
    assert pads.dataset(tmp_path / "dir").to_table().num_rows == rows, "pyarrow reads the directory, marker skipped"
    assert export_parallel(store, job, tmp_path / "joined.parquet", pieces=3) == rows  # in this process
    assert pq.read_table(tmp_path / "joined.parquet").equals(single)
    assert not list(tmp_path.glob("*.pieces")) and not list(tmp_path.glob("*.part"))
    (tmp_path / "x.part").mkdir()
    (tmp_path / "x.part" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="in the way"):
        export_parallel(store, job, tmp_path / "x", parallel=1)
    assert (tmp_path / "x.part" / "notes.txt").read_text() == "keep me" and not (tmp_path / "x").exists()
    export_file(store, job, tmp_path / "one.csv")
    export_parallel(store, job, tmp_path / "joined.csv", pieces=3)
    assert (tmp_path / "joined.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert b"'=cmd" in (tmp_path / "joined.csv").read_bytes(), "CSV cells stay inert"
    export_parallel(store, job, tmp_path / "csvdir", fmt="csv", pieces=2)
    parts = sorted((tmp_path / "csvdir").glob("part-*.csv"))
    assert len(parts) == 2
    csv_rows = pa.concat_tables([pacsv.read_csv(p) for p in parts])
    assert csv_rows.column("doc_id").to_pylist() == single.column("doc_id").to_pylist()


def test_parallel_changes_and_diff_equal_one_process(nights, tmp_path: Path):
    store, old, new = nights
    assert len(plan(store, [new, old], 4)) == 4
    for processes, options in ((2, {}), (1, {"moves": False}), (1, {"top_k": 3, "tolerance": 0.1})):
        one = tmp_path / "changes.parquet"
        counts = export_changes(store, old, new, one, **options)
        single = pq.read_table(one)
        assert set(single.column("change").to_pylist()) == {"new", "removed", "changed", "moved"} - (
            {"moved"} if options.get("moves") is False else set()
        )
        out = tmp_path / f"changes-{len(options)}-{options.get('moves')}"
        assert changes_parallel(store, old, new, out, processes, pieces=4, **options) == counts
        assert _dataset(out).equals(single)
        assert json.loads((out / MARKER).read_text())["counts"] == counts
        joined = tmp_path / "joined.parquet"
        assert changes_parallel(store, old, new, joined, pieces=4, **options) == counts
        assert pq.read_table(joined).equals(single)
    export_file(store, old, tmp_path / "old.parquet")
    export_file(store, new, tmp_path / "new.parquet")
    before, after = ({(r["query_id"], r["doc_id"]): r for r in pq.read_table(tmp_path / f"{n}.parquet").to_pylist()} for n in ("old", "new"))
    for processes, top_k, tolerance, examples in ((2, 10, 0.0, 10), (1, 3, 0.5, 2), (1, 1, 0.0, 0)):
        single_diff = diff(store, old, new, top_k, tolerance, examples)
        assert asdict(single_diff) == _diff_of(before, after, top_k, tolerance, examples) | {"old_job": old, "job": new}
        assert all(type(v) is int for v in asdict(single_diff).values() if not isinstance(v, str | list)), "JSON-ready counts"
        assert single_diff.queries_top_k_changed > 0 and single_diff.removed > 0 and single_diff.new > 0
        parallel = diff_parallel(store, old, new, top_k, tolerance, examples, processes, pieces=4)
        assert asdict(parallel) == asdict(single_diff)


def _diff_of(before: dict, after: dict, top_k: int, tolerance: float, examples: int) -> dict:
    """``diff`` computed here from the two exports: the oracle for the database's one pass."""
    counts = dict.fromkeys(("unchanged", "changed", "moved", "new"), 0)
    for key, row in after.items():
        old = before.get(key)
        if old is None:
            counts["new"] += 1
        elif (old["score"] is None) != (row["score"] is None) or (
            old["score"] is not None and abs(row["score"] - old["score"]) > tolerance
        ):
            counts["changed"] += 1
        elif old["rank"] != row["rank"]:
            counts["moved"] += 1
        else:
            counts["unchanged"] += 1

    def tops(rows: dict) -> set:
        return {(q, d, r["rank"]) for (q, d), r in rows.items() if r["rank"] is not None and r["rank"] <= top_k}

    queries = sorted({q for q, _, _ in tops(before) ^ tops(after)}, key=byte_key)
    return counts | {
        "removed": len(before.keys() - after.keys()), "top_k": top_k, "queries_top_k_changed": len(queries),
        "examples": queries[:examples],
    }  # fmt: skip


def test_export_command_writes_and_replaces_a_dataset_directory(store: Ledger, sqlite_url: str, tmp_path: Path):
    if store.dialect != "sqlite":
        pytest.skip("the command once, on SQLite; the pieces are checked on both databases above")
    job = _night(store, _logits(3))
    env = base_env(tmp_path, sqlite_url, "memory://")
    out = tmp_path / "scores"
    done = producer("export", job[:8], "--out", str(out), "--parallel", "2", env=env, check=True)
    assert f"{len(_logits(3)):,} rows written to {out}/" in done.stdout + done.stderr
    first = _dataset(out)
    export_file(store, job, tmp_path / "one.parquet")
    assert first.equals(pq.read_table(tmp_path / "one.parquet"))
    again = producer("export", job, "--out", str(out), "--parallel", "3", env=env, check=True)
    assert again.returncode == 0 and _dataset(out).equals(first), "an earlier dataset is replaced"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = producer("export", job, "--out", str(mine), "--parallel", "2", env=env)
    assert refused.returncode != 0 and "not an earlier export's directory" in refused.stdout + refused.stderr
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    diffed = producer("diff", job, job, "--parallel", "2", "--json", env=env, check=True)
    assert json.loads(diffed.stdout)["unchanged"] == len(_logits(3))
