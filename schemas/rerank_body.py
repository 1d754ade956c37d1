"""vLLM's scoring requests as its clients send them: the bodies of /rerank, /v1/rerank, /v2/rerank (also
Jina's and Cohere's) and /score, /v1/score, and of a batch file's lines for any url ending in /rerank or
/score. One definition for the service and batch files, with vLLM's fields and defaults
(vllm/entrypoints/pooling/scoring/protocol.py); JSON types are checked strictly."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

# A part of vLLM's ``{"content": [...]}`` input that is not text (rerankq scores text only).
_MEDIA_PARTS = ("image_url", "image_embeds", "image_pil", "video_url", "audio_url", "input_audio", "file")


def score_text(value: Any, where: str = "") -> str:
    """vLLM's ScoreInput as the text it scores: a string, or ``{"content": [{"type": "text", "text": …}, …]}``
    whose text parts vLLM joins with newlines. A media part is refused: rerankq scores text only."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value:
        parts = value["content"]
        if not isinstance(parts, list) or not parts:
            raise ValueError(f"{where}content: expected a non-empty list of parts")
        texts = []
        for i, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in _MEDIA_PARTS or (isinstance(part, dict) and kind is None and set(part) & set(_MEDIA_PARTS)):
                raise ValueError(
                    f"{where}content[{i}]: {kind or 'media'} parts are not supported: rerankq scores text only "
                    "(send the part's text)"
                )
            else:
                raise ValueError(f'{where}content[{i}]: expected {{"type": "text", "text": "…"}}')
        return "\n".join(texts)
    raise ValueError(f'{where}expected a string or {{"content": [{{"type": "text", "text": "…"}}]}}')


def _texts(value: Any, extra_text_objects: bool = False) -> list[str]:
    """One ScoreInput or a list of them, as a list of texts (``extra_text_objects``: Jina/Cohere's ``{"text": …}``)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        where = f"item {i}: " if isinstance(value, list) else ""
        if extra_text_objects and not isinstance(item, str) and not (isinstance(item, dict) and "content" in item):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError(f'{where}expected a string, an object with a "text" string, or {{"content": [text parts]}}')
            out.append(item["text"])
        else:
            out.append(score_text(item, where))
    return out


class Activation(BaseModel):
    """vLLM's ``use_activation``: true (or null, the pooler's default) gives P(yes), the model card's
    score; false gives the raw log-odds, logit(yes) − logit(no), which do not saturate."""

    use_activation: StrictBool | None = Field(
        None, description="true or null: P(yes); false: the raw log-odds logit(yes) − logit(no), which never saturate"
    )

    def relevance(self, score: float | None, logit: float | None) -> float | None:
        """The score this request asked for: the probability, or (``use_activation`` false) the log-odds."""
        return logit if self.use_activation is False else score


class ScoringBody(Activation):
    """vLLM's ScoringRequestMixin: what /rerank and /score share. Unknown fields are ignored, as vLLM does."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(
        None, description="the model that scores it, as its workers serve it (default: the service's model)"
    )
    instruction: StrictStr | None = Field(None, description="Qwen3-Reranker's task instruction (default: web search)")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description='vLLM\'s; its "instruction" key wins over the top-level one, as in vLLM'
    )
    truncate_prompt_tokens: StrictInt | None = Field(
        None, ge=-1, description="keep the prompt within N tokens, cutting the document only (-1: the model's maximum)"
    )
    truncation_side: Literal["left", "right"] | None = Field(
        None, description="right (default): keep the document's first tokens; left: its last"
    )
    max_tokens_per_query: StrictInt = Field(0, description="cut the query to its first N tokens (0: off)")
    max_tokens_per_doc: StrictInt = Field(0, description="cut each document to its first N tokens (0: off)")

    @field_validator("max_tokens_per_query", "max_tokens_per_doc", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return 0 if value is None else value  # rerankq's earlier null = off

    @model_validator(mode="after")
    def _instruction(self) -> ScoringBody:
        kwargs = self.chat_template_kwargs or {}
        if "instruction" in kwargs:
            if not isinstance(kwargs["instruction"], str):
                raise ValueError("chat_template_kwargs.instruction: expected a string")
            self.instruction = kwargs["instruction"]
        return self


class RerankBody(ScoringBody):
    """vLLM's RerankRequest (Jina- and Cohere-compatible): ``documents`` one text or a list, each a string,
    vLLM's ``{"content": [text parts]}`` or Jina/Cohere's ``{"text": …}``."""

    query: Any = Field(description='a string, or {"content": [{"type": "text", "text": …}]}')
    documents: Any = Field(description='a string or a list of strings, {"text": …} or {"content": [text parts]}')
    top_n: StrictInt | None = Field(None, ge=0, description="the best N results (0 or absent: all)")
    return_documents: StrictBool = Field(True, description="false: /v2/rerank (Cohere's) leaves `document` out")

    @field_validator("query")
    @classmethod
    def _query(cls, value: Any) -> str:
        return score_text(value)

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: Any) -> list[str]:
        return _texts(value, extra_text_objects=True)


SCORE_FORMS = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2"))


class ScoreBody(ScoringBody):
    """vLLM's ScoreRequest, any of its four forms (``queries``/``documents``, ``queries``/``items``,
    ``data_1``/``data_2``, ``text_1``/``text_2``, tried in vLLM's order): each side one text or a list;
    1 to N or N to N."""

    form: SkipJsonSchema[tuple[str, str]] = Field(("text_1", "text_2"), exclude=True)  # which of the four it was
    data_1: list[str] = Field(default_factory=list)
    data_2: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for first, second in SCORE_FORMS:
            if first in data and second in data:
                out = {k: v for k, v in data.items() if k not in ("form", "data_1", "data_2")}
                for key, name in (("data_1", first), ("data_2", second)):
                    try:
                        out[key] = _texts(data[name])
                    except ValueError as exc:
                        raise ValueError(f"{name}: {exc}") from None
                out["form"] = (first, second)
                return out
        raise ValueError("expected text_1 and text_2, queries and documents, queries and items, or data_1 and data_2")
