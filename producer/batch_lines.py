"""Batch file lines (``vllm run-batch``'s format): each line read and checked on its own, with vLLM's
semantics, into a good line (one request's inline pairs, query id = the line's number) or a bad one
(its line, field and HTTP status, for the error file). As in vLLM, each line is routed by its own
url (any path ending in /rerank or /score: a file may mix them) and ``custom_id`` is any string, repeats
allowed (output lines follow input lines, so a repeat is never ambiguous). The request itself is read
by producer/scoring.py, as the service reads it. See producer/batch_files.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from producer.errors import InputError
from producer.scoring import Scoring, prepare, route
from rerankq.routing import normalize_model, resolve_model
from rerankq.settings import Settings
from schemas import InlinePair, RerankBody
from schemas.rerank_body import ScoreBody

ENDPOINTS = ("/v1/rerank", "/v1/score")  # the batch endpoints named in OpenAI's API; any */rerank or */score works
MAX_ERRORS = 50  # in a batch's ``errors`` when no line could run
_FIELD_ERROR = re.compile(r"^field '([\w.\[\]]+)': (.*)$", re.S)


def known_url(url: str) -> bool:
    """A url vLLM's run-batch routes to scoring: any path ending in /rerank or /score."""
    return route(url) is not None


# --- the lines --------------------------------------------------------------------------------
class _Line(BaseModel):
    model_config = ConfigDict(extra="ignore")

    custom_id: StrictStr
    method: StrictStr
    url: StrictStr
    body: dict


@dataclass(frozen=True, slots=True)
class GoodLine:
    number: int  # 0-based physical line; the job's query id is ``query_id(number)``
    custom_id: str
    url: str
    body: RerankBody | ScoreBody
    pairs: list[InlinePair]
    scoring: Scoring | None = None
    model: str | None = None  # the model name the line gave (responses answer with it)


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    custom_id: str | None
    param: str
    message: str
    status: int = 400  # the HTTP status vLLM gives: 400 a bad request, 404 a model it does not serve


def query_id(number: int) -> str:
    """Zero-padded, so the ledger's byte order of query ids is the file's order of lines."""
    return f"{number:09d}"


def _field_error(exc: ValidationError, prefix: str) -> tuple[str, str]:
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = [str(p) for p in err["loc"]]
    if not loc and (m := re.match(r"^(text_1|text_2|queries|documents|items|data_1|data_2): (.*)$", msg, re.S)):
        loc, msg = [m.group(1)], m.group(2)  # a score form's side, named by its validator
    param = ".".join([prefix, *loc]) if prefix else ".".join(loc)
    return param or prefix, msg


class LineReader:
    """Checks each line on its own. A batch is one job, pinned to one model: the first good line that names
    a model fixes it (``endpoint`` is the batch's declared endpoint; lines are routed by their own url)."""

    def __init__(self, settings: Settings, endpoint: str | None = None, workers: Iterable | None = None):
        self.settings, self.endpoint = settings, endpoint
        self.model: str | None = None
        self._workers = workers

    def _resolve(self, name: str) -> str:
        if self._workers is None:  # the registry, read once: workers serving a model under another name
            self._workers = _seen_workers(self.settings)
        return resolve_model(name, self.settings.model, self.settings.served_model_name, self._workers)

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

        def bad(param: str, msg: str, status: int = 400) -> BadLine:
            return BadLine(number, cid, param, f"{where} (custom_id {cid!r}) field {param!r}: {msg}", status)

        if line.method.upper() != "POST":
            return bad("method", f"{line.method!r}: only POST")
        kind = route(line.url)
        if kind is None:
            return bad("url", f"{line.url!r}: expected a path ending in /rerank or /score (e.g. /v1/rerank, /v1/score)")
        try:
            body = (RerankBody if kind == "rerank" else ScoreBody).model_validate(line.body)
        except ValidationError as exc:
            return bad(*_field_error(exc, "body"))
        model = self._resolve(body.model) if body.model else None
        pinned = self.model or normalize_model(self.settings.model)
        if model is not None and self.model is not None and model != self.model:
            return bad(
                "body.model", f"The model `{body.model}` does not exist: this batch is scored by {pinned} (one model per batch)", 404
            )
        settings = self.settings if model is None else self.settings.model_copy(update={"model": model})
        try:
            scoring = prepare(body, query_id(number), settings)
        except InputError as exc:
            m = _FIELD_ERROR.match(str(exc))
            if m is None:
                return bad("body", str(exc))
            return bad(f"body.{m.group(1)}", m.group(2))
        if model is not None:
            self.model = model
        return GoodLine(number, cid, line.url, body, scoring.pairs, scoring, body.model)


def _seen_workers(settings: Settings) -> list:
    """The workers seen lately, live ones first (the registry's order): a name a worker served resolves the
    same way when the output is written after the workers stopped. None when the ledger cannot say."""
    try:
        from producer.workers import seen_workers

        return seen_workers(settings)
    except Exception:  # noqa: BLE001 - routing by name still works; the submission reports a missing database itself
        return []
