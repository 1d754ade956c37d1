"""Time in the ledger: timestamps are UTC, SQLite hands them back naive, and a worker counts as
alive by how long it has been silent. Every store module needs these; they need nothing."""

from __future__ import annotations

from datetime import UTC, datetime

GONE = ("stopped", "failed")  # states a worker reports as it exits: not alive, whatever its last beat


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they were written in UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def presumed_alive(reported_state: str | None, last_seen: datetime | None, dead_after: float, at: datetime) -> bool:
    """A worker is alive unless it said it stopped (or failed to load its engine) or has been silent for
    more than ``dead_after`` s."""
    seen = aware(last_seen)
    return seen is not None and reported_state not in GONE and (at - seen).total_seconds() <= dead_after
