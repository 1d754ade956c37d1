"""One timestamp format for every console page: UTC, ``2026-12-01 00:55:06 UTC``, with how long ago.

console.js writes the same strings (``rerankq.when``) when it refreshes a page, so a value looks the
same whether the server rendered it or the page's polling did."""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup, escape


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def absolute(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(value: datetime, at: datetime | None = None) -> str:
    """``just now``, ``42 s ago``, ``3 min ago``, ``5 h ago``, ``2 days ago`` (a future time is ``just now``)."""
    seconds = ((at or datetime.now(UTC)) - _utc(value)).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def when(value: datetime | None) -> Markup:
    """A ``<time>`` element (``datetime`` in ISO 8601) showing the absolute time and how long ago; ``–`` for none."""
    if value is None:
        return Markup('<span class="muted">–</span>')
    iso = _utc(value).isoformat()
    return Markup('<time datetime="{}">{} <span class="ago">({})</span></time>').format(
        escape(iso), absolute(value), relative(value)
    )
