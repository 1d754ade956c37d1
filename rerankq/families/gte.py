"""mGTE cross-encoders (Alibaba-NLP/gte-multilingual-reranker-base: ``NewForSequenceClassification``, vLLM's
``GteNewForSequenceClassification``): XLM-RoBERTa's pair template ``<s> query </s></s> document </s>``,
rotary positions, the CLS pooler's one logit as log-odds. The card reads that logit raw (no activation);
rerankq's ``logit`` is it, ``score`` its sigmoid (sentence-transformers' default for one label).

The checkpoint's config class is the hub's code (``auto_map``); rerankq brings its own
(rerankq/families/gte_config.py), so nothing from the checkpoint runs. The reference is transformers'
own port of mGTE (``GteForSequenceClassification``), loaded from the same files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from rerankq.families.base import Family, PairBuilder
from rerankq.families.cross_encoder import CrossEncoderBuilder, bert_positions, check_single_label, head_surely_fits


def _builder(tokenizer: Tokenizer, max_length: int, default_instruction: str, owned: bool) -> PairBuilder:
    return CrossEncoderBuilder(tokenizer, max_length, default_instruction, owned=owned, family="gte-cross-encoder")


def check(config: dict) -> str | None:
    """What vLLM's mGTE model computes: rotary positions, GELU-gated MLP, no log-n attention scaling."""
    if config.get("position_embedding_type", "rope") not in ("rope", "rotary"):
        return f"position_embedding_type {config['position_embedding_type']!r}: vLLM's mGTE takes rotary positions only"
    if config.get("hidden_act", "gelu") != "gelu":
        return f"hidden_act {config['hidden_act']!r}: vLLM's mGTE takes gelu (its gated MLP) only"
    if config.get("logn_attention_scale") or config.get("logn_attention_clip1"):
        return "log-n attention scaling is on: vLLM's mGTE does not compute it"
    return check_single_label(config)


CHILD_HOOK = "rerankq.families.gte_config:register"
HOOKS_ENV = "RERANKQ_CHILD_HOOKS"  # run by rerankq/child_guard/sitecustomize.py in vLLM's child processes


def prepare() -> None:
    """Before vLLM reads config.json: ``model_type: "new"`` is rerankq's NewConfig, not the hub's code, here and
    in the processes vLLM starts (its engine core reads config.json again)."""
    from rerankq.families.gte_config import register

    register()
    hooks = [h for h in os.environ.get(HOOKS_ENV, "").split(",") if h]
    if CHILD_HOOK not in hooks:
        os.environ[HOOKS_ENV] = ",".join([*hooks, CHILD_HOOK])


def load_reference(model_path: str, dtype: Any) -> Any:
    """transformers' GteForSequenceClassification over the checkpoint's weights (``new.*`` keys, as shipped)."""
    from transformers import GteForSequenceClassification

    from rerankq.families.gte_config import gte_config

    config = gte_config(json.loads((Path(model_path) / "config.json").read_text()))
    return GteForSequenceClassification.from_pretrained(model_path, config=config, dtype=dtype)


FAMILY = Family(
    name="gte-cross-encoder",
    architectures=("NewForSequenceClassification", "GteNewForSequenceClassification"),
    recipe="cross-encoder-pair/gte/1",
    takes="text",
    reference="transformers GteForSequenceClassification (its port of mGTE): the card's raw logit",
    activation="raw",
    make_builder=_builder,
    head="sequence-classification",
    prefix_caching=False,
    hf_overrides={"architectures": ["GteNewForSequenceClassification"]},
    example="Alibaba-NLP/gte-multilingual-reranker-base",
    check=check,
    head_surely_fits=head_surely_fits,
    position_limit=bert_positions,  # rotary: max_position_embeddings (8192), no padding offset
    prepare=prepare,
    load_reference=load_reference,
)
