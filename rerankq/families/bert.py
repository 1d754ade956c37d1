"""BERT cross-encoders (``BertForSequenceClassification`` with one label, e.g. cross-encoder/ms-marco-MiniLM-L6-v2):
``[CLS] query [SEP] document [SEP]`` with token type 1 on the document, the head's logit as log-odds."""

from __future__ import annotations

from tokenizers import Tokenizer

from rerankq.families.base import Family, PairBuilder
from rerankq.families.cross_encoder import CrossEncoderBuilder, bert_positions, check_standard_head, head_surely_fits


def _builder(tokenizer: Tokenizer, max_length: int, default_instruction: str, owned: bool) -> PairBuilder:
    return CrossEncoderBuilder(
        tokenizer, max_length, default_instruction, owned=owned, token_types=True, family="bert-cross-encoder"
    )


FAMILY = Family(
    name="bert-cross-encoder",
    architectures=("BertForSequenceClassification",),
    recipe="cross-encoder-pair/bert/1",
    takes="text",
    reference="sentence-transformers CrossEncoder (sigmoid of the one logit)",
    activation="sigmoid",
    make_builder=_builder,
    head="sequence-classification",
    prefix_caching=False,
    token_types=True,
    example="cross-encoder/ms-marco-MiniLM-L6-v2",
    check=check_standard_head,
    head_surely_fits=head_surely_fits,
    position_limit=bert_positions,
)
