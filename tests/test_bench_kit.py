"""The GPU kit's scripts that run unattended on a lent machine, run here on the CPU first: a script that
breaks against today's engine API (as loop_probe did once) costs a whole device call to find out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "bench" / "gpu_e2e"


def _kit_module(name: str):  # noqa: ANN202
    sys.path.insert(0, str(KIT))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(KIT))


def test_fp8ckpt_quantizes_only_the_decoder_linears_in_128_blocks(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=128, vocab_size=512, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    Qwen3ForCausalLM._from_config(config, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    info = _kit_module("fp8ckpt").convert(tmp_path / "bf16", tmp_path / "fp8")

    assert info["quantized_layers"] == 2 * 7  # q, k, v, o, gate, up, down per layer
    before, after = load_file(tmp_path / "bf16" / "model.safetensors"), load_file(tmp_path / "fp8" / "model.safetensors")
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(after[name], before[name]), name  # the score head vLLM derives from lm_head stays bf16
    down = "model.layers.1.mlp.down_proj.weight"  # (256, 512): 2 x 4 blocks
    q, scale = after[down], after[down.removesuffix("weight") + "weight_scale_inv"]
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (2, 4) and scale.dtype == torch.float32
    restored = (q.float().reshape(2, 128, 4, 128) * scale[:, None, :, None]).reshape(256, 512)
    block_max = before[down].float().abs().reshape(2, 128, 4, 128).amax(dim=(1, 3))
    error = (restored - before[down].float()).abs().reshape(2, 128, 4, 128).amax(dim=(1, 3))
    assert bool((error <= block_max / 16).all())  # e4m3: 3 mantissa bits
    quant = json.loads((tmp_path / "fp8" / "config.json").read_text())["quantization_config"]
    assert quant == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}


@pytest.mark.slow
def test_loop_probe_scores_through_the_engine_loop(tiny_model: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 96
    pq.write_table(pa.table({"query": [f"query {i // 32}" for i in range(n)],
                             "document": [f"document {i} " + "text " * (i % 40) for i in range(n)]}),
                   tmp_path / "m.parquet")  # fmt: skip
    out = tmp_path / "probe.json"
    # --ckpt names no checkpoint: the configuration's ckpt= must be what is scored
    proc = subprocess.run(
        [sys.executable, str(KIT / "loop_probe.py"), "--manifest", str(tmp_path / "m.parquet"), "--ckpt", "/nonexistent",
         "--pairs", str(n), "--config", f"cpu:ckpt={tiny_model},RERANKQ_NUMERICS=fast", "--budget", "400", "--json", str(out)],
        cwd=ROOT, env={**_env(), "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())["cpu"]
    assert "failed" not in result, (tmp_path / "probe-cpu.log").read_text()[-3000:]
    assert result["pairs"] == n and result["pairs_per_s"] > 0
    assert result["kwargs"]["model"] == str(tiny_model)
    assert result["max_diff_shuffled"] == 0.0  # CPU, float32: order changes nothing


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("RERANKQ_")}
