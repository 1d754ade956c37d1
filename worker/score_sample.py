"""Score a small manifest in this process with the configured engine: the worker side of
``producer calibrate``, which runs it once per side in a fresh process with that side's ``RERANKQ_*``.

    python -m worker.score_sample --manifest SAMPLE.parquet --out SCORES.parquet

Writes one row per manifest row, in order (``score``, ``error``), and ``SCORES.parquet.json`` with the
scoring context the scores were made in (the cache's: model fingerprint, dtype, engine, numerics).
A process of its own because an engine's numerics (vLLM's batch-invariant mode, the linear-layer
patch) are fixed per process, and so that the producer never imports the worker or an engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    import rerankq.torch_compat  # noqa: F401 - mismatched torch companions hidden before transformers loads
    from rerankq.logs import configure_logging
    from rerankq.prompt import Pair
    from rerankq.score_key import worker_context
    from rerankq.settings import Settings
    from worker.engines import load_reranker

    settings = Settings()
    configure_logging("WARNING", False)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # as the worker (worker/tasks.py): vLLM's CPU default takes the host's memory
    table = pq.read_table(args.manifest)
    cols = table.to_pydict()
    instructions = cols.get("instruction") or [None] * table.num_rows
    pairs = [Pair(q, d, i) for q, d, i in zip(cols["query"], cols["document"], instructions)]
    started = time.monotonic()
    reranker = load_reranker(settings)
    loaded = time.monotonic()
    try:
        results = reranker.score(pairs)
    finally:
        reranker.close()
    scored = time.monotonic()
    pq.write_table(
        pa.table({"score": [r.score for r in results], "logit": [r.logit for r in results],
                  "error": [r.error for r in results]},
                 schema=pa.schema([("score", pa.float64()), ("logit", pa.float64()), ("error", pa.string())])),
        args.out,
    )  # fmt: skip
    context = worker_context(settings)
    meta = {"context": context.as_dict(), "digest": context.digest, "model": settings.model,
            "load_s": loaded - started, "score_s": scored - loaded, "pairs": len(pairs)}  # fmt: skip
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
