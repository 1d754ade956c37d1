"""What a worker gets out of the GPU for one chunk: rerankq's `Reranker.score` (tokenizing the next slice
while the engine scores this one, GPU defaults from `engine_kwargs`) vs tokenizing first and scoring
after (before the change), vs the engine alone on ready prompts, vs a bare `LLM.classify`.

On the lent H100 (see bench/README.md for staging the vLLM bundle):
    eval "$(bash .gpu/remote-setup.sh)"; /opt/torch/.venv/bin/python3 bench/pipeline_bench.py --tok .gpu/tok.tar.xz
On a CPU (tiny model): python bench/pipeline_bench.py --smoke --model /tmp/tiny1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import interleave, paired_ratio  # noqa: E402
from bench.gpu_bench import MODELS, build_checkpoint, log, param_counts  # noqa: E402
from bench.pairs import make_pairs  # noqa: E402

H100_BF16_DENSE_FLOPS = 989e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="0.6b")
    ap.add_argument("--pairs", type=int, default=12288, help="one chunk")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tok", default=str(REPO / ".gpu" / "tok.tar.xz"))
    ap.add_argument("--work", default="/tmp/rerankq-bench")
    ap.add_argument("--smoke", action="store_true", help="CPU: the tiny model given by --model")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    out = Path(os.environ.get("OUT") or Path(args.work) / "out")
    out.mkdir(parents=True, exist_ok=True)

    from rerankq.settings import Settings
    from worker.engines import load_reranker

    results = []
    for name in args.models.split(","):
        if args.smoke:
            path, dtype, params = args.model, "float32", None
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        else:
            tok = Path(args.work) / "tok"
            tok.mkdir(parents=True, exist_ok=True)
            with tarfile.open(args.tok) as archive:
                archive.extractall(tok, filter="data")
            path = str(Path(args.work) / f"ckpt-{name}")
            build_checkpoint(name, MODELS[name], Path(path), tok, "bfloat16", "cuda")
            dtype, params = "bfloat16", param_counts(MODELS[name])["non_embedding"]
        t0 = time.monotonic()
        reranker = load_reranker(Settings(model=path, engine="vllm", dtype=dtype, enforce_eager=args.smoke))
        start_s = time.monotonic() - t0
        llm = reranker.engine.llm
        log(f"{name}: engine up in {start_s:.0f} s; kwargs {llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens} batched tokens")
        pairs = make_pairs(args.pairs, seed=0, docs_per_query=64, query_words=(4, 16), doc_words=(150, 240))
        prompts = [p.token_ids for p in reranker.builder.build(pairs)]
        tokens = sum(map(len, prompts))
        got: dict[str, list[float]] = {}

        def pipelined() -> None:
            got["pipelined"] = [s.score for s in reranker.score(pairs)]

        def sequential() -> None:  # what Reranker.score did before: tokenize all, then score all
            built = reranker.builder.build(pairs)
            got["sequential"] = reranker.engine.score_prompts([p.token_ids for p in built])

        def engine_only() -> None:
            got["engine_only"] = reranker.engine.score_prompts(prompts)

        def bare() -> None:
            outs = llm.classify([{"prompt_token_ids": p} for p in prompts], use_tqdm=False)
            got["bare"] = [float(o.outputs.probs[0]) for o in outs]

        variants = {"pipelined": pipelined, "sequential": sequential, "engine_only": engine_only, "bare": bare}
        times, _ = interleave(variants, reps=args.reps, warmup=1, log=log)
        row = {"model": name, "pairs": len(pairs), "tokens_per_pair": round(tokens / len(pairs)), "engine_start_s": round(start_s)}
        for v, ts in times.items():
            med = statistics.median(ts)
            row[f"{v}_pairs_per_s"] = round(len(pairs) / med)
            if params:
                row[f"{v}_mfu"] = round(2 * params * tokens / med / H100_BF16_DENSE_FLOPS, 3)
        row["pipelined_over_sequential"] = round(paired_ratio(times, "pipelined", "sequential"), 3)
        row["pipelined_over_engine_only"] = round(paired_ratio(times, "pipelined", "engine_only"), 3)
        row["engine_only_over_bare"] = round(paired_ratio(times, "engine_only", "bare"), 3)
        row["max_drift_pipelined_vs_engine_only"] = max(abs(a - b) for a, b in zip(got["pipelined"], got["engine_only"]))
        results.append(row)
        log(json.dumps(row))
        reranker.close()
        del reranker, llm
    (out / "pipeline.json").write_text(json.dumps(results, indent=2))
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in results:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
