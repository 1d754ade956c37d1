"""torchvision's Python parts next to torch+cpu when its only wheel is a CUDA build (issue 29, Qwen3-VL on CPU).

``import torchvision`` fails there with ``operator torchvision::nms does not exist``: its C extension links
libtorch_cuda and does not load, and ``torchvision/_meta_registrations.py`` then registers fake kernels for
ops that were never defined. Those fakes are skipped here, only while torchvision imports; nothing else
changes. Qwen3-VL's image and video processors use torchvision's tensor transforms (pure torch), never its C
ops. torchaudio and torchcodec (CUDA builds too, and unused) are marked absent, as rerankq/torch_compat.py
does. A probe, not part of rerankq: vLLM inspects models in subprocesses, so this must run in every process
(``PYTHONPATH=bench/qwen3_vl_cpu/site``, whose sitecustomize imports it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def install() -> None:
    import torch
    import torch.library as library

    sys.modules.setdefault("torchaudio", None)  # type: ignore[arg-type]
    sys.modules.setdefault("torchcodec", None)  # type: ignore[arg-type]
    if "torchvision" in sys.modules:
        return
    original = library.register_fake

    def tolerant(op: Any, *args: Any, **kwargs: Any) -> Callable:
        if isinstance(op, str) and op.startswith("torchvision::"):
            try:
                torch._C._dispatch_find_schema_or_throw(op, "")
            except RuntimeError:  # the op's C kernel never loaded: no fake for it
                return args[0] if args else (lambda fn: fn)
        return original(op, *args, **kwargs)

    library.register_fake = tolerant
    try:
        import torchvision  # noqa: F401
    finally:
        library.register_fake = original
