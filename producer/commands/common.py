"""What every command shares: the two consoles (results on stdout, everything else on stderr),
the JOB argument, and the one-line `error:` for failures we know (exit 3).

Both consoles print every string inertly (issue 25): job names, batch metadata, model names and errors
come from users, so Rich markup in them stays text (``[link=...]`` makes no hyperlink) and control
characters (ESC, BEL, C1, bidi overrides) are shown as escapes (``\x1b``) instead of clearing the
screen or setting the window title. Passwords in what `say` prints are masked (rerankq/redact.py)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.console import Console

# DEL, C1 and the bidi controls that reorder what is shown (Trojan Source); with C0 but tab and newline,
# or (_ONE_LINE) all of C0
_OTHER = r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(rf"[\x00-\x08\x0b-\x1f{_OTHER}]")
_ONE_LINE = re.compile(rf"[\x00-\x1f{_OTHER}]")


def visible(value: str, lines: bool = True) -> str:
    """``value`` with each control character written as its escape (``\x1b``); ``lines=False``
    escapes tabs and newlines too (a name on one table line)."""
    pattern = _CONTROL if lines else _ONE_LINE
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


class InertConsole(Console):
    """A Rich console that shows every string as text: markup is never read, controls are escaped."""

    def render_str(self, text: str, **options):  # noqa: ANN003, ANN201 - Rich's own signature
        options["markup"] = False
        return super().render_str(visible(text), **options)


out = InertConsole()
err = InertConsole(stderr=True)
ERROR_EXIT = 3
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="a job id, or a unique prefix of one (as with git)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of a table (for scripts)")]

F = TypeVar("F", bound=Callable)


def say(line: str) -> None:
    """A line for the person at the terminal (stderr: stdout holds only results), passwords masked."""
    from rerankq.redact import mask_secrets

    err.print(mask_secrets(line), markup=False, highlight=False, soft_wrap=True)  # err escapes controls


def friendly(fn: F) -> F:
    """Known failures print one clear line (no traceback, no credentials) and exit 3."""

    @functools.wraps(fn)
    def run(*args, **kwargs):  # noqa: ANN202
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # a database or broker failure we did not word: still no URL in it
            if isinstance(exc, typer.Exit):
                raise
            # imported only on failure: a read-only command must not pay for pyarrow or the tokenizer
            from producer.errors import BrokerUnavailable, InputError
            from rerankq.manifest_source import ManifestError
            from rerankq.store.db import DatabaseError
            from rerankq.store.errors import UnknownJob

            if isinstance(exc, (BrokerUnavailable, InputError, ManifestError, DatabaseError, UnknownJob, TimeoutError)):
                say(f"error: {exc.args[0] if exc.args else exc}")
                raise typer.Exit(ERROR_EXIT) from None
            from sqlalchemy.exc import DBAPIError

            if isinstance(exc, DBAPIError):
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
                say(f"error: database: {reason}")
                raise typer.Exit(ERROR_EXIT) from None
            raise

    return run  # type: ignore[return-value]


def ago(when: datetime) -> str:
    """``12 s ago``, ``5 min ago``."""
    seconds = max(0.0, (datetime.now(UTC) - when).total_seconds())
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def utc(value: datetime | None) -> str:
    """A ledger timestamp to the second, in UTC (microseconds say nothing to a person)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""
