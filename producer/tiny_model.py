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


# Real checkpoints' configs, scaled down (hidden 64, 2 layers, 2 heads of 32: vLLM's CPU attention takes no
# smaller head); everything else as the real one: cross-encoder/ms-marco-MiniLM-L6-v2 (BERT) and
# BAAI/bge-reranker-v2-m3 (XLM-RoBERTa, positions up to 8192). initializer_range is wider than training's
# 0.02 so random scores spread.
CROSS_ENCODER_CONFIGS: dict[str, dict] = {
    "bert": dict(
        architectures=["BertForSequenceClassification"],
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
        pad_token_id=0, position_embedding_type="absolute", initializer_range=0.2,
        id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0},
    ),
    "xlm-roberta": dict(
        architectures=["XLMRobertaForSequenceClassification"],
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=8194, type_vocab_size=1, hidden_act="gelu", layer_norm_eps=1e-5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, position_embedding_type="absolute", initializer_range=0.2,
        id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0},
    ),
}  # fmt: skip
FAMILY_CHOICES = ("qwen3", *CROSS_ENCODER_CONFIGS, "gte")


def write_tiny_cross_encoder(directory: str | Path, family: str, seed: int = 0) -> Path:
    """A random-weight cross-encoder (``bert`` or ``xlm-roberta``) with a small tokenizer trained offline."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizer,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaTokenizer,
    )

    from producer.cross_encoder_vocab import bert_vocab, unigram_vocab

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if family == "bert":
        tokenizer = BertTokenizer(vocab=bert_vocab(), model_max_length=512)
        config_class, model_class = BertConfig, BertForSequenceClassification
    elif family == "xlm-roberta":
        tokenizer = XLMRobertaTokenizer(vocab=unigram_vocab(), model_max_length=8192)
        config_class, model_class = XLMRobertaConfig, XLMRobertaForSequenceClassification
    else:
        raise ValueError(f"no tiny cross-encoder family {family!r}: expected one of {', '.join(CROSS_ENCODER_CONFIGS)}")
    config = config_class(vocab_size=len(tokenizer), **CROSS_ENCODER_CONFIGS[family])
    config.dtype = torch.float32
    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    (directory / _MARKER).write_text(json.dumps({"seed": seed, "family": family}))
    return directory


def write_tiny(directory: str | Path, family: str = "qwen3", seed: int = 0) -> Path:
    """``producer dev tiny-model``: the Qwen3-Reranker checkpoint, or a cross-encoder of ``family`` (``gte``: mGTE)."""
    if family == "qwen3":
        return write_tiny_model(directory, seed)
    if family == "gte":
        from producer.tiny_gte import write_tiny_gte

        path = write_tiny_gte(directory, seed)
        (path / _MARKER).write_text(json.dumps({"seed": seed, "family": family}))
        return path
    return write_tiny_cross_encoder(directory, family, seed)


def ensure_tiny(directory: str | Path, family: str = "qwen3", seed: int = 0) -> Path:
    """Build once, as ``ensure_tiny_model`` does, for any family."""
    directory = Path(directory)
    if (directory / _MARKER).exists():
        return directory
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    write_tiny(tmp, family, seed)
    try:
        tmp.rename(directory)
    except OSError:  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return directory
