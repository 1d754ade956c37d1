"""A job cut into independent pieces by ranges of query_id (in byte order, the export's order).

Ranks are per query, so a query's rows never straddle two pieces and every piece ranks, exports or
compares on its own. Ranges are contiguous in the export's order: the pieces' outputs, one after the
other, are the single-process output row for row. Where the cuts fall only balances the work (a
sample of the jobs' pairs, rerankq/store/reads.py); it never changes a row."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement

from rerankq.store.ledger import Ledger


@dataclass(frozen=True, slots=True)
class Piece:
    """Query ids ``lo <= q < hi`` in byte order; ``None`` is unbounded on that side."""

    index: int
    lo: str | None = None
    hi: str | None = None

    def sql(self, column: str, dialect: str) -> tuple[str, dict[str, str]]:
        """A condition on ``column`` (text SQL, ``AND``-joined, ``1 = 1`` for the whole range) and its parameters."""
        c = f'{column} COLLATE "C"' if dialect == "postgresql" else column  # SQLite's BINARY is byte order
        parts, params = [], {}
        if self.lo is not None:
            parts.append(f"{c} >= :piece_lo")
            params["piece_lo"] = self.lo
        if self.hi is not None:
            parts.append(f"{c} < :piece_hi")
            params["piece_hi"] = self.hi
        return " AND ".join(parts) or "1 = 1", params

    def where(self, column: ColumnElement, dialect: str) -> list[ColumnElement]:
        """The same condition as SQLAlchemy clauses."""
        c = column.collate("C") if dialect == "postgresql" else column
        return [*([c >= self.lo] if self.lo is not None else []), *([c < self.hi] if self.hi is not None else [])]


WHOLE = Piece(0)


def byte_key(query_id: str) -> bytes:
    """The order PostgreSQL's "C" collation and SQLite's BINARY compare text in (UTF-8 bytes)."""
    return query_id.encode("utf-8", "surrogatepass")


def cut(sample: list[str], pieces: int) -> list[Piece]:
    """``pieces`` ranges (fewer when the sample has fewer distinct ids) holding about equal shares of
    the sampled pairs; the first is open below and the last open above, so together they cover every
    query id, sampled or not."""
    ordered = sorted(sample, key=byte_key)
    bounds: list[str] = []
    for i in range(1, max(pieces, 1)):
        if not ordered:
            break
        b = ordered[len(ordered) * i // pieces]
        if (not bounds or byte_key(b) > byte_key(bounds[-1])) and byte_key(b) > byte_key(ordered[0]):
            bounds.append(b)
    edges: list[str | None] = [None, *bounds, None]
    return [Piece(i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def plan(store: Ledger, job_ids: list[str], pieces: int) -> list[Piece]:
    """``pieces`` query-id ranges over the jobs' scores (one, the whole job, when asked for one)."""
    if pieces <= 1:
        return [WHOLE]
    return cut(store.query_id_sample(job_ids, size=max(2_000, 500 * pieces)), pieces)
