"""Which numerics a vLLM engine scores with, resolved from settings: one answer for the worker (engine
arguments, vLLM environment) and for the scoring context (the score cache never mixes two answers).

Modes (``RERANKQ_NUMERICS``):

- ``deterministic``: vLLM's batch-invariant kernels plus prefix caching. A pair's score is bitwise the
  same whatever else is in its batch, its order, chunking, cache state or process. On vLLM 0.26 with a
  GPU the linear layers run on cuBLAS (``RERANKQ_BI_LINEAR=cublas``, worker/engines/bi_linear.py)
  instead of vLLM's Triton kernel: the same guarantee, at cuBLAS speed.
- ``fast``: prefix caching without batch invariance, what a user's own vLLM script runs. Scores move
  in the last digits with batch composition (bench/RESULTS.md gives the drift).
- unset: ``deterministic`` on a GPU; on CPU both kernels families are off (``plain``).

``RERANKQ_BATCH_INVARIANT`` and ``RERANKQ_ENABLE_PREFIX_CACHING`` still set each half on its own and win
over the mode's defaults; a contradiction with an explicit mode is refused by Settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from rerankq.settings import Settings

# vLLM releases whose batch-invariant linear layer rerankq knows how to route to cuBLAS.
CUBLAS_LINEAR_VLLM = ("0.26.",)
# Steps of fewer tokens than this are padded up to it before cuBLAS: cuBLAS picked other kernels
# (other rows) below 8 tokens on an H200 (../shared/gpu/cublas-bi); 32 leaves a margin.
CUBLAS_MIN_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Numerics:
    """A resolved choice: the vLLM knobs and the label the scoring context records."""

    mode: str  # deterministic | fast | plain
    batch_invariant: bool
    prefix_caching: bool
    linear: str  # batch-invariant linear layers: "cublas" | "triton"; "" when not batch invariant or no GPU

    @property
    def label(self) -> str:
        parts = [self.mode, "prefix" if self.prefix_caching else "no-prefix"]
        if self.linear == "cublas":
            parts.append(f"linear=cublas-pad{CUBLAS_MIN_TOKENS}")
        elif self.linear:
            parts.append(f"linear={self.linear}")
        return " ".join(parts)


def vllm_version() -> str | None:
    """The installed vLLM's version from its metadata (vLLM is not imported)."""
    try:
        return metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return None


def cublas_linear_supported(version: str | None) -> bool:
    return bool(version) and version.startswith(CUBLAS_LINEAR_VLLM)  # type: ignore[union-attr]


def resolve(settings: Settings, gpu: bool, version: str | None = None) -> Numerics:
    """The numerics an engine with these settings runs, on a GPU or not, with this vLLM version."""
    if settings.batch_invariant is not None:
        invariant = settings.batch_invariant
    elif settings.numerics is not None:
        invariant = settings.numerics == "deterministic"
    else:
        invariant = gpu
    if settings.enable_prefix_caching is not None:
        prefix = settings.enable_prefix_caching
    else:
        prefix = True if settings.numerics is not None else invariant
    mode = "deterministic" if invariant else ("fast" if prefix else "plain")
    linear = ""
    if invariant and gpu:
        linear = "cublas" if settings.bi_linear == "cublas" and cublas_linear_supported(version) else "triton"
    return Numerics(mode, invariant, prefix, linear)


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def engine_numerics(settings: Settings) -> Numerics:
    """What a vLLM engine started here with these settings runs (probes the GPU and vLLM's version)."""
    return resolve(settings, on_gpu(), vllm_version())
