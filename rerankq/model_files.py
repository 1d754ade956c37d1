"""Where a model's files are and which dtype it runs in."""

from __future__ import annotations

import json
from pathlib import Path

_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def local_model_path(name: str) -> str | None:
    """The model's directory if its weights are on this machine (a folder, or the Hugging Face cache)."""
    if Path(name).is_dir():
        return str(Path(name))
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, allow_patterns=_PATTERNS, local_files_only=True)
    except Exception:
        return None


def resolve_model(name: str) -> str:
    """A local directory for ``name``, downloading from the hub when it is not cached."""
    local = local_model_path(name)
    if local:
        return local
    from huggingface_hub import snapshot_download

    return snapshot_download(name, allow_patterns=_PATTERNS)


def resolve_dtype(setting: str, model_path: str, engine: str) -> str:
    """``auto``: float32 on CPU (exact, and what CPUs run well), else the checkpoint's 16-bit dtype.

    vLLM's own "auto" turns a float32 pooling checkpoint into float16, so rerankq always passes one.
    """
    if setting != "auto":
        return setting
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        return "float32"
    config = json.loads((Path(model_path) / "config.json").read_text())
    declared = str(config.get("dtype") or config.get("torch_dtype") or "")
    return declared if declared in ("bfloat16", "float16") else "bfloat16"
