"""Engine-loop probe: one fresh process per configuration (so VLLM_BATCH_INVARIANT is read at import),
each scoring the same token ids through VllmEngine's loop (slices of 4,096 submitted at once, as the
worker's chunks arrive). Prints pairs/s, order stability and drift against a reference's scores.

  python bench/gpu_e2e/loop_probe.py --manifest M.parquet --ckpt DIR --ref bare.json \
      --config fp8:RERANKQ_QUANTIZATION=fp8 --config seqs512:RERANKQ_MAX_NUM_SEQS=512 ...
      --config fp8ckpt:ckpt=/tmp/e2e/4b/ckpt-4b-fp8,RERANKQ_NUMERICS=fast   (another checkpoint, same token ids)
A child (--child) does one configuration; the driver never imports torch."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

T0 = time.monotonic()
RUN_SH_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
              "VLLM_USE_FLASHINFER_SAMPLER": "0"}  # fmt: skip


def log(msg: str) -> None:
    print(f"[probe {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def child(args: argparse.Namespace) -> None:
    import random

    import pyarrow.parquet as pq

    from rerankq.families import builder_for, family_of, max_length_for
    from rerankq.log_odds import probability
    from rerankq.model_files import resolve_dtype
    from rerankq.prompt import Pair
    from rerankq.settings import Settings
    from worker.engines.vllm_engine import VllmEngine, engine_kwargs, on_gpu

    settings = Settings(model=args.ckpt)
    settings = settings.model_copy(update={"max_length": max_length_for(args.ckpt, settings.max_length)})  # as load_reranker
    table = pq.read_table(args.manifest, columns=["query", "document"]).to_pydict()
    n = min(args.pairs, len(table["query"]))
    builder = builder_for(args.ckpt, settings.max_length)  # the checkpoint's family: Qwen3-Reranker or a cross-encoder
    built = builder.build([Pair(q, d) for q, d in zip(table["query"][:n], table["document"][:n])])
    prompts = [p.token_ids for p in built]
    starts = [p.token_type_start for p in built] if builder.token_types else None  # BERT's token types
    dtype = resolve_dtype(settings.dtype, args.ckpt, "vllm")
    t = time.monotonic()
    engine = VllmEngine(settings, args.ckpt, dtype)
    start_s = time.monotonic() - t
    sched = engine.llm.llm_engine.vllm_config.scheduler_config
    warm = builder.build([Pair("warm-up query " + str(i), "warm-up document " * 50) for i in range(256)])
    engine.score_prompts([p.token_ids for p in warm], [p.token_type_start for p in warm] if starts else None)

    def run(ps: list[list[int]], ts: list[int | None] | None) -> tuple[list[float], float]:
        t = time.monotonic()
        futures = [engine.submit_log_odds(ps[i : i + 4096], ts[i : i + 4096] if ts else None) for i in range(0, len(ps), 4096)]
        scores = [probability(x) for f in futures for x in f.result()]  # the worker's float64 sigmoid
        return scores, time.monotonic() - t

    p1, s1 = run(prompts, starts)
    order = list(range(n))
    random.Random(0).shuffle(order)
    shuffled, s2 = run([prompts[i] for i in order], [starts[i] for i in order] if starts else None)
    back = [0.0] * n
    for pos, i in enumerate(order):
        back[i] = shuffled[pos]
    kwargs = engine_kwargs(settings, args.ckpt, dtype, on_gpu=on_gpu(), family=family_of(args.ckpt))
    kwargs = {k: v for k, v in kwargs.items() if k != "hf_overrides"}
    out = {
        "pairs": n, "tokens": sum(map(len, prompts)), "engine_start_s": start_s, "pass1_s": s1, "shuffled_s": s2,
        "pairs_per_s": n / s1, "shuffled_pairs_per_s": n / s2, "max_diff_shuffled": max(abs(a - b) for a, b in zip(p1, back)),
        "scores": p1, "kwargs": kwargs, "resolved": {"max_num_seqs": sched.max_num_seqs,
        "max_num_batched_tokens": sched.max_num_batched_tokens}, "batch_invariant": os.environ.get("VLLM_BATCH_INVARIANT"),
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(out))
    engine.close()
    os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--pairs", type=int, default=8192)
    ap.add_argument("--ref", help="a bare.json or probe json whose 'scores' are the reference (same manifest order)")
    ap.add_argument("--config", action="append", default=[], help="name:RERANKQ_X=V,RERANKQ_Y=W (name: for the defaults)")
    ap.add_argument("--budget", type=float, default=540)
    ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "/tmp"), "probe.json"))
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    ref = json.loads(Path(args.ref).read_text())["scores"] if args.ref else None
    results: dict[str, dict] = {}
    for spec in args.config:
        name, _, sets = spec.partition(":")
        if results and time.monotonic() - T0 + 1.2 * max(r.get("wall_s", 0) for r in results.values()) > args.budget:
            log(f"{name}: skipped, not enough time left")
            break
        # run.sh's vLLM environment, so a probe started by hand does not die on the bundle's missing flashinfer
        env = {**RUN_SH_ENV, **os.environ, "PYTHONUNBUFFERED": "1"}
        env.update(dict(kv.split("=", 1) for kv in sets.split(",") if kv))
        ckpt = env.pop("ckpt", args.ckpt)  # ckpt=DIR: this configuration scores another checkpoint (fp8ckpt.py's)
        out = Path(f"/tmp/probe-{name}.json")
        out.unlink(missing_ok=True)
        t = time.monotonic()
        with open(Path(os.environ.get("OUT", "/tmp")) / f"probe-{name}.log", "w") as f:
            p = subprocess.run([sys.executable, __file__, "--child", "--manifest", args.manifest, "--ckpt", ckpt,
                                "--pairs", str(args.pairs), "--json", str(out)], env=env, stdout=f, stderr=subprocess.STDOUT,
                               timeout=max(60, args.budget - (time.monotonic() - T0)))  # fmt: skip
        wall = time.monotonic() - t
        if p.returncode != 0 or not out.exists():
            log(f"{name}: FAILED rc {p.returncode} (probe-{name}.log)")
            results[name] = {"failed": p.returncode, "wall_s": wall}
            continue
        r = json.loads(out.read_text())
        r["wall_s"] = wall
        base = ref if ref is not None else (next(iter(results.values())).get("scores") if results else None)
        if base:
            d = [abs(a - b) for a, b in zip(r["scores"], base)]
            r["drift_max"], r["drift_mean"] = max(d), statistics.fmean(d)
            if len(d) > 2:
                r["pearson"] = statistics.correlation(r["scores"], base[: len(d)])
        results[name] = r
        log(f"{name} ({sets or 'defaults'}): {r['pairs_per_s']:,.1f} pairs/s (shuffled {r['shuffled_pairs_per_s']:,.1f}), "
            f"start {r['engine_start_s']:.1f} s, max|shuffled-p1| {r['max_diff_shuffled']:.3e}, "
            f"drift vs ref max {r.get('drift_max', float('nan')):.3e} mean {r.get('drift_mean', float('nan')):.3e} "
            f"pearson {r.get('pearson', float('nan')):.4f}, scores {min(r['scores']):.4f}-{max(r['scores']):.4f}, "
            f"resolved {r['resolved']}, BI {r['batch_invariant']}, kwargs {r['kwargs']}")  # fmt: skip
    Path(args.json).write_text(json.dumps({k: {x: y for x, y in v.items() if x != "scores"} for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
