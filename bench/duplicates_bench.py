"""Identical pairs scored once (issue 27): a manifest with realistic duplication, planned as
``producer submit`` plans it, each chunk read as a worker reads it and scored by the worker's engine
twice, interleaved: each distinct pair once and fanned out (``worker.tasks._score_missing``, what the
worker does) against every copy sent to the engine (what it did before).

    cd /work/main && . .venv/bin/activate
    PYTHONPATH=. python bench/duplicates_bench.py [--model DIR] [--queries 60] [--docs 40] [--dup 0.15] \\
        [--repeat-queries 0.05] [--chunk-size 512] [--reps 3] [--json FILE]

Duplication: ``--dup`` of each query's documents are copies of another of its documents (a licence,
a template, boilerplate), and ``--repeat-queries`` of the queries repeat an earlier query's text under a
new query id with half of its documents (the same search from another session). Without ``--model``
the tiny random-weight checkpoint is built (or reused). Reports the pairs sent to the engine, wall
seconds (median of the rounds), and how far apart copies scored by the old way were.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_manifest(path: Path, queries: int, docs: int, dup: float, repeat: float, seed: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.pairs import make_pairs

    rng = random.Random(seed)
    pool = make_pairs(queries * docs, seed=seed, docs_per_query=docs, doc_words=(20, 200))
    cols: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "document": []}
    runs: list[tuple[str, list[str]]] = []
    for q in range(queries):
        query = pool[q * docs].query
        texts = [p.document for p in pool[q * docs : (q + 1) * docs]]
        for d in rng.sample(range(1, docs), round(dup * docs)):  # copies of another document of the query
            texts[d] = texts[rng.randrange(d)]
        runs.append((query, texts))
        if rng.random() < repeat:  # the same query text again, another id, half of its documents
            runs.append((query, rng.sample(texts, docs // 2)))
    for i, (query, texts) in enumerate(runs):
        for d, text in enumerate(texts):
            cols["query_id"].append(f"q{i:05d}")
            cols["query"].append(query)
            cols["doc_id"].append(f"d{d:04d}")
            cols["document"].append(text)
    pq.write_table(pa.table(cols), path, row_group_size=4096)
    pairs = len(cols["query_id"])
    distinct = len(set(zip(cols["query"], cols["document"])))
    return {"pairs": pairs, "distinct": distinct, "duplicate_share": round(1 - distinct / pairs, 3), "query_runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint dir (default: the tiny random-weight Qwen3, built if missing)")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--dup", type=float, default=0.15)
    parser.add_argument("--repeat-queries", type=float, default=0.05)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    from bench.common import interleave, machine_info, paired_ratio
    from producer.manifest import plan_manifest
    from producer.tiny_model import ensure_tiny_model
    from rerankq.score_key import context_for
    from rerankq.settings import Settings
    from schemas import ManifestSpec
    from worker.chunk_pairs import load_pairs
    from worker.engines import load_reranker
    from worker.tasks import _score_missing

    settings = Settings(enforce_eager=True)  # RERANKQ_* from the environment still apply
    model = args.model or str(ensure_tiny_model(settings.tiny_model_dir))
    settings = settings.model_copy(update={"model": model})
    tmp = Path(tempfile.mkdtemp(prefix="rerankq-dups-"))
    manifest = tmp / "manifest.parquet"
    shape = write_manifest(manifest, args.queries, args.docs, args.dup, args.repeat_queries, args.seed)
    plan = plan_manifest(str(manifest), settings, chunk_size=args.chunk_size)
    context = context_for(settings, model)
    chunks = []
    for c in plan.chunks:
        keyed = load_pairs(ManifestSpec.model_validate(c.spec))
        chunks.append((keyed, context.keys(*zip(*[(k.pair.instruction, k.pair.query, k.pair.document) for k in keyed]))))
    reranker = load_reranker(settings)
    sent = {"once": 0, "every copy": 0}
    results: dict[str, list] = {}

    def once() -> None:
        out = []
        for keyed, keys in chunks:
            out.extend(_score_missing(reranker, keyed, keys, {}))
        sent["once"] = sum(len(set(keys)) for _, keys in chunks)  # what reaches the engine: its distinct keys
        results["once"] = out

    def every_copy() -> None:
        out = []
        for keyed, _ in chunks:
            out.extend(reranker.score([k.pair for k in keyed]))
        sent["every copy"] = sum(len(keyed) for keyed, _ in chunks)
        results["every copy"] = out

    times, _ = interleave({"once": once, "every copy": every_copy}, args.reps)
    reranker.close()

    keys = [k for _, ks in chunks for k in ks]

    def spread(scores: list) -> float:
        """Largest gap between two copies' log-odds."""
        by_key: dict[bytes, list[float]] = {}
        for key, s in zip(keys, scores):
            by_key.setdefault(key, []).append(s.logit if s.logit is not None else s.score)
        return max((max(v) - min(v) for v in by_key.values()), default=0.0)

    med = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "machine": machine_info(),
        "args": vars(args),
        **shape,
        "chunks": len(plan.chunks),
        "sent_to_engine": sent,
        "wall_s_median": {k: round(v, 2) for k, v in med.items()},
        "wall_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "speedup_ratio_of_medians": round(med["every copy"] / med["once"], 3),
        "speedup_median_of_rounds": round(paired_ratio(times, "once", "every copy"), 3),  # both run back to back
        "copies_max_logit_gap": {name: spread(results[name]) for name in results},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
