"""A random-weight Qwen3 reranker checkpoint with the real Qwen3 tokenizer, for offline tests and demos.

Its scores mean nothing, but every token id, shape and code path is the real model's: vLLM and
transformers load it exactly as they load Qwen3-Reranker-0.6B (head_dim 32, the minimum vLLM's
CPU attention accepts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TINY_CONFIG = dict(
    vocab_size=151669,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    initializer_range=0.05,
    bos_token_id=151643,
    eos_token_id=151645,
)
_MARKER = "rerankq-tiny.json"


def write_tokenizer(directory: Path) -> None:
    """tokenizer.json + tokenizer_config.json, as transformers and vLLM expect them."""
    from transformers import PreTrainedTokenizerFast

    from producer.qwen_vocab import build_qwen3_tokenizer

    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_qwen3_tokenizer(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=40960,
        clean_up_tokenization_spaces=False,
    )
    fast.padding_side = "left"
    fast.save_pretrained(str(directory))


def write_tiny_model(directory: str | Path, seed: int = 0, overrides: dict | None = None) -> Path:
    """Write the checkpoint (float32 safetensors, ~40 MB) into ``directory``; return its path."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = Qwen3Config(**{**TINY_CONFIG, **(overrides or {})}, architectures=["Qwen3ForCausalLM"])
    config.dtype = torch.float32
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    write_tokenizer(directory)
    (directory / _MARKER).write_text(json.dumps({"seed": seed, "overrides": overrides or {}}))
    return directory


def ensure_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Build the checkpoint once; later calls reuse it (safe across processes: built aside, then renamed)."""
    directory = Path(directory)
    if (directory / _MARKER).exists():
        return directory
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    write_tiny_model(tmp, seed)
    try:
        tmp.rename(directory)
    except OSError:  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return directory
