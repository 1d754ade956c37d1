"""Token counts (``usage``) and ``max_tokens_per_doc`` with the model's own tokenizer, when its files are
on the service's host. The prompts are built exactly as the workers build them (the model's family, rerankq/families)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from tokenizers import Tokenizer

from rerankq.families import PairBuilder, UnsupportedModel, builder_for
from rerankq.model_files import local_model_path
from rerankq.prompt import Pair
from rerankq.settings import Settings


class Tokens:
    def __init__(self, builder: PairBuilder):
        self.builder = builder
        self._user = Tokenizer.from_str(builder.tokenizer_json())  # user text: special-token strings stay text

    def prompt_tokens(self, query: str, documents: Sequence[str], instruction: str | None) -> int:
        """Tokens the workers feed the model for these pairs (pairs that cannot be built count 0)."""
        prompts = self.builder.build([Pair(query, d, instruction) for d in documents])
        return sum(len(p.token_ids or ()) for p in prompts)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The text's first ``max_tokens`` tokens, as vLLM's ``truncate_text_to_tokens`` cuts them (at the
        character where the next token starts, again until the cut text fits): max_tokens_per_doc/query."""
        if max_tokens <= 0:
            return ""
        while text:
            enc = self._user.encode(text, add_special_tokens=False)
            if len(enc.ids) <= max_tokens:
                break
            end = min(enc.offsets[max_tokens - 1][1], enc.offsets[max_tokens][0])
            text = text[: min(end, len(text) - 1)]
        return text

    def _length(self, query: str, document: str, instruction: str | None) -> int | None:
        prompt = self.builder.build([Pair(query, document, instruction)])[0]
        return None if prompt.token_ids is None or prompt.truncated else len(prompt.token_ids)

    def fit(self, query: str, document: str, instruction: str | None, budget: int, side: str | None) -> str:
        """``truncate_prompt_tokens``: the document cut (its end, or with ``side`` left its start) so that the
        whole prompt takes at most ``budget`` tokens, the card's prompt around it intact (the recipe cuts
        only the document, as it does for RERANKQ_MAX_LENGTH). ValueError when no document fits."""
        length = self._length(query, document, instruction)
        if length is not None and length <= budget:
            return document
        enc = self._user.encode(document, add_special_tokens=False)
        n = len(enc.ids)
        keep = min(n, budget - len(self.builder.prefix_ids) - len(self.builder.suffix_ids))
        while keep > 0:
            cut = self.truncate(document, keep) if side != "left" else document[enc.offsets[n - keep][0] :]
            length = self._length(query, cut, instruction) if cut else None
            if length is not None and length <= budget:
                return cut
            keep -= max(1, (length or budget + 1) - budget)
        raise ValueError(f"{budget} tokens leave no room for the document next to the instruction and query")


@functools.lru_cache(maxsize=2)
def _tokens_for(model: str, max_length: int) -> Tokens | None:
    path = local_model_path(model)
    if not path:
        return None
    try:
        return Tokens(builder_for(path, max_length))
    except UnsupportedModel:  # no worker scores it either: usage reports 0 tokens
        return None


def tokens_for(settings: Settings) -> Tokens | None:
    """None when the model's files are not on this host (usage then reports 0 tokens)."""
    return _tokens_for(settings.model, settings.max_length)
