"""Token counts (``usage``) and ``max_tokens_per_doc`` with the model's own tokenizer, when its files are
on the service's host. The prompts are built exactly as the workers build them (rerankq/prompt.py)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from tokenizers import Tokenizer

from rerankq.model_files import local_model_path
from rerankq.prompt import Pair, PromptBuilder
from rerankq.settings import Settings


class Tokens:
    def __init__(self, builder: PromptBuilder):
        self.builder = builder
        self._user = Tokenizer.from_str(builder.tokenizer_json())  # user text: special-token strings stay text

    def prompt_tokens(self, query: str, documents: Sequence[str], instruction: str | None) -> int:
        """Tokens the workers feed the model for these pairs (pairs that cannot be built count 0)."""
        prompts = self.builder.build([Pair(query, d, instruction) for d in documents])
        return sum(len(p.token_ids or ()) for p in prompts)

    def truncate(self, document: str, max_tokens: int) -> str:
        """The document's first ``max_tokens`` tokens, cut at a token boundary of the original text."""
        offsets = self._user.encode(document, add_special_tokens=False).offsets
        return document if len(offsets) <= max_tokens else document[: offsets[max_tokens - 1][1]]


@functools.lru_cache(maxsize=2)
def _tokens_for(model: str, max_length: int) -> Tokens | None:
    path = local_model_path(model)
    return Tokens(PromptBuilder.from_model(path, max_length)) if path else None


def tokens_for(settings: Settings) -> Tokens | None:
    """None when the model's files are not on this host (usage then reports 0 tokens)."""
    return _tokens_for(settings.model, settings.max_length)
