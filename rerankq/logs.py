"""Structured (JSON) logs for producer and worker; secrets never reach them (URLs are printed masked).

One handler on the root logger renders every record the same way: rerankq's structlog events and the
stdlib records of Celery, vLLM, transformers and the ``warnings`` module (vLLM is told not to install a
handler of its own). What bypasses logging altogether (C++ libraries, a crash) is wrapped by
``worker/stdio_json.py`` in the worker.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

from rerankq.redact import mask_secrets

# vLLM warns this at start-up for every Qwen3-Reranker served without its --chat-template. It does not
# apply here: rerankq builds the prompt's token ids itself, exactly as the model card does
# (rerankq/prompt.py), and vLLM only ever receives token ids, never text to template.
_SUPPRESSED = ("Serving an original Qwen3 reranker",)
# Repeated noise, logged the first time only: vLLM's CPU worker says this on every set_num_threads call.
_ONCE = ("CPU backend doesn't allow to use",)

_handler: logging.Handler | None = None
_stream: TextIO | None = None  # where the handler writes: the first stream given, else sys.stderr


def _masked(_logger: object, _name: str, event_dict: dict) -> dict:
    """Every text value of every record (rerankq's and the libraries') with its passwords masked:
    a driver's error or a library's message may carry a connection URL (rerankq/redact.py)."""
    return {k: mask_secrets(v) if isinstance(v, str) else v for k, v in event_dict.items()}


class _Quiet(logging.Filter):
    """Drops the warnings above that do not apply, and lets the repeated ones through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        if msg.startswith(_SUPPRESSED):
            return False
        if msg.startswith(_ONCE):
            key = (record.name, msg)
            if key in self.seen:
                return False
            self.seen.add(key)
        return True


def configure_logging(level: str = "INFO", json: bool = True, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging through one root handler. Idempotent: called again, it
    replaces its own handler only, on the stream given first when none is given."""
    global _handler, _stream
    _stream = stream or _stream
    # vLLM reads this when it is imported: without it, vLLM installs its own plain-text handler.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    shared = [
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    numeric = logging.getLevelName(level.upper())
    numeric = numeric if isinstance(numeric, int) else logging.INFO
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _masked,
                renderer,
            ],
        )
    )
    handler.addFilter(_Quiet())
    # vLLM, when imported before this ran, installed a plain-text handler of its own: route it here too.
    vllm = logging.getLogger("vllm")
    for own in list(vllm.handlers):
        vllm.removeHandler(own)
    vllm.propagate = True
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Alembic narrates every revision check at INFO (plugins, "Context impl ..."): nothing for an operator.
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    _handler = handler
    logging.captureWarnings(True)  # the warnings module's lines become records too


# A library's manners: rerankq's records reach a console only once an application configures logging
# (configure_logging in the CLI, the worker and the service, or the user's own logging.basicConfig).
logging.getLogger("rerankq").addHandler(logging.NullHandler())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger over the stdlib logger ``name`` (not structlog's default print-to-stdout logger,
    which would talk on a Python API user's console)."""
    return structlog.wrap_logger(logging.getLogger(name))
