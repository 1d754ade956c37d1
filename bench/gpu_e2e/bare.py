"""Bare vLLM LLM.classify over the manifest's pairs, with exactly the worker's engine arguments.

Settings() is read from the same RERANKQ_* environment as the worker; prompts are built by the
family's builder (rerankq/families, as the worker does); the LLM gets
engine_kwargs(settings, path, dtype, on_gpu=torch.cuda.is_available()) as VllmEngine passes them, and
the same vLLM environment (set_vllm_env: on a GPU the engine core in its own process, batch invariance).
Pass 1 is the first classify after the engine starts (as the worker's first chunk is); pass 2, if
time allows, runs the same prompts again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

T0 = time.monotonic()
LABEL = ["bare"]  # --label: "peer" when e2e.py runs it as a user's own script (batch invariance off)


def log(msg: str) -> None:
    print(f"[{LABEL[0]} {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds from now: no 2nd pass past it")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--shuffle-pass", action="store_true", help="one more pass in a shuffled order (scores compared un-shuffled)")
    ap.add_argument("--stability", type=int, default=0, metavar="PAIRS",
                    help="after the passes: the first PAIRS pairs again one at a time (reverse order) and in batches "
                         "of 7, each compared bitwise with pass 1 (batch size, order, prefix cache hits)")  # fmt: skip
    ap.add_argument("--label", default="bare", help="log prefix (e2e.py: bare | peer)")
    args = ap.parse_args()
    LABEL[0] = args.label

    import pyarrow.parquet as pq  # noqa: E402

    from rerankq.families import builder_for, family_of, max_length_for  # noqa: E402
    from rerankq.model_files import resolve_dtype, resolve_model  # noqa: E402
    from rerankq.prompt import Pair  # noqa: E402
    from rerankq.settings import Settings  # noqa: E402

    settings = Settings()
    if not args.smoke:  # the worker's vLLM environment (engine process, batch-invariant mode), before vllm is imported
        from worker.engines.vllm_engine import on_gpu, set_vllm_env

        set_vllm_env(settings, on_gpu())
    model_path = resolve_model(settings.model)
    # capped at the model's positions (512 for BERT), as the worker's load_reranker does
    settings = settings.model_copy(update={"max_length": max_length_for(model_path, settings.max_length)})
    builder = builder_for(model_path, settings.max_length)  # the checkpoint's family (Qwen3-Reranker, cross-encoders)
    table = pq.read_table(args.manifest, columns=["query", "document"]).to_pydict()
    pairs = [Pair(q, d, None) for q, d in zip(table["query"], table["document"])]
    t = time.monotonic()
    built = builder.build(pairs)
    tokenize_s = time.monotonic() - t
    bad = [i for i, p in enumerate(built) if p.token_ids is None]
    if bad:
        raise SystemExit(f"{len(bad)} pairs could not be built, e.g. {built[bad[0]].error}")
    prompts = [p.token_ids for p in built]
    # BERT's token types: where each prompt's document starts, keyed by the prompt's list (shuffles keep the lists)
    type_start = {id(ids): p.token_type_start for ids, p in zip(prompts, built)} if builder.token_types else None
    lengths = [len(p) for p in prompts]
    log(f"{len(prompts)} prompts, {sum(lengths)} tokens ({sum(lengths) / len(prompts):.1f}/pair, {min(lengths)}-{max(lengths)}), "
        f"build {tokenize_s:.2f} s, truncated {sum(p.truncated for p in built)}")  # fmt: skip

    prompts_in_order = prompts
    result: dict = {"pairs": len(prompts), "tokens": sum(lengths), "min_tokens": min(lengths), "max_tokens": max(lengths),
                    "tokenize_s": tokenize_s, "passes_s": []}  # fmt: skip
    if args.smoke:
        import fake_engine

        result["versions"] = "smoke: fake engine"
        result["kwargs"] = {"smoke": True}
        start = time.monotonic()
        engine = fake_engine.factory(settings, model_path)
        result["engine_start_s"] = time.monotonic() - start

        def classify_some(some: list[list[int]]) -> list[float]:
            return engine.score_prompts(some)

        def classify() -> list[float]:
            return classify_some(prompts)
    else:
        import torch
        import vllm
        from vllm import LLM

        from worker.engines.vllm_engine import engine_kwargs

        dtype = resolve_dtype(settings.dtype, model_path, "vllm")
        kwargs = engine_kwargs(settings, model_path, dtype, on_gpu=torch.cuda.is_available(), family=family_of(model_path))
        result["kwargs"] = {k: v for k, v in kwargs.items() if k != "hf_overrides"}
        result["versions"] = (
            f"vllm {vllm.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}, "
            f"VLLM_ENABLE_V1_MULTIPROCESSING={os.environ.get('VLLM_ENABLE_V1_MULTIPROCESSING')}, "
            f"VLLM_BATCH_INVARIANT={os.environ.get('VLLM_BATCH_INVARIANT')}"
        )
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            log(f"GPU memory free before LLM(): {free / 2**30:.1f} / {total / 2**30:.1f} GiB")
        log(f"LLM({kwargs})")
        start = time.monotonic()
        llm = LLM(**kwargs)
        result["engine_start_s"] = time.monotonic() - start

        from vllm import PoolingParams

        from rerankq.log_odds import probability

        raw = PoolingParams(task="classify", use_activation=False)

        def params_for(ids: list[int]) -> PoolingParams:
            # as worker/engines/engine_loop.py tells vLLM where a BERT pair's token type turns 1
            own = raw.clone()
            own.extra_kwargs = {**(own.extra_kwargs or {}), "compressed_token_type_ids": int(type_start[id(ids)])}
            return own

        def classify_some(some: list[list[int]]) -> list[float]:
            # The worker's formula: the head's raw log-odds, then sigmoid in float64 (rerankq/log_odds.py), so
            # worker and bare compare bit for bit; vLLM's own float32 sigmoid differs by ~1e-8.
            params = [params_for(ids) for ids in some] if type_start else raw
            outputs = llm.classify([{"prompt_token_ids": ids} for ids in some], use_tqdm=False, pooling_params=params)
            return [probability(float(o.outputs.probs[0])) for o in outputs]

        def classify() -> list[float]:
            return classify_some(prompts)

    log(f"engine started in {result['engine_start_s']:.1f} s")
    for k in range(args.passes):
        if k and time.monotonic() - T0 + 1.15 * result["passes_s"][0] > args.deadline:
            log(f"pass {k + 1} skipped: {args.deadline - (time.monotonic() - T0):.0f} s left of the deadline")
            break
        t = time.monotonic()
        scores = classify()
        s = time.monotonic() - t
        result["passes_s"].append(s)
        result["scores" if k == 0 else f"scores_pass{k + 1}"] = scores
        log(f"pass {k + 1}: {s:.2f} s, {len(prompts) / s:,.1f} pairs/s, {sum(lengths) / s:,.0f} tokens/s; "
            f"scores {min(scores):.4f}-{max(scores):.4f} mean {statistics.fmean(scores):.4f}")  # fmt: skip
    if args.shuffle_pass and time.monotonic() - T0 + 1.15 * result["passes_s"][0] < args.deadline:
        import random

        order = list(range(len(prompts)))
        random.Random(0).shuffle(order)
        original = prompts
        prompts = [original[i] for i in order]
        t = time.monotonic()
        shuffled = classify()
        result["shuffled_s"] = time.monotonic() - t
        back = [0.0] * len(order)
        for pos, i in enumerate(order):
            back[i] = shuffled[pos]
        result["scores_shuffled"] = back
        result["shuffled_max_diff"] = max(abs(a - b) for a, b in zip(back, result["scores"]))
        log(f"shuffled pass: {result['shuffled_s']:.2f} s, {len(order) / result['shuffled_s']:,.1f} pairs/s, "
            f"max |shuffled - pass 1| {result['shuffled_max_diff']:.3e}")
    if args.stability and time.monotonic() - T0 + 20 < args.deadline:
        result["stability"] = stability(classify_some, prompts_in_order, result["scores"], args.stability)
        log(f"stability: {result['stability']}")
    with open(args.json, "w") as f:
        json.dump(result, f)
    log("done")
    if not args.smoke:
        shutdown = getattr(getattr(llm.llm_engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
    os._exit(0)  # no slow interpreter teardown of the in-process engine


def stability(classify_some, prompts: list[list[int]], reference: list[float], n: int) -> dict:  # noqa: ANN001
    """Pairs scored again in other company than pass 1's: alone (a step of one prompt, its query's prefix
    cached after the first), in reverse order, and in batches of 7; rows differing from pass 1 bitwise."""
    n = min(n, len(prompts))
    alone = [0.0] * n
    for i in reversed(range(n)):
        alone[i] = classify_some([prompts[i]])[0]
    sevens: list[float] = []
    for a in range(0, n, 7):
        sevens += classify_some(prompts[a:a + 7])
    out = {"pairs": n}
    for name, got in (("alone_reversed", alone), ("batches_of_7", sevens)):
        out[f"{name}_differing"] = sum(1 for x, y in zip(got, reference) if x != y)
        out[f"{name}_max_abs"] = max(abs(x - y) for x, y in zip(got, reference))
    return out


# vLLM spawns its engine core (the worker's GPU default): the child re-imports this file, so nothing
# may run at import.
if __name__ == "__main__":
    main()
