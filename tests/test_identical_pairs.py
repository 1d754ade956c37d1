"""Identical pairs (the same instruction, query and document under other ids) are scored once per job
and fanned out: the chunk plan puts every copy of a pair in one chunk (producer/chunk_plans.py), even
under another query id, and the worker sends each distinct key to the engine once (worker/tasks.py).
So copies score bit for bit alike where batch invariance is off (CPU), and a second night, which reuses
the one cached value for all of them, reports no change for them."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from producer.chunk_plans import ChunkPacker, inline_chunks
from producer.manifest import plan_manifest
from rerankq.settings import Settings
from schemas import InlinePair
from tests.conftest import base_env, migrate, producer
from tests.corpus import text, write_manifest
from tests.counting_engine import count
from tests.services import REDIS_URL, redis_client
from tests.workers import WorkerProcess

MAX_LENGTH = 512
CHUNK = 12  # each query below holds about a chunk: only the plan's grouping puts copies together
COPYRIGHT = "Copyright (C) 2024 Example Org. Permission is hereby granted, free of charge, to any person…"
BOILERPLATE = "This page was generated from a template. Edit the template, not this page."


def _manifest_rows() -> dict[str, list]:
    """q0: 13 copies of one licence text and 10 other documents; q1: another query with 3 copies of a
    boilerplate; q2: the same query text as q0 under another id, with 5 more licence copies, two of
    q0's documents and 4 of its own; q3: q1's text under another instruction (its own keys)."""
    import random

    rng = random.Random(27)
    out: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "document": [], "instruction": []}
    q0_docs = [text(rng, 5, 40) for _ in range(10)]

    def add(qid: str, query: str, docs: list[str], instruction: str | None = None) -> None:
        for d, doc in enumerate(docs):
            out["query_id"].append(qid)
            out["query"].append(query)
            out["doc_id"].append(f"{qid}-d{d:02d}")
            out["document"].append(doc)
            out["instruction"].append(instruction)

    add("q0", "which licence applies to this package?", [COPYRIGHT] * 13 + q0_docs)
    add("q1", "how do I edit this page?", [BOILERPLATE] * 3 + [text(rng, 5, 40) for _ in range(8)])
    add("q2", "which licence applies to this package?", [COPYRIGHT] * 5 + q0_docs[:2] + [text(rng, 5, 40) for _ in range(4)])
    add("q3", "how do I edit this page?", [BOILERPLATE] * 2 + [text(rng, 5, 40) for _ in range(3)], "Find the steps")
    return out


def _distinct(cols: dict[str, list]) -> int:
    return len(set(zip(cols["instruction"], cols["query"], cols["document"])))


def _bits(x: float | None) -> bytes | None:
    return None if x is None else struct.pack("<d", x)


# --- the plan: copies meet in one chunk --------------------------------------------------------------
def test_a_repeated_query_text_joins_the_chunk_of_its_first_run(tmp_path: Path):
    cols = _manifest_rows()
    manifest = write_manifest(tmp_path / "m.parquet", cols, row_group_size=7)
    plan = plan_manifest(str(manifest), Settings(), chunk_size=CHUNK)
    chunks = [
        [r for seg in c.spec["segments"] for r in seg.get("rows") or range(seg["start"], seg["stop"])] for c in plan.chunks
    ]  # each chunk's file rows
    assert all(len(c.spec["segments"]) == 1 for c in plan.chunks), "one segment per file: each row group read once"
    assert sorted(r for rows in chunks for r in rows) == list(range(len(cols["query_id"]))), "every row once"
    assert [len(rows) for rows in chunks] == [c.pairs for c in plan.chunks]
    by_query = {q: {i for i, rows in enumerate(chunks) for r in rows if cols["query_id"][r] == q} for q in ("q0", "q1", "q2", "q3")}
    assert all(len(v) == 1 for v in by_query.values()), "a query is never split"
    assert by_query["q0"] == by_query["q2"], "the same query text under another id goes to the first one's chunk"
    assert by_query["q1"] != by_query["q0"] and len(plan.chunks) == 3, "other texts are chunked as before"


def test_inline_pairs_of_one_query_text_share_a_chunk():
    def run(qid: str, query: str, n: int, instruction: str | None = None) -> list[InlinePair]:
        return [InlinePair(query_id=qid, doc_id=f"d{i}", query=query, document=f"doc {i % 3}", instruction=instruction) for i in range(n)]

    runs = [run("a", "same", 6), run("b", "other", 6), run("c", "same", 4), run("d", "same", 3, "another instruction")]
    chunks = [sorted({p["query_id"] for p in c.spec["pairs"]}) for c in inline_chunks(runs, 8)]
    assert chunks == [["a", "c"], ["b"], ["d"]]


def test_a_text_repeated_under_very_many_query_ids_keeps_chunks_bounded():
    packer: ChunkPacker[str] = ChunkPacker(10, growth=2)
    for i in range(7):  # one query text, seven query ids of 6 pairs each
        packer.add(f"r{i}", 6, [b"same text"])
    packer.add("other", 3, [b"another text"])
    assert packer.chunks() == [(["r0", "r1", "r2"], 18), (["r3", "r4", "r5"], 18), (["r6", "other"], 9)]


# --- a real worker: the engine sees each distinct pair once; two nights agree -------------------------
@pytest.fixture(scope="module")
def stack(tiny_model, pg_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identical")
    migrate(pg_url)
    broker = f"{REDIS_URL}/13"
    redis_client(broker).flushdb()
    counts = tmp / "engine.count"
    env = base_env(
        tiny_model, pg_url, broker, RERANKQ_MAX_LENGTH=MAX_LENGTH, RERANKQ_ENGINE="tests.counting_engine:factory",
        RERANKQ_TEST_COUNT_FILE=str(counts),
    )  # fmt: skip
    worker = WorkerProcess(env, tmp / "worker.log").start().wait_ready()
    yield env, worker, counts
    worker.terminate()


def _run(stack, *args: str) -> tuple[str, int, str]:
    env, worker, counts = stack
    counts.write_text("")
    sub = producer("submit", *args, "--chunk-size", str(CHUNK), env=env, check=True)
    job = sub.stdout.strip().splitlines()[-1]
    waited = producer("wait", job, "--timeout", "600", env=env, timeout=700)
    assert waited.returncode == 0, waited.stderr + worker.log()[-3000:]
    return job, count(str(counts)), sub.stderr


def _export(env: dict, job: str, out: Path, *args: str) -> dict[tuple[str, str], dict]:
    producer("export", job, "--out", str(out), *args, env=env, check=True)
    return {(r["query_id"], r["doc_id"]): r for r in pq.read_table(out).to_pylist()}


def _copies_alike(cols: dict[str, list], scores: dict[tuple[str, str], dict]) -> int:
    """Asserts every group of identical pairs has one score and one log-odds, bit for bit; returns the
    number of groups with copies."""
    groups: dict[tuple, list[tuple[str, str]]] = {}
    for row in zip(cols["instruction"], cols["query"], cols["document"], cols["query_id"], cols["doc_id"]):
        groups.setdefault(row[:3], []).append(row[3:])
    copied = [ids for ids in groups.values() if len(ids) > 1]
    for ids in copied:
        assert len({(_bits(scores[k]["score"]), _bits(scores[k]["logit"])) for k in ids}) == 1, ids
    return len(copied)


@pytest.mark.slow
def test_copies_score_once_and_alike_and_a_second_night_sees_no_change(stack, tmp_path: Path):
    env = stack[0]
    cols = _manifest_rows()
    manifest = write_manifest(tmp_path / "night1.parquet", cols, row_group_size=7)

    night1, engine1, said = _run(stack, str(manifest))
    assert "reused 0 of" in said, said  # the reuse path (the worker recorded its context)
    assert engine1 == _distinct(cols) < len(cols["query_id"]), "each distinct pair reaches the engine once"
    first = _export(env, night1, tmp_path / "night1-scores.parquet")
    assert _copies_alike(cols, first) == 5  # licence q0+q2, boilerplate q1, boilerplate q3, two q0 docs in q2

    fresh, engine_fresh, _ = _run(stack, str(manifest), "--no-reuse")  # the plan without the cache lookup
    assert engine_fresh == _distinct(cols)
    _copies_alike(cols, _export(env, fresh, tmp_path / "fresh.parquet"))

    edited = dict(cols, document=list(cols["document"]))
    at = cols["query_id"].index("q1") + 5  # one real edit, in q1, among documents that have no copy
    edited["document"][at] = "edited: " + edited["document"][at]
    night2, engine2, said2 = _run(stack, str(write_manifest(tmp_path / "night2.parquet", edited, row_group_size=7)))
    assert engine2 == 1 and f"reused {len(cols['query_id']) - 1:,} of" in said2, said2
    second = _export(env, night2, tmp_path / "night2-scores.parquet")
    _copies_alike(edited, second)
    for key in first:  # every unedited pair: the very same bits, night to night
        if key != (cols["query_id"][at], cols["doc_id"][at]):
            assert (_bits(second[key]["score"]), _bits(second[key]["logit"])) == (_bits(first[key]["score"]), _bits(first[key]["logit"])), key

    delta = _export(env, night2, tmp_path / "changes.parquet", "--changes-since", night1)
    assert {k for k, r in delta.items() if r["change"] == "changed"} == {(cols["query_id"][at], cols["doc_id"][at])}
    assert {k[0] for k in delta} == {"q1"}, "no copy, and no query of copies, is reported"
    summary = json.loads(producer("diff", night1, night2, "--json", env=env, check=True).stdout)
    assert (summary["changed"], summary["new"], summary["removed"]) == (1, 0, 0), summary
    assert summary["unchanged"] + summary["moved"] == len(cols["query_id"]) - 1, summary
