"""A random-weight mGTE reranker (Alibaba-NLP/gte-multilingual-reranker-base's config, scaled down) laid out as
the real checkpoint ships: ``model_type: "new"``, the hub's ``auto_map``, weights under ``new.`` with fused
``qkv_proj`` and ``up_gate_proj``, and XLM-RoBERTa's tokenizer (a small Unigram vocabulary trained offline).

The weights come from transformers' own port (``GteForSequenceClassification``), whose saved keys are the
original layout under ``gte.``; they are renamed to ``new.`` and config.json is the real one's fields."""

from __future__ import annotations

import json
from pathlib import Path

# gte-multilingual-reranker-base's config.json, scaled down (hidden 64, 2 layers, 2 heads of 32: vLLM's CPU
# attention takes no smaller head); rotary positions with fixed NTK scaling as the real one. initializer_range
# is wider than training's 0.02 so random scores spread.
GTE_CONFIG: dict = dict(
    architectures=["NewForSequenceClassification"],
    auto_map={
        "AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
        "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel",
        "AutoModelForSequenceClassification": "Alibaba-NLP/new-impl--modeling.NewForSequenceClassification",
    },
    model_type="new",
    attention_probs_dropout_prob=0.0, classifier_dropout=0.0, hidden_act="gelu", hidden_dropout_prob=0.1,
    hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2, initializer_range=0.2,
    id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, layer_norm_eps=1e-12, layer_norm_type="layer_norm",
    logn_attention_clip1=False, logn_attention_scale=False, max_position_embeddings=8192, pack_qkv=True,
    pad_token_id=1, position_embedding_type="rope", rope_scaling={"factor": 8.0, "type": "ntk"}, rope_theta=20000,
    torch_dtype="float32", type_vocab_size=1, unpad_inputs=False, use_memory_efficient_attention=False,
)  # fmt: skip


def write_tiny_gte(directory: str | Path, seed: int = 0) -> Path:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import GteForSequenceClassification, XLMRobertaTokenizer

    from producer.cross_encoder_vocab import unigram_vocab
    from rerankq.families.gte_config import gte_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = XLMRobertaTokenizer(vocab=unigram_vocab(), model_max_length=8192)
    config = {**GTE_CONFIG, "vocab_size": len(tokenizer)}
    torch.manual_seed(seed)
    model = GteForSequenceClassification(gte_config(config)).to(torch.float32).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    renamed = {("new." + k[len("gte.") :] if k.startswith("gte.") else k): v.contiguous() for k, v in state.items()}
    save_file(renamed, str(weights), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(str(directory))
    return directory
