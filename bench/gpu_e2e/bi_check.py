"""On the GPU: is deterministic mode's cuBLAS linear layer (worker/engines/bi_linear.py) batch invariant,
under exactly the cuBLAS settings vLLM 0.26's batch-invariant mode gives the engine, and how fast is it
against vLLM's Triton kernel? No engine is started (about a minute).

For the linear shapes of Qwen3-Reranker 0.6B/4B/8B (and the 1-row score head): every row of the layer
over X[:M] must equal the same row over X[:65536], for every M from 1 to 80, a spread of larger M and a
shuffled batch; then TFLOP/s at M = 65,536 of the layer and of vLLM's ``matmul_persistent``. Last, the
layer as the engine runs it: the ``rerankq::bi_linear`` op under torch.compile (dynamic M) and in a CUDA
graph, against eager. Writes $OUT/bi_check.json; prints one line per shape and a verdict.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# vLLM 0.26's enable_batch_invariant_mode + override_envs_for_invariance on Hopper, before torch loads cuBLAS
os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
os.environ["CUBLASLT_WORKSPACE_SIZE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rerankq.numerics import CUBLAS_MIN_TOKENS  # noqa: E402
from worker.engines import bi_linear  # noqa: E402

torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = (False, False)
torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = (False, False)
torch.backends.cuda.preferred_blas_library(backend="cublaslt")

SHAPES = {  # name: (K, N)
    "0.6b.qkv": (1024, 4096), "0.6b.o": (2048, 1024), "0.6b.gate_up": (1024, 6144), "0.6b.down": (3072, 1024),
    "0.6b.score": (1024, 1),
    "4b.qkv": (2560, 6144), "4b.o": (4096, 2560), "4b.gate_up": (2560, 19456), "4b.down": (9728, 2560),
    "4b.score": (2560, 1),
    "8b.qkv": (4096, 6144), "8b.o": (4096, 4096), "8b.gate_up": (4096, 24576), "8b.down": (12288, 4096),
}  # fmt: skip
BIG = 65536
MS = [*range(1, 81), 100, 127, 255, 256, 333, 511, 512, 777, 1000, 1024, 2047, 3333, 4096, 8191, 12345, 16384,
      21845, 32768, 40000, 50000, 65535]  # fmt: skip


def layer(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The layer as bi_linear routes it: cuBLAS (padded), or vLLM's kernel for thin layers."""
    if w.shape[0] < bi_linear.MIN_CUBLAS_N:
        from vllm.model_executor.layers.batch_invariant import linear_batch_invariant

        return linear_batch_invariant(x, w)
    return bi_linear.cublas_linear(x, w, None, CUBLAS_MIN_TOKENS)


def tflops(fn, m: int, k: int, n: int) -> float:  # noqa: ANN001
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    return 2 * m * k * n / ((time.perf_counter() - t) / 10) / 1e12


def main() -> int:
    from vllm.model_executor.layers.batch_invariant import matmul_persistent

    out: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "min_tokens": CUBLAS_MIN_TOKENS, "shapes": {}}
    torch.manual_seed(0)
    ok = True
    for name, (k, n) in SHAPES.items():
        w = (torch.randn(n, k, device="cuda") * 0.02).to(torch.bfloat16)
        x = torch.randn(BIG, k, device="cuda").to(torch.bfloat16)
        ref = layer(x, w)
        bad = {m: int((layer(x[:m], w) != ref[:m]).any(dim=1).sum()) for m in MS}
        bad = {m: d for m, d in bad.items() if d}
        perm = torch.randperm(BIG, device="cuda")[:4096]
        shuffled = int((layer(x[perm], w) != ref[perm]).any(dim=1).sum())
        offset = {m: int((layer(x[1000:1000 + m], w) != ref[1000:1000 + m]).any(dim=1).sum()) for m in (1, 5, 31, 333)}
        offset = {m: d for m, d in offset.items() if d}
        row = {"K": k, "N": n, "rows_differing_by_M": bad, "shuffled_rows_differing": shuffled, "offset_rows_differing": offset}
        if n > 1:
            row["tflops_cublas"] = round(tflops(lambda x=x, w=w: layer(x, w), BIG, k, n), 1)
            wt = w.t()
            row["tflops_vllm_triton"] = round(tflops(lambda x=x, wt=wt: matmul_persistent(x, wt), BIG, k, n), 1)
            tri = matmul_persistent(x[:4096], wt)
            row["max_abs_cublas_vs_triton"] = float((tri.float() - ref[:4096].float()).abs().max())
        ok &= not bad and not shuffled and not offset
        out["shapes"][name] = row
        print(name, json.dumps(row), flush=True)
        del w, x, ref
    try:
        out["op"] = op_check()
        ok &= not out["op"]["compiled_rows_differing"] and not out["op"]["cuda_graph_rows_differing"]
    except Exception as exc:  # the per-shape results above still count; say what broke
        out["op"] = {"error": repr(exc)[:2000]}
        ok = False
    out["invariant"] = ok
    print("op", json.dumps(out["op"]))
    print(f"VERDICT: cuBLAS layer (pad to {CUBLAS_MIN_TOKENS}) batch invariant on every shape and M tried: {ok}")
    (Path(os.environ.get("OUT", ".")) / "bi_check.json").write_text(json.dumps(out, indent=1))
    return 0 if ok else 1


def op_check() -> dict:
    """The op as the engine runs it: compiled with a symbolic M, and captured in a CUDA graph."""
    mod = type(sys)("fake_linear")
    mod.linear_batch_invariant = lambda x, w, b=None: F.linear(x, w, b)
    code = "def apply(self, layer, x, bias=None):\n    return linear_batch_invariant(x, layer.weight, bias)\n"
    exec(compile(code, "fake_linear", "exec"), mod.__dict__)  # noqa: S102
    mod.UnquantizedLinearMethod = type("UnquantizedLinearMethod", (), {"apply": mod.apply})
    sys.modules["fake_linear"] = mod
    bi_linear.patch(mod, CUBLAS_MIN_TOKENS)
    w = (torch.randn(1024, 3072, device="cuda") * 0.02).to(torch.bfloat16)
    x = torch.randn(4096, 3072, device="cuda").to(torch.bfloat16)
    compiled = torch.compile(lambda t: mod.linear_batch_invariant(t, w), dynamic=True)
    compiled_bad = {m: int((compiled(x[:m]) != layer(x[:m], w)).any(dim=1).sum()) for m in (3, 17, 40, 4096, 5)}
    static = x[:5].clone()
    compiled(static)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = compiled(static)
    static.copy_(x[100:105])
    graph.replay()
    graph_bad = int((captured != layer(x[:4096], w)[100:105]).any(dim=1).sum())
    return {"compiled_rows_differing": {m: d for m, d in compiled_bad.items() if d}, "cuda_graph_rows_differing": graph_bad}


if __name__ == "__main__":
    sys.exit(main())
