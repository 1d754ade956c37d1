"""The rerank request as vLLM, Jina and Cohere clients send it: the body of POST /v1/rerank and of a
batch file's ``/v1/rerank`` lines (producer/batch_files.py), one definition for both."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator


class Activation(BaseModel):
    """vLLM's ``use_activation``, in /v1/rerank and /v1/score requests: true (the default) gives P(yes),
    the model card's score; false gives the raw log-odds, logit(yes) − logit(no), which do not saturate."""

    use_activation: StrictBool = Field(
        True, description="true: P(yes); false: the raw log-odds logit(yes) − logit(no), which never saturate"
    )

    def relevance(self, score: float | None, logit: float | None) -> float | None:
        """The score this request asked for: the probability, or (``use_activation`` false) the log-odds."""
        return score if self.use_activation else logit


class RerankBody(Activation):
    """vLLM's /v1/rerank request (Jina- and Cohere-compatible). Unknown fields are ignored, as vLLM does."""

    model_config = ConfigDict(extra="ignore")

    query: StrictStr
    documents: list[Any] = Field(description='strings, or objects with a "text" string')
    model: StrictStr | None = Field(
        None, description="the model that scores it, as its workers name it (default: the service's RERANKQ_MODEL)"
    )
    top_n: StrictInt | None = Field(None, ge=0, description="the best N results (0 or absent: all)")
    return_documents: StrictBool = True
    instruction: StrictStr | None = Field(None, description="Qwen3-Reranker's task instruction (default: web search)")
    max_tokens_per_doc: StrictInt | None = Field(None, ge=1, description="cut each document to its first N tokens")

    @field_validator("documents")
    @classmethod
    def _texts(cls, value: list[Any]) -> list[str]:
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                out.append(item["text"])
            else:
                raise ValueError(f'item {i} is not a string or an object with a "text" string')
        return out
