"""Qwen3-Reranker (0.6B/4B/8B): the card's yes/no prompt (rerankq/prompt.py), scored by vLLM as a
sequence classifier over the no/yes token logits; the reference is transformers' causal LM read as
the card reads it."""

from __future__ import annotations

from tokenizers import Tokenizer

from rerankq.families.base import Family, PairBuilder
from rerankq.prompt import PROMPT_RECIPE, PromptBuilder, head_surely_fits


def _builder(tokenizer: Tokenizer, max_length: int, default_instruction: str, owned: bool) -> PairBuilder:
    return PromptBuilder(tokenizer, max_length, default_instruction, owned=owned)


FAMILY = Family(
    name="qwen3-reranker",
    architectures=("Qwen3ForCausalLM",),
    recipe=PROMPT_RECIPE,
    takes="text",
    reference="the model card's code: transformers AutoModelForCausalLM, softmax over the last position's no/yes logits",
    activation="sigmoid",
    make_builder=_builder,
    head="causal-yes-no",
    hf_overrides={
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    },
    example="Qwen/Qwen3-Reranker-0.6B",
    head_surely_fits=head_surely_fits,
)
