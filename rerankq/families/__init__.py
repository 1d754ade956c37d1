"""The model families rerankq scores, chosen from a checkpoint's config.json (``architectures``).

Adding a family is one module with a ``FAMILY`` (rerankq/families/base.py) and one line in ``FAMILIES``:
its pair recipe, its engine call (vLLM overrides, token types, the transformers head), its recipe name in
the scoring context, and its reference.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from rerankq.families import bert, gte, qwen3_reranker, xlm_roberta
from rerankq.families.base import Family, PairBuilder, UnsupportedModel
from rerankq.settings import DEFAULT_INSTRUCTION

FAMILIES: tuple[Family, ...] = (qwen3_reranker.FAMILY, bert.FAMILY, xlm_roberta.FAMILY, gte.FAMILY)

__all__ = [
    "FAMILIES",
    "Family",
    "PairBuilder",
    "UnsupportedModel",
    "builder_for",
    "family_named",
    "family_of",
    "model_config",
    "supported",
    "family_for_config",
    "max_length_for",
    "BuilderSource",
]


def supported() -> str:
    """One line naming every family and the architectures it takes."""
    return "; ".join(f"{f.name} ({', '.join(f.architectures)})" for f in FAMILIES)


def model_config(model_path: str | Path) -> dict:
    path = Path(model_path) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedModel(f"{path}: no readable config.json ({exc}); rerankq scores: {supported()}") from exc


def family_for_config(config: dict, where: str = "the model") -> Family:
    for family in FAMILIES:
        if family.matches(config):
            reason = family.check(config)
            if reason:
                raise UnsupportedModel(f"{where} ({family.name}): {reason}")
            return family
    architectures = ", ".join(config.get("architectures") or ()) or "none"
    raise UnsupportedModel(f"architectures {architectures} are in no family rerankq scores: {supported()} ({where})")


def family_of(model_path: str | Path) -> Family:
    """The checkpoint's family; UnsupportedModel (naming the supported ones) for any other checkpoint."""
    return family_for_config(model_config(model_path), str(model_path))


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UnsupportedModel(f"no model family {name!r}; rerankq scores: {supported()}")


def max_length_for(model_path: str | Path, configured: int) -> int:
    """RERANKQ_MAX_LENGTH as the checkpoint can take it (capped at its positions)."""
    config = model_config(model_path)
    return family_for_config(config, str(model_path)).max_length(config, configured)


def builder_for(model_path: str | Path, max_length: int, default_instruction: str = DEFAULT_INSTRUCTION) -> PairBuilder:
    """The family's pair builder over the checkpoint's tokenizer.json, at the length the model takes."""
    config = model_config(model_path)
    family = family_for_config(config, str(model_path))
    tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    return family.builder(tokenizer, family.max_length(config, max_length), default_instruction, owned=True)


class BuilderSource:
    """The producer's view of local model files: the family from config.json at once, the tokenizer only
    when a query is too long to surely fit (``producer/manifest.py``)."""

    def __init__(self, model_path: str | Path, max_length: int):
        config = model_config(model_path)
        self.family = family_for_config(config, str(model_path))
        self.model_path = model_path
        self.max_length = self.family.max_length(config, max_length)
        self._builder: PairBuilder | None = None

    def __call__(self) -> PairBuilder:
        if self._builder is None:
            self._builder = builder_for(self.model_path, self.max_length)
        return self._builder

    def surely_fits(self, instruction: str, query: str) -> bool:
        """True when instruction and query surely leave room for a document, without a tokenizer."""
        return self.family.head_surely_fits(instruction, query, self.max_length)
