"""One engine configuration measured: rerankq's engine path (VllmEngine) against bare LLM.classify on the
same LLM, interleaved, with score drift under shuffling and repetition; the hf engine for reference."""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import time
from pathlib import Path

from bench.common import paired_ratio, timed
from bench.gpu_clock import elapsed, log
from bench.gpu_report import max_drift

H100_BF16_DENSE_FLOPS = 989e12  # H100 SXM dense BF16 tensor-core peak


def engine_around(llm):  # noqa: ANN001, ANN201
    """VllmEngine (its engine loop) around an LLM already started, so that engine and bare share one LLM."""
    from worker.engines.engine_loop import EngineLoop
    from worker.engines.vllm_engine import VllmEngine

    engine = VllmEngine.__new__(VllmEngine)
    engine.loop = EngineLoop(lambda: llm)
    return engine


def wait_for_gpu_memory(fraction: float = 0.92, timeout: float = 60.0) -> None:
    import torch

    if not torch.cuda.is_available():
        return
    deadline = time.monotonic() + timeout
    while True:
        free, total = torch.cuda.mem_get_info()
        if free >= fraction * total or time.monotonic() > deadline:
            log(f"GPU memory free: {free / 2**30:.1f} / {total / 2**30:.1f} GiB")
            return
        time.sleep(1.0)



def llm_kwargs(path: str, args: argparse.Namespace, settings_update: dict, extra: dict):
    """rerankq's engine_kwargs for Settings(**settings_update), plus LLM kwargs Settings has no field for."""
    from rerankq.settings import Settings
    from worker.engines.vllm_engine import engine_kwargs

    settings = Settings(model=path, enforce_eager=args.smoke, **settings_update)
    kwargs = engine_kwargs(settings, path, args.dtype)  # without GPU_DEFAULTS: every knob is explicit here
    kwargs.update(extra)
    return settings, kwargs


def warm_compile_cache(configs: list[tuple[str, str, dict, dict]], paths: dict, args, out: Path) -> None:
    """Start each engine config once: vLLM caches its torch.compile output (~/.cache/vllm), so the
    measuring run's engines start warm. The cold start times are worth knowing too."""
    from vllm import LLM


    starts = {}
    for name, label, settings_update, extra in configs:
        if elapsed() + args.first_start > args.budget:
            log(f"no time left to warm {name} {label}")
            break
        _, kwargs = llm_kwargs(paths[name], args, settings_update, extra)
        wait_for_gpu_memory()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # as the measured configs (in-process shares the cache)
        seconds, llm = timed(lambda kwargs=kwargs: LLM(**kwargs))
        starts[f"{name} {label}"] = seconds
        log(f"cold start {name} {label}: {seconds:.1f} s")
        engine = engine_around(llm)
        engine.close()
        del engine, llm
        gc.collect()
        (out / "cold_starts.json").write_text(json.dumps(starts, indent=2))
    print("\ncold engine starts (empty compile cache): " + ", ".join(f"{k} {v:.0f} s" for k, v in starts.items()))


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path):
        self.args = args
        self.out = out
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.start_estimate: dict[str, float] = {}
        self.pass_estimate: dict[str, float] = {}
        self.tokenize_s: dict[str, float] = {}

    def save(self, meta: dict) -> None:
        (self.out / "gpu_results.json").write_text(
            json.dumps({"meta": meta, "rows": self.rows, "skipped": self.skipped}, indent=2, default=str)
        )

    def fits(self, label: str, model: str, passes: float, first_start: float) -> bool:
        need = self.start_estimate.get(model, first_start) + passes * self.pass_estimate.get(model, 10.0) + 15
        if elapsed() + need > self.args.budget:
            self.skipped.append(f"{label} (needs ~{need:.0f} s, {self.args.budget - elapsed():.0f} s left)")
            log(f"SKIP {label}: needs ~{need:.0f} s, {self.args.budget - elapsed():.0f} s of budget left")
            return False
        return True

    def run_vllm(
        self,
        label: str,
        model: str,
        path: str,
        prompts: list[list[int]],
        settings_update: dict,
        extra_kwargs: dict,
        bare: bool,
        reps: int,
        flops_per_token: float,
        attn_flops: float,
        env: dict[str, str] | None = None,
    ) -> list[float] | None:

        settings, kwargs = llm_kwargs(path, self.args, settings_update, extra_kwargs)
        log(f"{label}: LLM({kwargs})")
        from vllm import LLM

        wait_for_gpu_memory()
        saved_env = {k: os.environ.get(k) for k in env or {}}
        os.environ.update(env or {})
        try:
            start_s, llm = timed(lambda: LLM(**kwargs))
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.start_estimate[model] = start_s * 0.8  # later starts of a model reuse the compile cache
        log(f"{label}: engine started in {start_s:.1f} s")
        engine = engine_around(llm)  # the worker's engine class around this LLM
        prefix = settings.enable_prefix_caching
        results: dict[str, list[float]] = {}

        def engine_pass(ps: list[list[int]] = prompts) -> list[float]:
            if prefix:  # every pass starts cold: no pass reuses the previous pass's cache
                llm.reset_prefix_cache()
            return engine.score_prompts(ps)

        def bare_pass() -> list[float]:
            if prefix:
                llm.reset_prefix_cache()
            outputs = llm.classify([{"prompt_token_ids": ids} for ids in prompts], use_tqdm=False)
            return [float(o.outputs.probs[0]) for o in outputs]

        try:
            warm_s, _ = timed(lambda: engine_pass(prompts[: max(1, len(prompts) // 4)]))
            log(f"{label}: warm-up (1/4 of the pairs) {warm_s:.2f} s")
            variants = {"engine": engine_pass}
            if bare:
                variants["bare"] = bare_pass
            times: dict[str, list[float]] = {k: [] for k in variants}
            names = list(variants)
            for r in range(reps):
                for name in names if r % 2 == 0 else names[::-1]:
                    gc.collect()
                    seconds, res = timed(variants[name])
                    times[name].append(seconds)
                    if name == "engine":
                        results.setdefault("engine", res)
                        results["engine_last"] = res
                    else:
                        results["bare"] = res
                    log(f"{label}: round {r + 1} {name} {seconds:.3f} s ({len(prompts) / seconds:,.0f} pairs/s)")
            self.pass_estimate[model] = statistics.median(times["engine"])
            order = list(range(len(prompts)))
            random.Random(1).shuffle(order)
            shuffled_s, shuffled = timed(lambda: engine_pass([prompts[i] for i in order]))
            log(f"{label}: shuffled pass {shuffled_s:.3f} s")
            unshuffled = [0.0] * len(prompts)
            for k, i in enumerate(order):
                unshuffled[i] = shuffled[k]
            base = results["engine"]
            n_tokens = sum(len(p) for p in prompts)
            med = statistics.median(times["engine"])
            row = {
                "model": model,
                "config": label,
                "kwargs": {k: v for k, v in kwargs.items() if k not in ("model", "hf_overrides")},
                "env": env or {},
                "start_s": start_s,
                "pairs": len(prompts),
                "tokens": n_tokens,
                "times": times,
                "tokenize_s": self.tokenize_s.get(model),
                "shuffled_s": shuffled_s,
                "pairs_per_s": len(prompts) / med,
                "tokens_per_s": n_tokens / med,
                "pairs_per_s_with_tokenize": len(prompts) / (med + self.tokenize_s.get(model, 0.0)),
                "mfu": flops_per_token * n_tokens / med / H100_BF16_DENSE_FLOPS,
                "mfu_attn": (flops_per_token * n_tokens + attn_flops) / med / H100_BF16_DENSE_FLOPS,
                "drift_shuffled": max_drift(base, unshuffled),
                "drift_repeat": max_drift(base, results["engine_last"]),
                "score_mean": statistics.fmean(base),
                "score_min": min(base),
                "score_max": max(base),
            }
            if bare:
                row["bare_pairs_per_s"] = len(prompts) / statistics.median(times["bare"])
                row["engine_vs_bare"] = paired_ratio(times, "engine", "bare")
                row["drift_engine_vs_bare"] = max_drift(base, results["bare"])
            self.rows.append(row)
            log(
                f"{label}: {row['pairs_per_s']:,.0f} pairs/s, {row['tokens_per_s']:,.0f} tokens/s, "
                f"MFU {row['mfu']:.1%}, drift shuffled {row['drift_shuffled']:.2e}, repeat {row['drift_repeat']:.2e}"
                + (f", engine/bare {row['engine_vs_bare']:.3f}" if bare else "")
            )
            return base
        finally:
            engine.close()
            engine = llm = None  # drop the references (not del: the closures above name them)
            gc.collect()
            if (env or {}).get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":  # in-process: GPU memory freed here
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def run_hf(self, model: str, path: str, prompts: list[list[int]], builder, reference: list[float] | None):
        import torch

        from rerankq.settings import Settings
        from worker.engines.hf_engine import HfEngine

        wait_for_gpu_memory()
        start_s, hf = timed(
            lambda: HfEngine(Settings(model=path), path, self.args.dtype, builder.yes_id, builder.no_id)
        )
        try:
            timed(lambda: hf.score_prompts(prompts[: max(1, len(prompts) // 8)]))
            seconds, scores = timed(lambda: hf.score_prompts(prompts))
            n_tokens = sum(len(p) for p in prompts)
            row = {
                "model": model,
                "config": "hf",
                "kwargs": {"dtype": self.args.dtype, "hf_batch_tokens": Settings().hf_batch_tokens},
                "start_s": start_s,
                "pairs": len(prompts),
                "tokens": n_tokens,
                "times": {"engine": [seconds]},
                "pairs_per_s": len(prompts) / seconds,
                "tokens_per_s": n_tokens / seconds,
                "score_mean": statistics.fmean(scores),
            }
            if reference is not None:
                row["drift_vs_vllm"] = max_drift(reference, scores)
            self.rows.append(row)
            log(f"hf: {row['pairs_per_s']:,.0f} pairs/s, max |hf - vllm| {row.get('drift_vs_vllm', float('nan')):.2e}")
        finally:
            hf.close()
            hf = None  # drop the reference (not del: the lambdas above name it)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
