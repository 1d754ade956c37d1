"""The score cache's bookkeeping of use by generation, not by entry (issue 17: at 100M pairs a night,
rewriting each reused entry's ``last_used`` cost more than the night's scoring writes).

Every cache entry carries ``gen``: a UTC day number (days since 1970-01-01) at or after the day it was
written or last re-homed. Writes spread it over ``SPREAD_DAYS`` days ahead (``gen = today + jitter``),
so entries written together do not all come due together. An entry counts as used through the end of
its day ``gen``; past that, a generation counts as used when ``cache_generations.last_used`` says so.

* A submission that reuses entries marks their generations used: one row per generation (a few dozen),
  whatever the number of pairs reused, committed just before the job is (PostgreSQL; SQLite: in the job's
  transaction).
* After the job is committed, the reused entries whose generation is more than ``rehome_after`` old are
  re-homed: ``gen`` set to a fresh one. That is the only per-entry write, and thanks to the jitter each
  night rewrites only the slice of entries that came due (about 1 / (rehome_after + SPREAD_DAYS / 2)
  of the reused entries), never all of them; it lets the generations the live entries left go unused.
* ``producer cache prune --unused-for D`` deletes the generations neither of whose bounds is within D:
  day ``gen`` ended more than D ago, and no reuse marked it since. An entry reused within D has either
  kept its generation marked or moved to a younger one: nothing used within D is deleted. Unused
  entries are kept longer than D by up to ``SPREAD_DAYS`` plus the time their generation stays in use
  by other entries (at most ``rehome_after`` + ``SPREAD_DAYS`` days)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from rerankq.store.models import CacheGeneration

SPREAD_DAYS = 7
DAY = 86400


def day_of(t: datetime) -> int:
    """The UTC day number of ``t``."""
    return int(t.timestamp() // DAY)


def start_of(gen: int) -> datetime:
    return datetime.fromtimestamp(gen * DAY, tz=UTC)


def jittered_gen_sql(dialect: str, today: str = ":today") -> str:
    """A fresh generation per row, in SQL: ``today`` plus 0 … SPREAD_DAYS - 1 days at random."""
    if dialect == "postgresql":
        return f"({today} + floor(random() * {SPREAD_DAYS})::int)"
    return f"({today} + abs(random()) % {SPREAD_DAYS})"


def mark_used(s: Session | Connection, gens: Iterable[int], t: datetime) -> None:
    """Generations some reuse hit at ``t`` (in the reusing job's transaction)."""
    rows = [{"gen": int(g), "last_used": t} for g in sorted(set(gens))]
    if not rows:
        return
    dialect = s.get_bind().dialect.name if isinstance(s, Session) else s.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(CacheGeneration)
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=["gen"],
            set_={"last_used": stmt.excluded.last_used},
            where=CacheGeneration.last_used < stmt.excluded.last_used,
        ),
        rows,
    )
