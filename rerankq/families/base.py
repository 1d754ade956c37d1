"""What a model family is: how a checkpoint's pairs become model input, how an engine scores them, and
what the scores are checked against. One instance per family (rerankq/families/<family>.py); the
registry (rerankq/families/__init__.py) picks one from the checkpoint's config.json."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenizers import Tokenizer

from rerankq.prompt import Pair, Prompt


class PairBuilder(Protocol):
    """Token ids of pairs, the family's recipe (rerankq/prompt.py for Qwen3-Reranker)."""

    family: str  # the family's name (rerankq/families/__init__.py)
    token_types: bool  # prompts carry ``token_type_start``
    max_length: int
    default_instruction: str
    body_budget: int  # tokens left for the pair's texts once the recipe's own tokens are placed
    prefix_ids: list[int]  # the recipe's tokens before the texts
    suffix_ids: list[int]  # ... and after them

    def build(self, pairs: Sequence[Pair]) -> list[Prompt]: ...

    def head_tokens(self, instruction: str | None, query: str) -> int: ...

    def tokenizer_json(self) -> str: ...


# (tokenizer, max_length, default_instruction, owned) -> the family's builder
MakeBuilder = Callable[[Tokenizer, int, str, bool], PairBuilder]


class UnsupportedModel(ValueError):
    """The checkpoint belongs to no family rerankq scores: its message names the supported ones."""


@dataclass(frozen=True)
class Family:
    """One family of checkpoints and everything that differs between families.

    ``recipe`` goes into every scoring context (rerankq/score_key.py), so scores of two families, or of
    one family under two recipes, never share cache entries. ``head`` tells the transformers engine
    (worker/engines/hf_engine.py) which head and read-out the reference uses."""

    name: str
    architectures: tuple[str, ...]  # config.json "architectures" it takes
    recipe: str
    takes: str  # what pairs may hold: "text" (images later, with Qwen3-VL)
    reference: str  # what the fidelity tests compare against
    activation: str  # what the card reports: "sigmoid" of the log-odds, or "raw" (the logit itself)
    make_builder: MakeBuilder
    head: str  # "causal-yes-no" | "sequence-classification"
    token_types: bool = False  # pairs carry token type ids (BERT): the engine is told where the document starts
    prefix_caching: bool = True  # vLLM may reuse a query's shared prefix (causal attention only)
    hf_overrides: dict[str, Any] | None = None  # vLLM's hf_overrides for this family
    example: str = ""  # a checkpoint of the family, for messages and the README
    check: Callable[[dict], str | None] = field(default=lambda config: None)  # why a config of it cannot be scored
    position_limit: Callable[[dict], int | None] = field(default=lambda config: None)  # tokens the model can see
    # (instruction, query, max_length) -> True when they surely leave room for a document (no tokenizer)
    head_surely_fits: Callable[[str, str, int], bool] = field(default=lambda instruction, query, max_length: False)
    prepare: Callable[[], None] = field(default=lambda: None)  # before an engine loads the checkpoint
    # (model_path, torch dtype) -> the transformers reference model; None: AutoModelFor… from config.json
    load_reference: Callable[[str, Any], Any] | None = None

    def matches(self, config: dict) -> bool:
        return any(a in self.architectures for a in config.get("architectures") or ())

    def max_length(self, config: dict, configured: int) -> int:
        """RERANKQ_MAX_LENGTH, capped at what the model's positions allow (512 for BERT)."""
        limit = self.position_limit(config)
        return configured if limit is None else min(configured, limit)

    def builder(
        self, tokenizer: Tokenizer, max_length: int, default_instruction: str, *, owned: bool = False
    ) -> PairBuilder:
        return self.make_builder(tokenizer, max_length, default_instruction, owned)
