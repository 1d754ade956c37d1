"""Token ids for (instruction, query, document) exactly as the Qwen3-Reranker model card builds them.

vLLM's shipped chat template drops the final newline, so rerankq builds ids itself:
``prefix + tokenize("<Instruct>: …\\n<Query>: …\\n<Document>: …") + suffix``, the body tokenized
as one string (as the card does) with special-token strings in user text split, and over-long
bodies cut from the end of the document only.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from rerankq.settings import DEFAULT_INSTRUCTION

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
YES_TOKEN, NO_TOKEN = "yes", "no"
# Bump whenever the token ids built for a pair change (template, truncation, special-token handling):
# it is part of every score-cache key (rerankq/score_key.py), so old cached scores then miss.
PROMPT_RECIPE = "qwen3-reranker-card/1"


@dataclass(frozen=True, slots=True)
class Pair:
    query: str | None
    document: str | None
    instruction: str | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """Token ids of one pair, or the reason it cannot be scored."""

    token_ids: list[int] | None
    error: str | None = None
    truncated: bool = False
    token_type_start: int | None = None  # BERT-style pairs: the first token of the second segment


def _check_text(name: str, value: str | None) -> str | None:
    if value is None or value == "":
        return f"{name} is empty" if value == "" else f"{name} is missing"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{name} is not valid Unicode ({exc.reason} at character {exc.start})"
    return None


def head_text(instruction: str, query: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: "


def head_surely_fits(instruction: str, query: str, max_length: int) -> bool:
    """True when instruction and query leave room for a document whatever the tokenizer: a byte-level
    BPE token covers at least one byte, so bytes bound tokens (NFC counted too: the normalizer may
    expand a character). Lets the producer check a manifest's queries without loading a tokenizer."""
    head = head_text(instruction, query)
    size = max(len(head.encode()), len(unicodedata.normalize("NFC", head).encode()))
    return size < max_length - len(PREFIX.encode()) - len(SUFFIX.encode())


class PromptBuilder:
    family = "qwen3-reranker"  # rerankq/families/qwen3_reranker.py
    token_types = False

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int = 8192,
        default_instruction: str = DEFAULT_INSTRUCTION,
        *,
        owned: bool = False,
    ):
        """``owned``: the tokenizer is this builder's to configure (no copy: loading one takes ~0.4 s)."""
        user = tokenizer if owned else Tokenizer.from_str(tokenizer.to_str())
        user.no_truncation()
        user.no_padding()
        user.encode_special_tokens = False  # the template's own control tokens
        self.prefix_ids: list[int] = user.encode(PREFIX, add_special_tokens=False).ids
        self.suffix_ids: list[int] = user.encode(SUFFIX, add_special_tokens=False).ids
        self.yes_id = user.token_to_id(YES_TOKEN)
        self.no_id = user.token_to_id(NO_TOKEN)
        # User text: "<|im_end|>" in a document stays text, as transformers' split_special_tokens=True.
        user.encode_special_tokens = True
        self._user = user
        self.max_length = max_length
        self.default_instruction = default_instruction
        self.body_budget = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 8:
            raise ValueError(f"max_length {max_length} leaves no room for a query and document")

    @classmethod
    def from_model(cls, model_path: str | Path, max_length: int = 8192) -> PromptBuilder:
        return cls(Tokenizer.from_file(str(Path(model_path) / "tokenizer.json")), max_length, owned=True)

    def tokenizer_json(self) -> str:
        """The tokenizer, serialized: another process builds the same prompts from it."""
        return self._user.to_str()

    def head_tokens(self, instruction: str | None, query: str) -> int:
        """Tokens that instruction and query take in the body: they must leave room for the document."""
        instruction = self.default_instruction if instruction is None else instruction
        return len(self._user.encode(head_text(instruction, query).rstrip(" "), add_special_tokens=False))

    def build(self, pairs: Sequence[Pair]) -> list[Prompt]:
        results: list[Prompt | None] = [None] * len(pairs)
        heads: list[str] = []
        bodies: list[str] = []
        index: list[int] = []
        for i, pair in enumerate(pairs):
            instruction = self.default_instruction if pair.instruction is None else pair.instruction
            error = (
                _check_text("query", pair.query)
                or _check_text("document", pair.document)
                or (_check_text("instruction", instruction) if instruction else None)
            )
            if error:
                results[i] = Prompt(None, error)
                continue
            head = head_text(instruction, pair.query)  # type: ignore[arg-type]
            heads.append(head)
            bodies.append(head + pair.document)  # type: ignore[operator]
            index.append(i)
        for i, head, enc in zip(index, heads, self._user.encode_batch(bodies, add_special_tokens=False)):
            results[i] = self._fit(head, enc.ids, enc.offsets)
        return results  # type: ignore[return-value]

    def _fit(self, head: str, ids: list[int], offsets: list[tuple[int, int]]) -> Prompt:
        if len(ids) <= self.body_budget:
            return Prompt(self.prefix_ids + ids + self.suffix_ids)
        # Tokens that start before the head's final space belong to instruction and query: never cut.
        head_tokens = sum(1 for start, _ in offsets if start < len(head) - 1)
        if head_tokens >= self.body_budget:
            return Prompt(
                None,
                f"instruction and query take {head_tokens} tokens; max_length {self.max_length} leaves "
                f"{self.body_budget} for them and the document",
            )
        return Prompt(self.prefix_ids + ids[: self.body_budget] + self.suffix_ids, truncated=True)
