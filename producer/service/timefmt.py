"""One timestamp format for every console page: UTC, ``2026-12-01 00:55:06 UTC``, with how long ago.

console.js writes the same strings (``rerankq.when``) when it refreshes a page, so a value looks the
same whether the server rendered it or the page's polling did."""

from __future__ import annotations

from datetime import UTC, datetime

from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def absolute(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(value: datetime, at: datetime | None = None) -> str:
    """``just now``, ``42 s ago``, ``3 min ago``, ``5 h ago``, ``2 days ago`` (a future time is ``just now``).

    From the second shown (``absolute``), so two times shown in the same second, against one ``at``, read
    alike: created and started in one second never read "45 s ago" and "47 s ago"."""
    seconds = ((at or datetime.now(UTC)) - _utc(value).replace(microsecond=0)).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def when(value: datetime | None, at: datetime | None = None) -> Markup:
    """A ``<time>`` element (``datetime`` in ISO 8601) showing the absolute time and how long ago (before
    ``at``, default now); ``–`` for none."""
    if value is None:
        return Markup('<span class="muted">–</span>')
    iso = _utc(value).isoformat()
    return Markup('<time datetime="{}">{} <span class="ago">({})</span></time>').format(
        escape(iso), absolute(value), relative(value, at)
    )


@pass_context
def when_on_page(context: Context, value: datetime | None) -> Markup:
    """The ``when`` filter of the console's templates: every time on one page is measured from one ``now``,
    taken at the first time rendered for the request (kept on ``request.state``)."""
    request = context.get("request")
    if request is None:
        return when(value)
    at = getattr(request.state, "page_now", None)
    if at is None:
        at = request.state.page_now = datetime.now(UTC)
    return when(value, at)
