"""A bad manifest (unreadable, a column missing or mistyped, a bad row, outside the allowed roots) is refused
whole, every problem listed with its file, row and field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.bad_input.refusals import (
    Stack,
    assert_refused,
    good_columns,
    rejected,
    set_value,
    with_column,
    write,
)
from tests.corpus import rows


def _corrupt_pages(path: Path) -> Path:
    write(path, good_columns())
    meta = pq.ParquetFile(path).metadata.row_group(0).column(3)  # the document column
    start = meta.dictionary_page_offset or meta.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 20, start + meta.total_compressed_size - 20, 3):
        data[i] ^= 0x5A  # the footer stays intact: the file opens, its pages do not decode
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path) -> Path:
    data = write(path, good_columns()).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _long_query() -> dict[str, list]:
    columns = good_columns()
    for r in range(4, 8):  # every row of q0001
        columns["query"][r] = "how do rerankers score " * 60
    return columns


def _not_contiguous() -> dict[str, list]:
    columns = good_columns()
    columns["query_id"][8] = "q0000"  # q0000 again after q0001
    return columns


def _utf8_in_binary() -> pa.Table:
    columns = good_columns()
    raw = [d.encode() for d in columns["document"]]
    raw[3] = b"caf\xe9 latin-1, not UTF-8"
    return with_column(columns, "document", pa.array(raw, pa.binary()))


def _utf8_in_string() -> pa.Table:
    """Invalid UTF-8 written unchecked into a column the file declares as string."""
    columns = good_columns()
    raw = [q.encode() for q in columns["query"]]
    raw[10] = b"\xff\xfe broken"
    return with_column(columns, "query", pa.array(raw, pa.binary()).view(pa.string()))


def _zero_rows() -> pa.Table:
    return pa.table(good_columns()).slice(0, 0)


def _without(column: str) -> dict[str, list]:
    columns = good_columns()
    del columns[column]
    return columns


# (id, build(path) -> manifest argument, needles(path) -> what stderr must say, extra env)
ManifestCase = tuple[str, Callable[[Path], str], Callable[[str], list[str]], dict[str, str]]
MANIFEST_CASES: list[ManifestCase] = [
    (
        "not-parquet",
        lambda p: (p.write_text("query_id,query,doc_id,document\nq0,a,d0,b\n"), str(p))[1],
        lambda p: [rejected(p) + f"{p}: not a readable Parquet file"],
        {},
    ),
    (
        "empty-file",
        lambda p: (p.write_bytes(b""), str(p))[1],
        lambda p: [rejected(p) + f"{p}: not a readable Parquet file"],
        {},
    ),
    (
        "truncated-file",
        lambda p: str(_truncated(p)),
        lambda p: [rejected(p) + f"{p}: not a readable Parquet file"],
        {},
    ),
    (
        "corrupt-pages",
        lambda p: str(_corrupt_pages(p)),
        lambda p: [rejected(p) + f"{p} row 0: unreadable Parquet data"],
        {},
    ),
    (
        "missing-column",
        lambda p: str(write(p, _without("doc_id"))),
        lambda p: [rejected(p) + f"{p} field 'doc_id': required column is missing"],
        {},
    ),
    (
        "wrong-type-int64-query-id",
        lambda p: str(write(p, with_column(good_columns(), "query_id", pa.array(range(12), pa.int64())))),
        lambda p: [rejected(p) + f"{p} field 'query_id': must be a string column, found int64"],
        {},
    ),
    *[
        (
            f"null-{name}",
            lambda p, name=name: str(write(p, set_value(name, 5, None))),
            lambda p, name=name: [rejected(p) + f"{p} row 5 field '{name}': is null"],
            {},
        )
        for name in ("query", "query_id", "doc_id", "document")
    ],
    *[
        (
            f"empty-{name}",
            lambda p, name=name: str(write(p, set_value(name, 6, ""))),
            lambda p, name=name: [rejected(p) + f"{p} row 6 field '{name}': is an empty string"],
            {},
        )
        for name in ("query", "query_id", "doc_id", "document")
    ],
    (
        "duplicate-pair",
        lambda p: str(write(p, set_value("doc_id", 6, good_columns()["doc_id"][5]))),
        lambda p: [
            rejected(p) + f"{p} row 6 field 'doc_id': "
            f"duplicate pair (query_id='q0001', doc_id='{good_columns()['doc_id'][5]}')"
        ],
        {},
    ),
    (
        "10mb-document",
        lambda p: str(write(p, set_value("document", 9, "x" * 10_000_000))),
        lambda p: [
            rejected(p) + f"{p} row 9 field 'document': has 10,000,000 characters, over the limit of 1,000,000",
            "RERANKQ_MAX_DOCUMENT_CHARS",
        ],
        {},
    ),
    (
        "query-over-max-length",
        lambda p: str(write(p, _long_query())),
        lambda p: [rejected(p) + f"{p} row 4 field 'query': instruction and query take", "max_length 128"],
        {"RERANKQ_MAX_LENGTH": "128"},
    ),
    (
        "invalid-utf8-in-binary-column",
        lambda p: str(write(p, _utf8_in_binary())),
        lambda p: [rejected(p) + f"{p} row 3 field 'document': is not valid UTF-8"],
        {},
    ),
    (
        "invalid-utf8-in-string-column",
        lambda p: str(write(p, _utf8_in_string())),
        lambda p: [rejected(p) + f"{p} row 10 field 'query': is not valid UTF-8"],
        {},
    ),
    (
        "query-rows-not-contiguous",
        lambda p: str(write(p, _not_contiguous())),
        lambda p: [rejected(p) + f"{p} row 8 field 'query_id': query_id 'q0000' appears again after other queries"],
        {},
    ),
    (
        "zero-rows",
        lambda p: str(write(p, _zero_rows())),
        lambda p: [rejected(p) + f"{p}: the manifest has no rows"],
        {},
    ),
    ("no-such-path", lambda p: str(p), lambda p: [f"{p}: no such file or directory"], {}),
    (
        "directory-without-parquet",
        lambda p: (p.mkdir(), str(p))[1],
        lambda p: [f"{p}: the directory holds no Parquet files"],
        {},
    ),
    (
        "scheme-not-allowed",
        lambda p: "http://example.invalid/manifest.parquet",
        lambda p: [f"{p}: scheme 'http' is not allowed", "RERANKQ_MANIFEST_SCHEMES"],
        {},
    ),
    (
        "scheme-not-in-setting",
        lambda p: "s3://bucket/manifest.parquet",
        lambda p: [f"{p}: scheme 's3' is not allowed"],
        {"RERANKQ_MANIFEST_SCHEMES": '["file"]'},
    ),
]


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest_is_refused_whole(case: ManifestCase, stack: Stack, tmp_path: Path):
    _, build, needles, extra = case
    manifest = build(tmp_path / "manifest.parquet")
    assert_refused(stack.run("submit", manifest, **extra), stack, *needles(manifest))


ON_POSTGRESQL = ("not-parquet", "null-document", "duplicate-pair")


@pytest.mark.parametrize("case", [c for c in MANIFEST_CASES if c[0] in ON_POSTGRESQL], ids=ON_POSTGRESQL)
def test_bad_manifest_is_refused_on_postgresql(case: ManifestCase, pg_stack: Stack, tmp_path: Path):
    _, build, needles, extra = case
    manifest = build(tmp_path / "manifest.parquet")
    assert_refused(pg_stack.run("submit", manifest, **extra), pg_stack, *needles(manifest))


@pytest.mark.parametrize("trick", ["sibling", "dot-dot"])
def test_manifest_outside_allowed_roots(trick: str, stack: Stack, tmp_path: Path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = write(tmp_path / "other" / "m.parquet", good_columns())
    given = str(outside) if trick == "sibling" else str(allowed / ".." / "other" / "m.parquet")
    result = stack.run("submit", given, RERANKQ_MANIFEST_ROOTS=json.dumps([str(allowed)]))
    assert_refused(result, stack, f"{outside}: outside the allowed manifest roots (RERANKQ_MANIFEST_ROOTS)")


def test_every_problem_in_every_file_is_listed(stack: Stack, tmp_path: Path):
    """Bad rows in three files of one manifest: all three reported, with each file's own row number."""
    columns = rows(6, 5, seed=3, long_every=10**9)  # 30 rows, 10 per file
    columns["query"][2] = None  # part-000 row 2
    columns["document"][13] = ""  # part-001 row 3
    columns["doc_id"][27] = columns["doc_id"][26]  # part-002 row 7
    directory = tmp_path / "manifest"
    for i in range(3):
        write(directory / f"part-{i:03d}.parquet", {k: v[i * 10 : i * 10 + 10] for k, v in columns.items()})
    result = stack.run("submit", str(directory))
    assert_refused(
        result,
        stack,
        rejected(str(directory), 3) + f"{directory}/part-000.parquet row 2 field 'query': is null",
        f"{directory}/part-001.parquet row 3 field 'document': is an empty string",
        f"{directory}/part-002.parquet row 7 field 'doc_id': "
        f"duplicate pair (query_id='q0005', doc_id='{columns['doc_id'][27]}')",
    )
    assert result.stderr.count("\n  /") == 3, result.stderr


def test_many_problems_are_counted_beyond_those_shown(stack: Stack, tmp_path: Path):
    columns = rows(8, 10, seed=4, long_every=10**9)  # 80 rows
    for r in range(0, 80, 2):
        columns["document"][r] = None  # 40 null documents
    for r in range(1, 60, 2):
        columns["query"][r] = ""  # and 30 empty queries: 70 problems
    manifest = write(tmp_path / "many.parquet", columns)
    result = stack.run("submit", str(manifest))
    assert_refused(result, stack, rejected(str(manifest), 70), "\n  … and 20 more")
    listed = [line for line in result.stderr.splitlines() if line.startswith(f"  {manifest} row ")]
    assert len(listed) == len(set(listed)) == 50, result.stderr
