"""CPU benchmark: rerankq's vLLM engine path vs a bare ``LLM.classify`` vs the hf engine, same token ids.

    cd /work/main && . .venv/bin/activate
    PYTHONPATH=. python bench/cpu_bench.py [--model DIR] [--pairs 2000] [--reps 7] [--mp | --inproc] [--json FILE]

One vLLM engine is built from ``worker.engines.load_reranker`` (so with ``engine_kwargs``); the bare
call uses that same ``LLM`` object, so the only difference measured is rerankq's wrapper (bare =
``LLM.classify`` on ``{"prompt_token_ids": ids}`` dicts, then P(yes) read from each output). Variants run
interleaved after a warm-up (order reversed every other round, so engine and bare always run back to
back) and medians are reported; the engine/bare ratio is the median of per-round ratios, so a machine
busy with other work slows both alike. CPU seconds used per run (this process, and the vLLM engine
processes) are reported too: they barely move with other load, and the wrapper's cost shows there.
``VllmEngine`` runs the engine core in this process unless VLLM_ENABLE_V1_MULTIPROCESSING is set;
``--mp`` sets it to 1 (vLLM's own default: engine core in a separate process), ``--inproc`` to 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint dir (default: the tiny random-weight Qwen3, built if missing)")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inproc", action="store_true", help="VLLM_ENABLE_V1_MULTIPROCESSING=0: engine core in this process")
    mode.add_argument("--mp", action="store_true", help="VLLM_ENABLE_V1_MULTIPROCESSING=1: engine core in its own process")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers engine")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if args.inproc or args.mp:  # otherwise VllmEngine decides (it defaults to in-process)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if args.mp else "0"
    import psutil
    import torch
    import vllm

    from bench.common import interleave, machine_info, markdown_table, paired_ratio, row
    from bench.pairs import make_pairs
    from producer.tiny_model import ensure_tiny_model
    from rerankq.model_files import resolve_dtype
    from rerankq.settings import Settings
    from worker.engines import load_reranker
    from worker.engines.hf_engine import HfEngine
    from worker.engines.vllm_engine import engine_kwargs

    settings = Settings(enforce_eager=True)  # RERANKQ_* from the environment still apply
    model = args.model or str(ensure_tiny_model(settings.tiny_model_dir))
    settings = settings.model_copy(update={"model": model})
    dtype = resolve_dtype(settings.dtype, model, "vllm")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"model {model} dtype {dtype}; engine kwargs {engine_kwargs(settings, model, dtype)}")

    pairs = make_pairs(args.pairs, seed=args.seed)
    reranker = load_reranker(settings)
    engine = reranker.engine
    llm = engine.llm  # type: ignore[attr-defined]
    inproc = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
    prompts = [p.token_ids for p in reranker.builder.build(pairs)]
    assert all(p is not None for p in prompts)
    n_tokens = sum(len(p) for p in prompts)  # type: ignore[arg-type]
    log(f"{len(prompts)} pairs, {n_tokens} tokens ({n_tokens / len(prompts):.0f}/pair)")

    def bare() -> list[float]:
        # Scores taken inside the timed call, as score_prompts does: the outputs are freed in both.
        outputs = llm.classify([{"prompt_token_ids": ids} for ids in prompts], use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outputs]

    variants = {
        "engine": lambda: engine.score_prompts(prompts),
        "bare": bare,
        "reranker": lambda: reranker.score(pairs),
    }
    hf = None
    if not args.no_hf:
        hf_dtype = resolve_dtype(settings.dtype, model, "hf")
        hf = HfEngine(settings, model, hf_dtype, reranker.builder.yes_id, reranker.builder.no_id)
        variants["hf"] = lambda: hf.score_prompts(prompts)

    me = psutil.Process()

    def cpu_probe() -> dict[str, float]:
        t = me.cpu_times()
        groups = {"main": t.user + t.system, "engine procs": 0.0}
        for child in me.children(recursive=True):
            try:
                c = child.cpu_times()
                groups["engine procs"] += c.user + c.system
            except psutil.Error:
                pass
        return groups

    info = machine_info()
    start = time.monotonic()
    times, cpu = interleave(variants, args.reps, warmup=1, log=log, settle=1.0, cpu_probe=cpu_probe)
    info["loadavg_after"] = os.getloadavg()
    info["measure_s"] = time.monotonic() - start

    engine_scores = engine.score_prompts(prompts)
    bare_scores = bare()
    checks = {"max_abs_engine_vs_bare": max(abs(a - b) for a, b in zip(engine_scores, bare_scores))}
    if hf is not None:
        hf_scores = hf.score_prompts(prompts)
        checks["max_abs_vllm_vs_hf"] = max(abs(a - b) for a, b in zip(engine_scores, hf_scores))

    labels = {
        "engine": "rerankq engine path (`VllmEngine.score_prompts`)",
        "bare": "bare `LLM.classify` (same LLM)",
        "reranker": "`Reranker.score` (tokenize + engine)",
        "hf": "hf engine (`HfEngine.score_prompts`)",
    }
    rows = []
    for name, secs in times.items():
        r = row(name, secs, len(prompts), n_tokens)
        r["label"] = labels[name]
        r["cpu_main_s"] = statistics.median(cpu[name]["main"])
        r["cpu_engine_s"] = statistics.median(cpu[name]["engine procs"]) if not inproc else None
        if name != "bare":
            r["vs_bare"] = paired_ratio(times, name, "bare")
        rows.append(r)
    ratio = paired_ratio(times, "engine", "bare")
    mode = "engine core in this process" if inproc else "engine core in its own process"
    result = {
        "machine": info,
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__},
        "model": model,
        "dtype": dtype,
        "mode": mode,
        "pairs": len(prompts),
        "tokens": n_tokens,
        "reps": args.reps,
        "rows": rows,
        "engine_over_bare_throughput": ratio,
        "engine_over_bare_of_medians": statistics.median(times["bare"]) / statistics.median(times["engine"]),
        "checks": checks,
        "times": times,
        "cpu_seconds": cpu,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))

    print()
    print(
        f"{len(prompts)} pairs, {n_tokens} tokens ({n_tokens / len(prompts):.0f}/pair); model {model} ({dtype}); "
        f"{mode}; vLLM {vllm.__version__}, torch {torch.__version__}; {info['cpus']} CPUs ({info['cpu']}); "
        f"load avg {info['loadavg'][0]:.2f} -> {info['loadavg_after'][0]:.2f}; "
        f"medians of {args.reps} interleaved rounds after 1 warm-up; {info['date_utc']} UTC"
    )
    print()
    print(
        markdown_table(
            rows,
            [
                ("label", "path", ""),
                ("median_s", "median s", ".3f"),
                ("pairs_per_s", "pairs/s", ",.0f"),
                ("tokens_per_s", "tokens/s", ",.0f"),
                ("vs_bare", "throughput vs bare", ".3f"),
                ("cpu_main_s", "CPU s (this process)", ".2f"),
                ("cpu_engine_s", "CPU s (engine procs)", ".2f"),
            ],
        )
    )
    print()
    verdict = "OK (within 10 %)" if ratio >= 0.9 else "MORE than 10 % below bare"
    print(
        f"engine path / bare LLM.classify throughput: {ratio:.3f} (median of per-round ratios; "
        f"ratio of medians {result['engine_over_bare_of_medians']:.3f}) -> {verdict}"
    )
    print("checks: " + ", ".join(f"{k} = {v:.2e}" for k, v in checks.items()))
    reranker.close()


if __name__ == "__main__":
    main()
