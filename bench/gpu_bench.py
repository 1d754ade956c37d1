"""GPU benchmark for one lent H100: Qwen3-Reranker 0.6B and 4B shapes with random bf16 weights.

On the GPU machine, from the repository root (see bench/README.md for staging the vLLM bundle):

    eval "$(bash .gpu/remote-setup.sh)"; /opt/torch/.venv/bin/python3 bench/gpu_bench.py --tok .gpu/tok.tar.xz

For each model it builds a random-weight checkpoint with the real config (cached in --work), builds
prompts of ~340 tokens with rerankq's PromptBuilder, and measures, each config in its own vLLM engine:

Every config pins VLLM_ENABLE_V1_MULTIPROCESSING (1 = engine core in its own process, vLLM's default)
except ``tuned, in-process`` (0: what VllmEngine now defaults to).

* ``tuned``        engine_kwargs(max_num_batched_tokens=65536) + async_scheduling=True, prefix caching off:
                   rerankq engine path (VllmEngine.score_prompts) vs bare LLM.classify on the same LLM,
                   interleaved; score drift when the same pairs are scored again in shuffled order
* ``tuned+prefix`` the same with enable_prefix_caching=True (prefix cache reset before every pass)
* ``default``      engine_kwargs(Settings()) without GPU defaults = vLLM's own H100 defaults (16384 batched
                   tokens, no async scheduling for pooling models), 0.6B only
* ``hf``           the transformers engine, 0.6B only, and its largest score difference to vLLM
* ``tuned, in-process``  ``tuned`` with VLLM_ENABLE_V1_MULTIPROCESSING=0 (VllmEngine's default), 0.6B only

Configs run in priority order and are skipped when --budget seconds would be exceeded. Results go to
$OUT (gpu_results.json, gpu_table.md); the table is printed last. ``--smoke`` runs the same code on
CPU with a tiny model, to debug the script without a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _worker_package_without_celery() -> None:
    """The GPU machine has no celery, and worker/__init__.py once imported the Celery app (it is lazy
    now). The engines and the prompt builder need none of it: register the package without its __init__."""
    try:
        import celery  # noqa: F401
    except ImportError:
        import types

        pkg = types.ModuleType("worker")
        pkg.__path__ = [str(REPO / "worker")]
        sys.modules.setdefault("worker", pkg)


_worker_package_without_celery()

from bench.common import markdown_table, paired_ratio, timed  # noqa: E402

T0 = time.monotonic()
H100_BF16_DENSE_FLOPS = 989e12  # H100 SXM dense BF16 tensor-core peak

QWEN3_COMMON = dict(
    vocab_size=151669,
    head_dim=128,
    num_key_value_heads=8,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    attention_bias=False,
    hidden_act="silu",
    bos_token_id=151643,
    eos_token_id=151645,
    use_sliding_window=False,
    sliding_window=None,
)
MODELS = {
    "0.6b": dict(
        QWEN3_COMMON, num_hidden_layers=28, hidden_size=1024, intermediate_size=3072, num_attention_heads=16,
        max_window_layers=28,
    ),
    "4b": dict(
        QWEN3_COMMON, num_hidden_layers=36, hidden_size=2560, intermediate_size=9728, num_attention_heads=32,
        max_window_layers=36,
    ),
    # Qwen3-Reranker-8B: 36 layers, hidden 4096, MLP 12288, 32 heads, 8 KV heads, untied embeddings.
    "8b": dict(
        QWEN3_COMMON, num_hidden_layers=36, hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
        max_window_layers=36, tie_word_embeddings=False,
    ),
}  # fmt: skip
SMOKE_MODEL = dict(
    QWEN3_COMMON, num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
    num_key_value_heads=1, head_dim=32,
)  # fmt: skip


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


# --- checkpoints -----------------------------------------------------------------------------------
def param_counts(cfg: dict) -> dict[str, int]:
    """Parameters of the transformer (the FLOP count per token is 2x this) and of the embedding."""
    h, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    attn = h * q + 2 * h * kv + q * h + 2 * cfg["head_dim"]  # q,k,v,o + q_norm,k_norm
    mlp = 3 * h * cfg["intermediate_size"]
    non_embedding = L * (attn + mlp + 2 * h) + h
    embedding = cfg["vocab_size"] * h
    return {"non_embedding": non_embedding, "embedding": embedding, "total": non_embedding + embedding}


def build_checkpoint(name: str, cfg: dict, directory: Path, tok: Path, dtype: str, device: str) -> float:
    """Random weights with the real config (cached by config); tokenizer files copied from ``tok``."""
    marker = directory / "rerankq-bench.json"
    want = json.dumps({"config": cfg, "dtype": dtype}, sort_keys=True)
    start = time.monotonic()
    if not (marker.exists() and marker.read_text() == want):
        import torch
        from transformers import Qwen3Config, Qwen3ForCausalLM

        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        config = Qwen3Config(**cfg, architectures=["Qwen3ForCausalLM"])
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen3ForCausalLM._from_config(config, dtype=getattr(torch, dtype)).eval()
        model.save_pretrained(str(directory), safe_serialization=True)
        n = sum(p.numel() for p in model.parameters())
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        marker.write_text(want)
        log(f"{name}: wrote random {dtype} checkpoint ({n / 1e9:.3f} B params) to {directory}")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (tok / f).exists() and not (directory / f).exists():
            shutil.copy(tok / f, directory / f)
    return time.monotonic() - start


# --- measuring ----------------------------------------------------------------------------------------
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


def max_drift(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def llm_kwargs(path: str, args: argparse.Namespace, settings_update: dict, extra: dict):
    """rerankq's engine_kwargs for Settings(**settings_update), plus LLM kwargs Settings has no field for."""
    from worker.engines.vllm_engine import engine_kwargs
    from rerankq.settings import Settings

    settings = Settings(model=path, enforce_eager=args.smoke, **settings_update)
    kwargs = engine_kwargs(settings, path, args.dtype)  # without GPU_DEFAULTS: every knob is explicit here
    kwargs.update(extra)
    return settings, kwargs


def warm_compile_cache(configs: list[tuple[str, str, dict, dict]], paths: dict, args, out: Path) -> None:
    """Start each engine config once: vLLM caches its torch.compile output (~/.cache/vllm), so the
    measuring run's engines start warm. The cold start times are worth knowing too."""
    from vllm import LLM

    from worker.engines.vllm_engine import VllmEngine

    starts = {}
    for name, label, settings_update, extra in configs:
        if elapsed() + args.first_start > args.budget:
            log(f"no time left to warm {name} {label}")
            break
        _, kwargs = llm_kwargs(paths[name], args, settings_update, extra)
        wait_for_gpu_memory()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # as the measured configs (in-process shares the cache)
        seconds, llm = timed(lambda: LLM(**kwargs))
        starts[f"{name} {label}"] = seconds
        log(f"cold start {name} {label}: {seconds:.1f} s")
        engine = VllmEngine.__new__(VllmEngine)
        engine.llm = llm
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
        from worker.engines.vllm_engine import VllmEngine

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
        engine = VllmEngine.__new__(VllmEngine)  # the worker's engine class around this LLM
        engine.llm = llm
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
            del engine, llm
            gc.collect()
            if (env or {}).get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":  # in-process: GPU memory freed here
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def run_hf(self, model: str, path: str, prompts: list[list[int]], builder, reference: list[float] | None):
        import torch

        from worker.engines.hf_engine import HfEngine
        from rerankq.settings import Settings

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
            del hf
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="0.6b,4b")
    parser.add_argument(
        "--tok", default=str(REPO / ".gpu" / "tok.tar.xz"), help="folder with tokenizer.json, or a .tar.xz of it"
    )
    parser.add_argument("--work", default="/tmp/rerankq-bench", help="checkpoints are cached here")
    parser.add_argument("--pairs", default="0.6b=4096,4b=2048", help="pairs per model")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=510.0, help="seconds; later configs are skipped")
    parser.add_argument("--hard-stop", type=float, default=575.0, help="seconds: print what there is and exit")
    parser.add_argument("--first-start", type=float, default=150.0, help="assumed seconds of a model's first start")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prep-only", action="store_true", help="only build the checkpoints")
    parser.add_argument(
        "--warm", action="store_true", help="with --prep-only: start each engine config once (fills the compile cache)"
    )
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CPU debugging: tiny model, few pairs, eager")
    args = parser.parse_args()

    out = Path(os.environ.get("OUT") or Path(args.work) / "out")
    out.mkdir(parents=True, exist_ok=True)
    tok = Path(args.tok)
    if tok.is_file():  # tokenizer.json + tokenizer_config.json packed as .tar.xz (1.4 MB instead of 11)
        import tarfile

        unpacked = Path(args.work) / "tok"
        unpacked.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tok) as archive:
            archive.extractall(unpacked, filter="data")
        tok = unpacked
    models = {m: MODELS[m] for m in args.models.split(",")}
    n_pairs = {k: int(v) for k, v in (item.split("=") for item in args.pairs.split(","))}
    if args.smoke:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        models = {m: SMOKE_MODEL for m in models}
        args.dtype = "float32"

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    meta: dict = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "argv": sys.argv,
        "peak_flops": H100_BF16_DENSE_FLOPS,
    }
    log(f"device {meta['device']}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    paths = {}
    for name, cfg in models.items():
        build_s = build_checkpoint(name, cfg, Path(args.work) / f"qwen3-reranker-{name}-random", tok, args.dtype, device)
        paths[name] = str(Path(args.work) / f"qwen3-reranker-{name}-random")
        meta[f"build_{name}_s"] = build_s
        log(f"{name}: checkpoint ready in {build_s:.1f} s")
    tuned_settings = {"max_num_batched_tokens": 65536}
    tuned_extra = {} if args.smoke else {"async_scheduling": True}
    if args.prep_only:
        if args.warm:
            configs = [(m, "tuned", tuned_settings, tuned_extra) for m in models]
            if "0.6b" in models:
                configs.append(("0.6b", "default", {}, {}))
            warm_compile_cache(configs, paths, args, out)
        return

    import transformers
    import vllm

    meta.update(vllm=vllm.__version__, transformers=transformers.__version__)
    from bench.pairs import make_pairs
    from rerankq.prompt import PromptBuilder

    bench = Bench(args, out)

    def hard_stop() -> None:  # a command past its limit loses its output: print what there is, then exit
        bench.skipped.append(f"HARD STOP at {elapsed():.0f} s")
        bench.save(meta)
        print("\n" + render(bench, meta, models, out), flush=True)
        import multiprocessing

        children = multiprocessing.active_children()  # the engine core: it must not keep the GPU
        for child in children:
            child.terminate()
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
        os._exit(3)

    import threading

    timer = threading.Timer(max(1.0, args.hard_stop - elapsed()), hard_stop)
    timer.daemon = True
    timer.start()
    first_start = args.first_start
    # The engine core's process is pinned for every config, whatever VllmEngine's default is:
    # mp = vLLM's default (own process; what these figures were measured with), inproc = in this process.
    mp = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    inproc = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    # (model, label, settings update, extra LLM kwargs, env, time bare too?, passes to estimate), by priority
    plan: list[tuple] = []
    for name in models:
        plan.append((name, "tuned", tuned_settings, tuned_extra, mp, True, 2 * args.reps + 1.5))
        plan.append((name, "tuned+prefix", {**tuned_settings, "enable_prefix_caching": True}, tuned_extra, mp,
                     False, args.reps + 1.5))  # fmt: skip
    if "0.6b" in models:
        plan.append(("0.6b", "default", {}, {}, mp, False, args.reps + 1.5))
        if not args.no_hf:
            plan.append(("0.6b", "hf", None, None, None, False, 3.0))
        plan.append(("0.6b", "tuned, in-process", tuned_settings, tuned_extra, inproc, False, args.reps + 1.5))

    prompts_by_model: dict[str, list[list[int]]] = {}
    builders: dict[str, PromptBuilder] = {}
    reference: dict[str, list[float]] = {}
    for name, label, settings_update, extra, env, bare, passes in plan:
        if name not in prompts_by_model:
            builders[name] = PromptBuilder.from_model(paths[name], 8192)
            pairs = make_pairs(
                n_pairs.get(name, 2048) if not args.smoke else 64,
                seed=0,
                docs_per_query=64,
                query_words=(4, 16),
                doc_words=(150, 240),
            )
            build_s, built = timed(lambda: builders[name].build(pairs))
            prompts_by_model[name] = [p.token_ids for p in built]  # type: ignore[misc]
            n_tok = sum(map(len, prompts_by_model[name]))
            meta[f"tokenize_{name}_s"] = bench.tokenize_s[name] = build_s
            log(f"{name}: {len(pairs)} pairs, {n_tok} tokens ({n_tok / len(pairs):.0f}/pair), PromptBuilder.build {build_s:.2f} s")
        prompts = prompts_by_model[name]
        cfg = models[name]
        counts = param_counts(cfg)
        meta[f"params_{name}"] = counts
        attn = sum(2 * cfg["num_hidden_layers"] * cfg["num_attention_heads"] * cfg["head_dim"] * len(p) ** 2 for p in prompts)
        if label == "hf":
            if elapsed() + 40 + 4 * bench.pass_estimate.get(name, 5.0) > args.budget:
                bench.skipped.append(f"{name} hf (budget)")
                continue
        elif not bench.fits(f"{name} {label}", name, passes, first_start):
            continue
        try:
            if label == "hf":
                bench.run_hf(name, paths[name], prompts, builders[name], reference.get(name))
            else:
                scores = bench.run_vllm(
                    label, name, paths[name], prompts, settings_update, extra, bare, args.reps,
                    2 * counts["non_embedding"], attn, env,
                )  # fmt: skip
                if label == "tuned" and scores is not None:
                    reference[name] = scores
        except Exception as exc:  # keep going: one failed config must not lose the others
            traceback.print_exc()
            bench.skipped.append(f"{name} {label} FAILED: {exc!r}")
        bench.save(meta)
        render(bench, meta, models, out)

    meta["total_s"] = elapsed()
    bench.save(meta)
    print("\n" + render(bench, meta, models, out), flush=True)


def render(bench: Bench, meta: dict, models: dict, out: Path) -> str:
    """The summary table (also written to $OUT/gpu_table.md)."""
    for r in bench.rows:
        r["tok_per_pair"] = r["tokens"] / r["pairs"]
    table = markdown_table(
        bench.rows,
        [
            ("model", "model", ""),
            ("config", "config", ""),
            ("pairs", "pairs", "d"),
            ("tok_per_pair", "tok/pair", ".0f"),
            ("start_s", "engine start s", ".0f"),
            ("pairs_per_s", "pairs/s", ",.0f"),
            ("tokens_per_s", "tokens/s", ",.0f"),
            ("pairs_per_s_with_tokenize", "pairs/s incl. tokenize", ",.0f"),
            ("mfu", "MFU", ".1%"),
            ("mfu_attn", "MFU+attn", ".1%"),
            ("engine_vs_bare", "engine/bare", ".3f"),
            ("drift_shuffled", "drift shuffled", ".1e"),
            ("drift_repeat", "drift repeat", ".1e"),
            ("drift_vs_vllm", "hf vs vllm", ".1e"),
        ],
    )
    lines = [
        f"{meta['device']}; vLLM {meta.get('vllm')}, torch {meta['torch']} (CUDA {meta['cuda']}), "
        f"transformers {meta.get('transformers')}; {meta['date_utc']} UTC; {elapsed():.0f} s so far",
        "MFU = 2 x non-embedding params x tokens/s / 989 TFLOP/s (H100 dense bf16); params: "
        + ", ".join(f"{m} {meta[f'params_{m}']['non_embedding'] / 1e9:.3f} B" for m in models if f"params_{m}" in meta)
        + "; MFU+attn adds causal attention FLOPs (2 x layers x heads x head_dim x n^2 per pair).",
        "engine/bare = throughput of VllmEngine.score_prompts over bare LLM.classify, median of interleaved rounds.",
        "drift = max |score| difference for the same pairs: shuffled order vs first pass; repeat = same order again.",
        "pairs/s incl. tokenize: PromptBuilder.build (run before, not overlapped, as Reranker.score does) + engine; "
        + ", ".join(f"build {m} {meta[f'tokenize_{m}_s']:.2f} s" for m in models if f"tokenize_{m}_s" in meta)
        + ".",
        "",
        table,
    ]
    if bench.skipped:
        lines += ["", "skipped/failed: " + "; ".join(bench.skipped)]
    text = "\n".join(lines)
    (out / "gpu_table.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
