"""A cascade in the ledger, on SQLite and PostgreSQL: stage-1 chunks hand their queries' top pairs on as
stage-2 chunks routed to the second model, the job ends only when both stages have, and the export
ranks each query's top pairs by stage 2, the rest by stage 1, with both scores and the deciding stage.
(tests/test_cascade.py runs the same with real workers and counts what each engine sees.)"""

from __future__ import annotations

from producer.export import iter_ranked
from rerankq.store.chunks import Misrouted
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk, ScoreRow
from schemas import InlineSpec
from worker.cascade import stage2_chunk, top_pairs
from worker.chunk_pairs import load_pairs
from worker.engines.base import PairScore

SMALL, LARGE = "org/small", "org/large"


def _pairs(query: str, n: int) -> list[dict]:
    return [{"query_id": query, "doc_id": f"d{i}", "query": query, "document": f"doc {i}"} for i in range(n)]


def test_cascade_hands_top_pairs_to_the_second_model(store: Ledger):
    spec = InlineSpec.model_validate({"pairs": _pairs("q1", 5) + _pairs("q2", 2)})
    job, (msg,) = store.create_job(
        kind="inline", chunks=[NewChunk(spec.model_dump(mode="json"), 7)], model=SMALL, then_model=LARGE, then_top=3
    )
    assert (msg.model, msg.stage, msg.top, msg.cascade) == (SMALL, 1, 3, True)
    assert isinstance(store.begin_chunk(job, msg.chunk_id, "w-large", LARGE, "c" * 64), Misrouted)
    assert store.begin_chunk(job, msg.chunk_id, "w-small", SMALL, "a" * 64) is None

    keyed = load_pairs(msg.spec)
    stage1 = {"d0": 0.1, "d1": 0.9, "d2": 0.5, "d3": 0.5, "d4": 0.7}
    results = [PairScore(stage1[k.doc_id] if k.query_id == "q1" else 0.3) for k in keyed]
    chosen = top_pairs(keyed, results, 3)
    assert sorted((keyed[i].query_id, keyed[i].doc_id) for i in chosen) == [
        ("q1", "d1"), ("q1", "d2"), ("q1", "d4"), ("q2", "d0"), ("q2", "d1"),
    ]  # fmt: skip
    then = stage2_chunk(msg.spec, keyed, chosen)
    rows = [ScoreRow(k.query_id, k.doc_id, r.score, None) for k, r in zip(keyed, results)]
    assert store.finish_chunk(job, msg.chunk_id, rows, then)
    assert store.status(job).state.value == "running", "stage 2 is still to come"

    (second,) = store.claim_unsent(job)
    assert (second.model, second.stage, second.top, second.context) == (LARGE, 2, None, None)
    assert isinstance(store.begin_chunk(job, second.chunk_id, "w-small", SMALL, "a" * 64), Misrouted)
    assert store.begin_chunk(job, second.chunk_id, "w-large", LARGE, "b" * 64) is None
    rescored = {("q1", "d1"): 0.2, ("q1", "d2"): 0.8, ("q1", "d4"): 0.6, ("q2", "d0"): 0.4, ("q2", "d1"): 0.9}
    keyed2 = load_pairs(second.spec)
    assert len(keyed2) == 5, "stage 2 sees exactly the top pairs"
    assert store.finish_chunk(job, second.chunk_id, [ScoreRow(k.query_id, k.doc_id, rescored[k.query_id, k.doc_id], None) for k in keyed2])

    st = store.status(job)
    assert st.state.value == "completed" and (st.pairs_scored, st.pairs_total) == (7, 7)
    assert (st.then_model, st.then_top, st.then_context) == (LARGE, 3, "b" * 64)
    ranked = [(r["query_id"], r["doc_id"], r["rank"], r["ranked_by_stage"], r["stage2_score"]) for r in iter_ranked(store, job)]
    assert ranked == [
        ("q1", "d2", 1, 2, 0.8), ("q1", "d4", 2, 2, 0.6), ("q1", "d1", 3, 2, 0.2),  # stage 2 decides the top 3
        ("q1", "d3", 4, 1, None), ("q1", "d0", 5, 1, None),  # then stage 1's order
        ("q2", "d1", 1, 2, 0.9), ("q2", "d0", 2, 2, 0.4),
    ]  # fmt: skip


def test_workers_find_cached_scores_by_key(store: Ledger):
    """Cascade chunks skip the engine for pairs the cache holds in the worker's own context."""
    from rerankq.store.cache_lookup import cached_scores

    spec = InlineSpec.model_validate({"pairs": _pairs("q", 3)})
    job, (msg,) = store.create_job(kind="inline", chunks=[NewChunk(spec.model_dump(mode="json"), 3)], model=SMALL)
    store.begin_chunk(job, msg.chunk_id, "w", SMALL, "a" * 64)
    keys = [bytes([i]) * 32 for i in range(3)]
    rows = [ScoreRow("q", f"d{i}", i / 10, None, keys[i], i - 40.0) for i in range(2)] + [ScoreRow("q", "d2", None, "too long", keys[2])]
    assert store.finish_chunk(job, msg.chunk_id, rows)
    found = cached_scores(store, [*keys, None, b"\x09" * 32])
    assert found == {keys[0]: (0.0, -40.0), keys[1]: (0.1, -39.0)}, "errors are never cached; log-odds are kept"


def test_pairs_a_worker_took_from_the_cache_count_as_reused(store: Ledger):
    """Issue 27: a cascade served from the worker's cache said "7 scored, 0 reused": its stage-1 cache hits
    count as reused (as reuse at submission does), not as scored, and stage 2's hits change no count."""
    from rich.console import Console

    from producer.commands.tables import status_table

    spec = InlineSpec.model_validate({"pairs": _pairs("q1", 5) + _pairs("q2", 2)})
    job, (msg,) = store.create_job(
        kind="inline", chunks=[NewChunk(spec.model_dump(mode="json"), 7)], model=SMALL, then_model=LARGE, then_top=1
    )
    store.begin_chunk(job, msg.chunk_id, "w-small", SMALL, "a" * 64)
    keyed = load_pairs(msg.spec)
    results = [PairScore(i / 10) for i in range(7)]
    rows = [ScoreRow(k.query_id, k.doc_id, r.score, None) for k, r in zip(keyed, results)]
    assert store.finish_chunk(job, msg.chunk_id, rows, stage2_chunk(msg.spec, keyed, top_pairs(keyed, results, 1)), reused=6)
    (second,) = store.claim_unsent(job)
    store.begin_chunk(job, second.chunk_id, "w-large", LARGE, "b" * 64)
    keyed2 = load_pairs(second.spec)
    assert store.finish_chunk(job, second.chunk_id, [ScoreRow(k.query_id, k.doc_id, 0.5, None) for k in keyed2], reused=2)
    st = store.status(job)
    assert st.state.value == "completed"
    assert (st.pairs_scored, st.pairs_reused, st.pairs_failed, st.pairs_total) == (1, 6, 0, 7)
    console = Console(width=200, record=True)
    console.print(status_table(st))
    assert "1 scored, 6 reused, 0 failed, 7 total" in console.export_text()
    assert not store.finish_chunk(job, msg.chunk_id, rows, reused=6), "a second delivery counts nothing twice"
    assert store.status(job).pairs_reused == 6


def test_stage2_chunks_are_claimed_once_by_threads_finishing_stage1_at_once(store: Ledger):
    """Seen on a clean run: two threads finished stage-1 chunks 14 ms apart, each sent every unsent stage-2
    chunk of the job, and one stage-2 chunk reached the second model twice. Claiming is one conditional update."""
    import threading

    specs = [InlineSpec.model_validate({"pairs": _pairs(f"q{n}", 4)}) for n in range(6)]
    job, msgs = store.create_job(
        kind="inline", chunks=[NewChunk(s.model_dump(mode="json"), 4) for s in specs], model=SMALL, then_model=LARGE, then_top=2
    )  # fmt: skip
    for msg in msgs:
        store.begin_chunk(job, msg.chunk_id, "w-small", SMALL, "a" * 64)
        keyed = load_pairs(msg.spec)
        results = [PairScore(i / 10) for i in range(len(keyed))]
        rows = [ScoreRow(k.query_id, k.doc_id, r.score, None) for k, r in zip(keyed, results)]
        assert store.finish_chunk(job, msg.chunk_id, rows, stage2_chunk(msg.spec, keyed, top_pairs(keyed, results, 2)))
    start, claimed, errors = threading.Barrier(4), [], []

    def claim() -> None:
        start.wait()
        try:
            claimed.extend(m.chunk_id for m in store.claim_unsent(job))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(claimed) == len(set(claimed)) == 6, claimed
    assert store.claim_unsent(job) == [], "a claimed chunk is never claimed again"
