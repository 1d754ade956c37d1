"""Qwen3-Reranker shapes (0.6B, 4B, 8B: the real configs) as random-weight checkpoints: speed does not
depend on the weights, and no weights can reach the GPU machine."""

from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path

from bench.gpu_clock import log

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
