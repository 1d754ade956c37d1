"""Deterministic at cuBLAS speed: vLLM 0.26's batch-invariant linear layers on cuBLAS.

What it replaces: with ``VLLM_BATCH_INVARIANT=1``, vLLM 0.26's ``UnquantizedLinearMethod.apply``
(vllm/model_executor/layers/linear.py) calls ``linear_batch_invariant`` (imported by name from
vllm/model_executor/layers/batch_invariant.py), which runs every linear layer through vLLM's Triton
``matmul_kernel_persistent`` with one fixed tile configuration: on an H200 522-557 TFLOP/s on Qwen3-4B's
shapes against 696-800 for cuBLAS, all of deterministic mode's 21 % deficit (issue 20).

Why cuBLAS is batch invariant here: on Hopper, vLLM's batch-invariant mode already runs every other
matmul on cuBLASLt with split-K ruled out (``CUBLAS_WORKSPACE_CONFIG=:16:8``, ``CUBLASLT_WORKSPACE_SIZE``,
no reduced-precision reductions). Under those settings each output row of ``F.linear`` was bitwise the
same for every number of rows M >= 8 tried up to 65,536 and for shuffled rows, on the twelve linear
shapes of Qwen3-Reranker 0.6B/4B/8B (H200, torch 2.11: ../shared/gpu/cublas-bi). Below 8 rows cuBLAS
chose other kernels. So a step of fewer than ``CUBLAS_MIN_TOKENS`` (32) tokens is padded with zero rows
up to 32 and cut back: every row always comes from the kernels of M >= 32, and one kernel family
computes every row. (Falling back to the Triton kernel for small steps would not be invariant: a pair
whose tokens land in a small step would get Triton's rows, in a large step cuBLAS's.) Thin layers
(fewer than ``MIN_CUBLAS_N`` outputs: the score head's one column) stay on vLLM's kernel whatever M:
for them cuBLAS picked its kernel by M (rows differed from M = 255 on, bench/RESULTS.md); the choice
depends on the weight's shape only, never on the step.

The branch on M must be taken at run time, not when torch.compile traces the model (vLLM traces once,
with a symbolic M, and drops the guards), so the layer is one opaque custom op, ``rerankq::bi_linear``.

How it gets there: the engine core may run in a spawned process (RERANKQ_ENGINE_PROCESS). The worker
sets ``RERANKQ_BI_LINEAR`` and names ``install_from_env`` in ``RERANKQ_CHILD_HOOKS``, which
rerankq/child_guard/sitecustomize.py runs in every child; ``install`` adds an import hook that patches
``vllm.model_executor.layers.linear`` as soon as it is imported, in whichever process that is. The
patch checks what it replaces and raises if vLLM is not shaped as expected: the worker's scoring
context already says ``linear=cublas-pad32``, so silently running Triton would mislabel cached scores.
Which vLLM versions get it is decided in rerankq/numerics.py (others run vLLM's own kernel, logged).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable
from typing import Any

from rerankq.logs import get_logger

log = get_logger("rerankq.bi_linear")

ENV = "RERANKQ_BI_LINEAR"  # the minimum tokens of a cuBLAS step ("32"); unset = vLLM's own kernels
HOOKS_ENV = "RERANKQ_CHILD_HOOKS"  # "module:function,..." run by child_guard/sitecustomize.py
HOOK = "worker.engines.bi_linear:install_from_env"
TARGET = "vllm.model_executor.layers.linear"
REPLACED = "linear_batch_invariant"
OP = "rerankq::bi_linear"
MIN_CUBLAS_N = 128  # output features under which a layer stays on vLLM's Triton kernel (see above)

_state: dict[str, Any] = {"min_tokens": None, "original": None, "patched": False}


# --- the layer ---------------------------------------------------------------------------------------
def padded_rows(m: int, min_tokens: int) -> int:
    """Rows the GEMM runs with for a step of ``m`` tokens: never fewer than ``min_tokens``."""
    return m if m >= min_tokens else min_tokens


def cublas_linear(x: Any, weight: Any, bias: Any, min_tokens: int) -> Any:
    """``F.linear`` with at least ``min_tokens`` rows (zero rows added, then cut off)."""
    import torch.nn.functional as F

    rows = x.reshape(-1, x.shape[-1])
    m = rows.shape[0]
    n = padded_rows(m, min_tokens)
    if n != m:
        padded = rows.new_zeros((n, rows.shape[1]))
        padded[:m] = rows
        out = F.linear(padded, weight, bias)[:m]
    else:
        out = F.linear(rows, weight, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _register_op() -> Callable[..., Any]:
    """``rerankq::bi_linear`` once per process: opaque to torch.compile, so M is read at run time."""
    import torch

    ns, name = OP.split("::")
    if not hasattr(torch.ops, ns) or not hasattr(getattr(torch.ops, ns), name):
        lib = torch.library.Library(ns, "FRAGMENT")
        lib.define(f"{name}(Tensor x, Tensor weight, Tensor? bias) -> Tensor")

        def impl(x: Any, weight: Any, bias: Any) -> Any:
            return cublas_linear(x, weight, bias, _state["min_tokens"] or 1)

        def fake(x: Any, weight: Any, bias: Any) -> Any:
            return x.new_empty((*x.shape[:-1], weight.shape[0]))

        lib.impl(name, impl, "CompositeExplicitAutograd")
        lib._register_fake(name, fake)
        _state["lib"] = lib  # the registration lives as long as the library object
    op = getattr(getattr(torch.ops, ns), name)

    def linear(x: Any, weight: Any, bias: Any = None) -> Any:
        if weight.shape[0] < MIN_CUBLAS_N:  # decided by the weight's shape: fixed at trace time, as it should be
            return _state["original"](x, weight, bias)
        return op(x, weight, bias)

    return linear


# --- patching vLLM -----------------------------------------------------------------------------------
def patch(module: Any, min_tokens: int) -> None:
    """Point ``module.linear_batch_invariant`` (what ``UnquantizedLinearMethod.apply`` calls) at the op.

    Raises if the module does not look like vLLM 0.26's: the scoring context already says cuBLAS."""
    method = getattr(module, "UnquantizedLinearMethod", None)
    original = getattr(module, REPLACED, None)
    names = getattr(getattr(getattr(method, "apply", None), "__code__", None), "co_names", ())
    if original is None or REPLACED not in names:
        raise RuntimeError(
            f"RERANKQ_BI_LINEAR: {module.__name__} has no {REPLACED} called by UnquantizedLinearMethod.apply "
            "(not vLLM 0.26's layout): set RERANKQ_BI_LINEAR=triton or use vLLM 0.26"
        )
    if _state["patched"]:
        return
    _state.update(min_tokens=min_tokens, original=original)
    setattr(module, REPLACED, _register_op())
    _state["patched"] = True
    log.info("bi_linear_patched", module=module.__name__, replaced=REPLACED, min_tokens=min_tokens, pid=os.getpid())


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs ``patch`` right after ``TARGET`` executes, in whichever process imports it."""

    def __init__(self, min_tokens: int):
        self.min_tokens = min_tokens
        self.spec: importlib.machinery.ModuleSpec | None = None

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET or self.spec is not None:
            return None
        spec = None
        for finder in sys.meta_path:  # whichever finder would load it (PYTHONPATH, site-packages, editable)
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None:
            return None
        self.spec = spec
        self.inner = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.inner.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)  # type: ignore[attr-defined]
        patch(module, self.min_tokens)


def install(min_tokens: int) -> None:
    """Patch vLLM's linear module now if it is loaded, else when it is (this process only)."""
    if TARGET in sys.modules:
        patch(sys.modules[TARGET], min_tokens)
        return
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport(min_tokens))


def install_from_env() -> None:
    """child_guard's hook: install with the worker's ``RERANKQ_BI_LINEAR``, if set."""
    value = os.environ.get(ENV)
    if value:
        install(int(value))


def export_to_children(min_tokens: int | None) -> None:
    """Ask every child of this process (vLLM's engine core) for the same patch, or for none."""
    hooks = [h for h in os.environ.get(HOOKS_ENV, "").split(",") if h and h != HOOK]
    if min_tokens is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = str(min_tokens)
        hooks.append(HOOK)
    if hooks:
        os.environ[HOOKS_ENV] = ",".join(hooks)
    else:
        os.environ.pop(HOOKS_ENV, None)
