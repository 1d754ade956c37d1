"""The cross-encoders' pair recipe: ``tokenizer(query, document)`` as sentence-transformers' CrossEncoder
feeds its model (the tokenizer's own pair template: ``[CLS] q [SEP] d [SEP]`` for BERT,
``<s> q </s></s> d </s>`` for XLM-RoBERTa), with over-long pairs cut from the end of the document only
(transformers' ``truncation="only_second"``), as rerankq cuts Qwen3-Reranker's. The head's single logit
is the log-odds; the score is its sigmoid (CrossEncoder's default activation for one label).

Cross-encoders take no instruction: a pair's instruction is ignored by the recipe (it still goes into the
pair's cache key, like every field of the pair).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Encoding, Tokenizer

from rerankq.prompt import Pair, Prompt, _check_text
from rerankq.settings import DEFAULT_INSTRUCTION


def head_surely_fits(instruction: str, query: str, max_length: int) -> bool:
    """True when the query surely leaves room for a document, without a tokenizer: a token covers at least
    one normalized character, a word adds at most one marker token, and NFKC grows a character to at
    most 18 (U+FDFA). Cross-encoders take no instruction."""
    return 2 * 18 * len(query) + 8 < max_length


def check_single_label(config: dict) -> str | None:
    """Why a config cannot be scored: a head of several labels has no one log-odds."""
    labels = config.get("id2label") or {}
    n = int(config.get("num_labels") or len(labels) or 1)
    if n != 1:
        return f"its classification head has {n} labels; rerankq scores one-logit heads (num_labels=1)"
    return None


def check_standard_head(config: dict) -> str | None:
    """``check_single_label``, and a checkpoint that brings its own model code (``auto_map``, as
    jina-reranker-v2 does under the XLM-RoBERTa name) refused: its weights are not the standard head's, so
    transformers would score it with freshly initialised layers."""
    custom = (config.get("auto_map") or {}).get("AutoModelForSequenceClassification")
    if custom:
        return (
            f"it brings its own model code (auto_map: {custom}), whose weights the standard "
            f"{', '.join(config.get('architectures') or ())} does not read; rerankq does not run a checkpoint's code"
        )
    return check_single_label(config)


class CrossEncoderBuilder:
    """Pairs as the tokenizer's pair template lays them out; ``token_types``: prompts say where the second
    segment starts (BERT's token_type_ids are 0 before it, 1 from it)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int = 512,
        default_instruction: str = DEFAULT_INSTRUCTION,
        *,
        owned: bool = False,
        token_types: bool = False,
        family: str = "cross-encoder",
    ):
        tok = tokenizer if owned else Tokenizer.from_str(tokenizer.to_str())
        tok.no_truncation()
        tok.no_padding()
        tok.encode_special_tokens = True  # "[SEP]" or "</s>" in a document stays text
        self._tok = tok
        self.max_length = max_length
        self.default_instruction = default_instruction
        self.token_types = token_types
        self.family = family
        probe = tok.post_process(
            tok.encode("a", add_special_tokens=False), tok.encode("b", add_special_tokens=False), True
        )
        special = probe.special_tokens_mask
        first, last = special.index(0), len(special) - 1 - special[::-1].index(0)
        self.prefix_ids: list[int] = probe.ids[:first]
        self.suffix_ids: list[int] = probe.ids[last + 1 :]
        self.special_tokens = sum(special)
        self.body_budget = max_length - self.special_tokens
        if self.body_budget < 8:
            raise ValueError(f"max_length {max_length} leaves no room for a query and document")

    def tokenizer_json(self) -> str:
        return self._tok.to_str()

    def head_tokens(self, instruction: str | None, query: str) -> int:
        return len(self._tok.encode(query, add_special_tokens=False).ids)

    def build(self, pairs: Sequence[Pair]) -> list[Prompt]:
        results: list[Prompt | None] = [None] * len(pairs)
        index: list[int] = []
        queries: dict[str, int] = {}
        for i, pair in enumerate(pairs):
            error = _check_text("query", pair.query) or _check_text("document", pair.document)
            if error:
                results[i] = Prompt(None, error)
                continue
            queries.setdefault(pair.query, len(queries))  # type: ignore[arg-type]
            index.append(i)
        encoded_queries = self._tok.encode_batch(list(queries), add_special_tokens=False)
        documents = self._tok.encode_batch([pairs[i].document for i in index], add_special_tokens=False)
        for i, doc in zip(index, documents):
            results[i] = self._fit(encoded_queries[queries[pairs[i].query]], doc)  # type: ignore[index]
        return results  # type: ignore[return-value]

    def _fit(self, query: Encoding, document: Encoding) -> Prompt:
        q, d = len(query.ids), len(document.ids)
        if q >= self.body_budget:
            return Prompt(
                None,
                f"the query takes {q} tokens; max_length {self.max_length} leaves {self.body_budget} for it and the document",
            )
        truncated = q + d > self.body_budget
        if truncated:  # in place: each document's encoding serves this one pair
            document.truncate(self.body_budget - q, 0, "right")
        pair = self._tok.post_process(query, document, True)
        start = None
        if self.token_types:
            start = next((k for k, t in enumerate(pair.type_ids) if t == 1), len(pair.ids))
        return Prompt(pair.ids, truncated=truncated, token_type_start=start)


def bert_positions(config: dict) -> int | None:
    """Tokens a BERT model can see: ``max_position_embeddings`` (512)."""
    n = config.get("max_position_embeddings")
    return int(n) if n else None


def roberta_positions(config: dict) -> int | None:
    """RoBERTa's positions start after the padding index: ``max_position_embeddings - pad_token_id - 1``
    (8192 for bge-reranker-v2-m3)."""
    n = config.get("max_position_embeddings")
    return int(n) - int(config.get("pad_token_id") or 1) - 1 if n else None
