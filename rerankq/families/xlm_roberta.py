"""XLM-RoBERTa cross-encoders (``XLMRobertaForSequenceClassification`` with one label: BAAI/bge-reranker-v2-m3,
bge-reranker-base/large): ``<s> query </s></s> document </s>``, the head's logit as log-odds."""

from __future__ import annotations

from tokenizers import Tokenizer

from rerankq.families.base import Family, PairBuilder
from rerankq.families.cross_encoder import CrossEncoderBuilder, check_standard_head, head_surely_fits, roberta_positions


def _builder(tokenizer: Tokenizer, max_length: int, default_instruction: str, owned: bool) -> PairBuilder:
    return CrossEncoderBuilder(
        tokenizer, max_length, default_instruction, owned=owned, family="xlm-roberta-cross-encoder"
    )


FAMILY = Family(
    name="xlm-roberta-cross-encoder",
    architectures=("XLMRobertaForSequenceClassification",),
    recipe="cross-encoder-pair/xlm-roberta/1",
    takes="text",
    reference="sentence-transformers CrossEncoder (sigmoid of the one logit)",
    activation="sigmoid",
    make_builder=_builder,
    head="sequence-classification",
    prefix_caching=False,
    example="BAAI/bge-reranker-v2-m3",
    check=check_standard_head,
    head_surely_fits=head_surely_fits,
    position_limit=roberta_positions,
)
