"""Numerics modes (rerankq/numerics.py), their place in the scoring context, and the cuBLAS routing of
deterministic mode's linear layers (worker/engines/bi_linear.py), on CPU: the selection logic, the
layer's padding under torch.compile, and the patch reaching a spawned child through child_guard."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from rerankq.numerics import CUBLAS_MIN_TOKENS, resolve
from rerankq.score_key import configured, context_for
from rerankq.settings import Settings

V26, V32 = "0.26.0", "0.32.0"


@pytest.mark.parametrize(
    "env, gpu, version, expected",
    [
        ({}, True, V26, ("deterministic", True, True, "cublas")),
        ({}, True, V32, ("deterministic", True, True, "triton")),  # other vLLM: its own kernel
        ({}, False, V32, ("plain", False, False, "")),  # CPU default, as before modes had names
        ({"numerics": "fast"}, True, V26, ("fast", False, True, "")),
        ({"numerics": "fast"}, False, V32, ("fast", False, True, "")),
        ({"numerics": "deterministic"}, False, V32, ("deterministic", True, True, "")),
        ({"numerics": "deterministic", "bi_linear": "triton"}, True, V26, ("deterministic", True, True, "triton")),
        ({"numerics": "deterministic", "enable_prefix_caching": False}, True, V26, ("deterministic", True, False, "cublas")),
        # the older pair of settings keeps its meaning
        ({"batch_invariant": False, "enable_prefix_caching": True}, True, V26, ("fast", False, True, "")),
        ({"batch_invariant": False}, True, V26, ("plain", False, False, "")),
        ({"batch_invariant": True}, False, V32, ("deterministic", True, True, "")),
    ],
)
def test_resolve(env: dict, gpu: bool, version: str, expected: tuple) -> None:
    n = resolve(Settings(**env), gpu, version)
    assert (n.mode, n.batch_invariant, n.prefix_caching, n.linear) == expected


def test_labels_name_the_kernels() -> None:
    assert resolve(Settings(), True, V26).label == f"deterministic prefix linear=cublas-pad{CUBLAS_MIN_TOKENS}"
    assert resolve(Settings(bi_linear="triton"), True, V26).label == "deterministic prefix linear=triton"
    assert resolve(Settings(numerics="fast"), True, V26).label == "fast prefix"


def test_contradictions_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="contradicts"):
        Settings(numerics="fast", batch_invariant=True)
    with pytest.raises(ValidationError, match="contradicts"):
        Settings(numerics="deterministic", batch_invariant=False)
    monkeypatch.setenv("RERANKQ_NUMERICS", "quick")
    with pytest.raises(ValidationError, match="deterministic"):
        Settings()


def test_modes_never_share_a_cache_context(tiny_model: Path) -> None:
    def ctx(**kw):  # noqa: ANN003, ANN202
        return context_for(Settings(model=str(tiny_model), dtype="float32", **kw), tiny_model)

    det, fast, plain = ctx(numerics="deterministic"), ctx(numerics="fast"), ctx()
    assert (det.numerics, fast.numerics, plain.numerics) == ("deterministic prefix", "fast prefix", "plain no-prefix")
    assert len({det.digest, fast.digest, plain.digest}) == 3
    assert ctx(engine="hf").numerics == ""  # engines without modes: the digest they always had
    # what a producer matches on: the settings alone, whatever VLLM_BATCH_INVARIANT this process has
    assert configured(Settings(numerics="fast"))["numerics"] == "fast"
    assert configured(Settings(numerics="fast")) != configured(Settings(numerics="deterministic"))


# --- the cuBLAS layer ---------------------------------------------------------------------------------
LINEAR_026 = '''
def linear_batch_invariant(x, weight, bias=None):
    CALLS.append(x.shape[0])
    import torch.nn.functional as F
    return F.linear(x, weight, bias)


CALLS = []


class UnquantizedLinearMethod:
    def apply(self, layer, x, bias=None):
        return linear_batch_invariant(x, layer.weight, bias)
'''


@pytest.fixture
def fake_vllm_linear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A module shaped like vLLM 0.26's linear.py, imported under bi_linear's watch."""
    from worker.engines import bi_linear

    name = "fake_vllm_linear_026"
    (tmp_path / f"{name}.py").write_text(LINEAR_026)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(bi_linear, "TARGET", name)
    monkeypatch.setattr(bi_linear, "_state", {"min_tokens": None, "original": None, "patched": False})
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def test_import_hook_routes_the_layer_and_pads_small_steps(fake_vllm_linear: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import torch
    import torch.nn.functional as F

    import rerankq.torch_compat  # noqa: F401
    from worker.engines import bi_linear

    bi_linear.install(CUBLAS_MIN_TOKENS)
    module = importlib.import_module(fake_vllm_linear)  # imported after install: patched on import
    rows_run: list[int] = []
    real = bi_linear.padded_rows
    monkeypatch.setattr(bi_linear, "padded_rows", lambda m, t: rows_run.append(real(m, t)) or real(m, t))
    layer = types.SimpleNamespace(weight=torch.randn(bi_linear.MIN_CUBLAS_N, 16))
    head = types.SimpleNamespace(weight=torch.randn(1, 16))  # a score head's one column
    method = module.UnquantizedLinearMethod()
    # traced once with a symbolic number of tokens: the branch on it must still be taken per call
    step = torch.compile(lambda x: method.apply(layer, x), dynamic=True, backend="aot_eager")
    for m in (5, 40, 1, 33):
        x = torch.randn(m, 16)
        assert torch.allclose(step(x), F.linear(x, layer.weight), atol=1e-5)
    assert rows_run == [32, 40, 32, 33]  # small steps padded to 32 rows, large ones as they are
    assert module.CALLS == []  # vLLM's kernel is never called for a wide layer
    x = torch.randn(40, 16)
    assert torch.allclose(method.apply(head, x), F.linear(x, head.weight), atol=1e-5)
    assert module.CALLS == [40]  # a thin layer stays on vLLM's kernel, whatever M


def test_patch_refuses_an_unknown_layout() -> None:
    from worker.engines import bi_linear

    other = types.ModuleType("vllm.model_executor.layers.linear")
    other.UnquantizedLinearMethod = type("UnquantizedLinearMethod", (), {"apply": lambda self, layer, x: x})
    with pytest.raises(RuntimeError, match="not vLLM 0.26's layout"):
        bi_linear.patch(other, CUBLAS_MIN_TOKENS)


def test_children_get_the_patch_through_child_guard(tmp_path: Path) -> None:
    """A spawned child (as vLLM's engine core is) patches the real vLLM module it imports."""
    from rerankq.torch_compat import guard_children
    from worker.engines import bi_linear

    saved = dict(os.environ)
    try:
        guard_children()
        bi_linear.export_to_children(CUBLAS_MIN_TOKENS)
        env = dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert env[bi_linear.ENV] == str(CUBLAS_MIN_TOKENS) and bi_linear.HOOK in env[bi_linear.HOOKS_ENV]
    probe = textwrap.dedent(
        """
        import vllm.model_executor.layers.linear as linear
        from worker.engines import bi_linear
        print(linear.linear_batch_invariant.__module__, bi_linear._state["min_tokens"], bi_linear._state["patched"])
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["worker.engines.bi_linear", "32", "True"]
    bi_linear.export_to_children(None)  # and none when not asked for
    # other hooks (a family's, put there by an engine an earlier test loaded in this process) stay
    assert bi_linear.ENV not in os.environ and bi_linear.HOOK not in os.environ.get(bi_linear.HOOKS_ENV, "")
