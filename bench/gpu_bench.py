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

Checkpoints: gpu_models.py; one configuration measured: gpu_runs.py; the table: gpu_report.py.
Configs run in priority order and are skipped when --budget seconds would be exceeded. Results go to
$OUT (gpu_results.json, gpu_table.md); the table is printed last. ``--smoke`` runs the same code on
CPU with a tiny model, to debug the script without a GPU.
"""

from __future__ import annotations

import argparse
import os
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
import rerankq.torch_compat  # noqa: E402, F401 - a CPU host's mismatched torchvision hidden before transformers loads
from bench.common import timed  # noqa: E402
from bench.gpu_clock import elapsed, log  # noqa: E402
from bench.gpu_models import MODELS, SMOKE_MODEL, build_checkpoint, param_counts  # noqa: E402
from bench.gpu_report import render  # noqa: E402
from bench.gpu_runs import H100_BF16_DENSE_FLOPS, Bench, warm_compile_cache  # noqa: E402


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
            build_s, built = timed(lambda name=name, pairs=pairs: builders[name].build(pairs))
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


if __name__ == "__main__":
    main()
