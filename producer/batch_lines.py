"""Batch file lines (``vllm run-batch``'s format): each line read and checked on its own, with
/v1/rerank's and ``submit_pairs``' own checks, into a good line (one query's inline pairs, query id =
the line's number) or a bad one (its line and field, for the error file). See producer/batch_files.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from producer.errors import InputError
from producer.interactive import check_rerank
from producer.submission import checked_pairs
from rerankq.routing import normalize_model
from rerankq.settings import Settings
from schemas import InlinePair, RerankBody
from schemas.rerank_body import Activation

ENDPOINTS = ("/v1/rerank", "/v1/score")
MAX_ERRORS = 50  # in a batch's ``errors`` when no line could run
_PAIR_ERROR = re.compile(r"^pair (\d+) field '(\w+)': (.*)$")
_FIELD_ERROR = re.compile(r"^field '([\w.]+)': (.*)$")


# --- the lines --------------------------------------------------------------------------------
class _Line(BaseModel):
    model_config = ConfigDict(extra="ignore")

    custom_id: StrictStr
    method: StrictStr
    url: StrictStr
    body: dict


class ScoreLine(Activation):
    """vLLM's /v1/score request: ``text_1`` (queries) against ``text_2`` (documents), one to many or pairwise."""

    model_config = ConfigDict(extra="ignore")

    text_1: StrictStr | list[StrictStr]
    text_2: StrictStr | list[StrictStr]
    model: StrictStr | None = None
    instruction: StrictStr | None = None


@dataclass(frozen=True, slots=True)
class GoodLine:
    number: int  # 0-based physical line; the job's query id is ``query_id(number)``
    custom_id: str
    url: str
    body: RerankBody | ScoreLine
    pairs: list[InlinePair]


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    custom_id: str | None
    param: str
    message: str


def query_id(number: int) -> str:
    """Zero-padded, so the ledger's byte order of query ids is the file's order of lines."""
    return f"{number:09d}"


def _pairs(number: int, url: str, body: RerankBody | ScoreLine) -> list[InlinePair]:
    qid = query_id(number)
    if isinstance(body, RerankBody):
        return [
            InlinePair(query_id=qid, doc_id=str(i), query=body.query, document=d, instruction=body.instruction)
            for i, d in enumerate(body.documents)
        ]
    queries = [body.text_1] if isinstance(body.text_1, str) else body.text_1
    docs = [body.text_2] if isinstance(body.text_2, str) else body.text_2
    if len(queries) == 1:
        queries = queries * len(docs)
    if len(queries) != len(docs):
        raise InputError(f"body.text_1: {len(queries)} texts for {len(docs)} in text_2 (one, or as many)")
    return [
        InlinePair(query_id=qid, doc_id=str(i), query=q, document=d, instruction=body.instruction)
        for i, (q, d) in enumerate(zip(queries, docs))
    ]


def _field_error(exc: ValidationError, prefix: str) -> tuple[str, str]:
    err = exc.errors()[0]
    param = ".".join([prefix, *map(str, err["loc"])]) if prefix else ".".join(map(str, err["loc"]))
    return param, str(err["msg"]).removeprefix("Value error, ")


class LineReader:
    """Checks each line on its own; the first good line that names a model fixes the batch's model
    (a batch is one job, pinned to one model): a line naming another model fails."""

    def __init__(self, settings: Settings, endpoint: str | None = None):
        self.settings, self.endpoint = settings, endpoint
        self.model: str | None = None
        self.seen: dict[str, int] = {}

    def read(self, lines: Iterable[bytes]) -> Iterator[GoodLine | BadLine]:
        for number, raw in enumerate(lines):
            if raw.strip():
                yield self.line(number, raw)

    def line(self, number: int, raw: bytes) -> GoodLine | BadLine:
        where = f"line {number + 1}"
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return BadLine(number, None, "line", f"{where}: not a JSON object ({exc})")
        try:
            line = _Line.model_validate(data)
        except ValidationError as exc:
            param, msg = _field_error(exc, "")
            cid = data.get("custom_id") if isinstance(data, dict) and isinstance(data.get("custom_id"), str) else None
            return BadLine(number, cid, param, f"{where} field {param!r}: {msg}")
        cid = line.custom_id

        def bad(param: str, msg: str) -> BadLine:
            return BadLine(number, cid, param, f"{where} (custom_id {cid!r}) field {param!r}: {msg}")

        if cid in self.seen:
            return bad("custom_id", f"already used on line {self.seen[cid] + 1} (custom ids must be unique)")
        self.seen[cid] = number
        if line.method.upper() != "POST":
            return bad("method", f"{line.method!r}: only POST")
        if line.url not in ENDPOINTS:
            return bad("url", f"{line.url!r}: expected one of {', '.join(ENDPOINTS)}")
        if self.endpoint is not None and line.url != self.endpoint:
            return bad("url", f"{line.url!r}: this batch's endpoint is {self.endpoint}")
        try:
            body = (RerankBody if line.url == "/v1/rerank" else ScoreLine).model_validate(line.body)
        except ValidationError as exc:
            return bad(*_field_error(exc, "body"))
        if isinstance(body, RerankBody) and body.max_tokens_per_doc is not None:
            return bad("body.max_tokens_per_doc", "not supported in batch files (cut the documents in the file)")
        model = normalize_model(body.model) if body.model else None
        if model is not None and self.model is not None and model != self.model:
            return bad("body.model", f"{body.model!r}: this batch is scored by {self.model} (one model per batch)")
        try:
            if isinstance(body, RerankBody):  # /v1/rerank's own checks, then submit_pairs', line by line
                check_rerank(body.query, body.documents, body.instruction, self.settings)
            pairs = _pairs(number, line.url, body)
            checked_pairs(pairs, None, self.settings)
        except InputError as exc:
            param, msg = _pair_param(str(exc), body)
            return bad(param, msg)
        if model is not None:
            self.model = model
        return GoodLine(number, cid, line.url, body, pairs)


def _pair_param(message: str, body: RerankBody | ScoreLine) -> tuple[str, str]:
    """``pair 3 field 'document': …`` (submit_pairs' words) as the line's own field: ``body.documents[3]``."""
    m = _PAIR_ERROR.match(message)
    field = _FIELD_ERROR.match(message)
    if m is None and field is not None:  # check_rerank's words: field 'documents': …
        return f"body.{field.group(1)}", field.group(2)
    if m is None:
        return ("body.text_1" if message.startswith("body.text_1") else "body"), message.removeprefix("body.text_1: ")
    i, name, msg = m.groups()
    if isinstance(body, RerankBody):
        return ("body.query", msg) if name == "query" else (f"body.documents[{i}]", msg)
    if name == "query":
        return ("body.text_1" if isinstance(body.text_1, str) else f"body.text_1[{i}]"), msg
    return ("body.text_2" if isinstance(body.text_2, str) else f"body.text_2[{i}]"), msg
