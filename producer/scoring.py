"""A vLLM scoring request (/rerank or /score body) read into the pairs rerankq scores, with vLLM's
semantics: which url is which (any path ending in /rerank or /score, as ``vllm run-batch`` routes),
1:1, 1:N or N:N score inputs, ``max_tokens_per_query`` / ``max_tokens_per_doc`` (0: off) and
``truncate_prompt_tokens``. Shared by the service's routes and batch-file lines, so both check and cut
the same way; the texts are cut here, before submission, so the workers, the score cache and the
ledger only ever see the texts actually scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producer.errors import InputError
from producer.interactive import check_rerank
from producer.submission import checked_pairs
from rerankq.settings import Settings
from schemas import InlinePair, RerankBody
from schemas.rerank_body import ScoreBody


def route(url: str) -> str | None:
    """``rerank`` or ``score`` for a url vLLM's run-batch routes there (it matches the path's end); else None."""
    if url.endswith("/rerank"):
        return "rerank"
    if url.endswith("/score"):
        return "score"
    return None


@dataclass(frozen=True, slots=True)
class Scoring:
    """A checked request: the pairs as scored (truncated), and what its response needs."""

    body: RerankBody | ScoreBody
    pairs: list[InlinePair]
    documents: list[str]  # rerank: the documents as sent (vLLM answers them untruncated)
    settings: Settings  # the model's: its tokenizer counts ``usage``

    def prompt_tokens(self) -> int:
        """``usage``: tokens of the prompts the workers build (0 without the tokenizer here). Counted when a
        response is built, not when a batch line is checked: submitting a batch loads no tokenizer unless a
        line asks for truncation."""
        tokens = _tokens(self.settings)
        if tokens is None:
            return 0
        return sum(tokens.prompt_tokens(p.query, [p.document], p.instruction) for p in self.pairs)


def _tokens(settings: Settings) -> Any:  # producer.prompt_tokens.Tokens | None
    try:
        from producer.prompt_tokens import tokens_for
    except ImportError:  # pragma: no cover - tokenizers is a core dependency
        return None
    return tokens_for(settings)


def _limits(body: RerankBody | ScoreBody, settings: Settings) -> None:
    """vLLM's own checks of the truncation fields, in its words."""
    for name in ("max_tokens_per_query", "max_tokens_per_doc"):
        value = getattr(body, name)
        if value < 0:
            raise InputError(f"field {name!r}: {name} must be a non-negative integer")
        if value >= settings.max_length:
            raise InputError(f"field {name!r}: {name} ({value}) must be less than max_model_len ({settings.max_length}).")
    n = body.truncate_prompt_tokens
    if n is not None and n > settings.max_length:
        raise InputError(
            f"field 'truncate_prompt_tokens': truncate_prompt_tokens={n} cannot be greater than max_model_len = "
            f"{settings.max_length}. Please request a smaller truncation size."
        )
    if n == 0:
        raise InputError("field 'truncate_prompt_tokens': 0 tokens leave nothing to score (-1: the model's maximum)")


def _pair_error(message: str, body: RerankBody | ScoreBody) -> InputError:
    """``pair 3 field 'document': …`` (submit_pairs' words) as the request's own field."""
    import re

    m = re.match(r"^pair (\d+) field '(\w+)': (.*)$", message)
    if m is None:
        return InputError(message)
    i, name, msg = m.groups()
    if isinstance(body, RerankBody):
        return InputError(f"field 'query': {msg}" if name == "query" else f"field 'documents[{i}]': {msg}")
    first, second = body.form
    if name == "query":
        where = first if len(body.data_1) == 1 else f"{first}[{i}]"
    else:
        where = f"{second}[{i}]"
    return InputError(f"field {where!r}: {msg}")


def prepare(body: RerankBody | ScoreBody, query_id: str, settings: Settings) -> Scoring:
    """The request's pairs (one query id: one request), checked with submit_pairs' own checks and cut as
    vLLM cuts them; InputError names the field (``field 'documents[1]': …``)."""
    instruction = body.instruction
    if isinstance(body, RerankBody):
        try:
            check_rerank(body.query, body.documents, instruction, settings)  # /v1/rerank's checks and words
        except InputError as exc:
            raise _pair_error(str(exc), body) from None
        originals = [(body.query, d) for d in body.documents]
    else:
        d1, d2 = body.data_1, body.data_2
        if not d1:
            raise InputError(f"field {body.form[0]!r}: At least one text element must be given")
        if not d2:
            raise InputError(f"field {body.form[1]!r}: At least one text_pair element must be given")
        if len(d1) > 1 and len(d1) != len(d2):
            raise InputError(
                f"field {body.form[0]!r}: Input lengths must be either 1:1, 1:N or N:N ({len(d1)} and {len(d2)})"
            )
        originals = list(zip(d1 * len(d2) if len(d1) == 1 else d1, d2))
    pairs = [
        InlinePair(query_id=query_id, doc_id=str(i), query=q, document=d, instruction=instruction)
        for i, (q, d) in enumerate(originals)
    ]
    try:
        checked_pairs(pairs, None, settings)  # empty texts and character limits, before any tokenizing
    except InputError as exc:
        raise _pair_error(str(exc), body) from None
    _limits(body, settings)
    fit = body.truncate_prompt_tokens if body.truncate_prompt_tokens not in (None, -1) else None
    if fit is not None and fit >= settings.max_length:
        fit = None  # the model's maximum: the recipe fits every prompt into it already, cutting the document only
    cuts = body.max_tokens_per_query or body.max_tokens_per_doc or fit is not None
    tokens = _tokens(settings) if cuts else None
    if cuts and tokens is None:
        raise InputError(
            "field 'truncate_prompt_tokens': max_tokens_per_query, max_tokens_per_doc and truncate_prompt_tokens "
            "need the model's tokenizer on this host (RERANKQ_MODEL's files)"
        )
    if cuts:
        pairs = [_cut(p, body, tokens, fit) for p in pairs]
    documents = body.documents if isinstance(body, RerankBody) else body.data_2
    return Scoring(body, pairs, list(documents), settings)


def _cut(pair: InlinePair, body: RerankBody | ScoreBody, tokens: Any, fit: int | None) -> InlinePair:
    query, document = pair.query, pair.document
    if body.max_tokens_per_query:
        query = tokens.truncate(query, body.max_tokens_per_query)
    if body.max_tokens_per_doc:
        document = tokens.truncate(document, body.max_tokens_per_doc)
    if fit is not None:
        try:
            document = tokens.fit(query, document, pair.instruction, fit, body.truncation_side)
        except ValueError as exc:
            raise InputError(f"field 'truncate_prompt_tokens': {exc}") from None
    if not query or not document:
        which = "max_tokens_per_query" if not query else "max_tokens_per_doc"
        raise InputError(f"field {which!r}: leaves an empty text to score")
    return pair.model_copy(update={"query": query, "document": document})


# --- responses -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scored:
    """One pair's result: its position in the request, P(yes) and its log-odds."""

    index: int
    score: float | None
    logit: float | None


def rerank_response(scoring: Scoring, ranked: list[Scored], model: str, response_id: str, url: str) -> dict:
    """vLLM's RerankResponse, best first (``ranked`` is), ``top_n`` of them. Every result carries its
    ``document``, as vLLM's RerankResult requires, except on Cohere's /v2/rerank with
    ``return_documents: false`` (Cohere leaves it out)."""
    body = scoring.body
    assert isinstance(body, RerankBody)
    top = ranked[: body.top_n] if body.top_n else ranked
    drop = url.endswith("/v2/rerank") and not body.return_documents
    results = []
    for r in top:
        item: dict = {"index": r.index, "relevance_score": body.relevance(r.score, r.logit)}
        if not drop:
            item["document"] = {"text": scoring.documents[r.index]}
        results.append(item)
    used = scoring.prompt_tokens()
    return {"id": response_id, "model": model, "usage": {"prompt_tokens": used, "total_tokens": used}, "results": results}


def score_response(scoring: Scoring, scored: list[Scored], model: str, response_id: str) -> dict:
    """vLLM's ScoreResponse: one score per pair, in the request's order."""
    import time

    data = [
        {"index": r.index, "object": "score", "score": scoring.body.relevance(r.score, r.logit)}
        for r in sorted(scored, key=lambda r: r.index)
    ]
    used = scoring.prompt_tokens()
    return {
        "id": response_id, "object": "list", "created": int(time.time()), "model": model, "data": data,
        "usage": {"prompt_tokens": used, "total_tokens": used, "completion_tokens": 0},
    }  # fmt: skip
