"""Who is acting: the API key behind a request, its tenant and scopes (rerankq/store/keys.py).

The service sets ``acting`` for the length of a request, so every row the request creates (a job, its
batch, an uploaded file) is its tenant's without each layer passing it down: ``owner_of_new()`` is read
where those rows are made (rerankq/store/jobs.py, rerankq/store/batches.py). Outside a request (the CLI,
workers) nobody acts and rows belong to no tenant: the operator's, seen by admin keys only."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import false

SCOPES = ("read", "submit", "admin", "metrics")  # metrics: GET /metrics only (a Prometheus scraper's key)


@dataclass(frozen=True, slots=True)
class Actor:
    key_id: str | None  # None: no key at all (an open service)
    name: str  # the key's name, as the audit trail shows it
    tenant: str | None  # None: the operator's (RERANKQ_API_KEY, an open service)
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    def sees(self, owner: str | None) -> bool:
        """Admin keys see every tenant's objects; any other key only its own tenant's."""
        return self.admin or (self.tenant is not None and owner == self.tenant)


OPEN = Actor(None, "anonymous", None, frozenset(SCOPES))  # a service with no key: everyone is the operator
acting: ContextVar[Actor | None] = ContextVar("rerankq_acting", default=None)


def owner_of_new() -> str | None:
    """The tenant that owns a row created now (None outside a request, or for the operator)."""
    actor = acting.get()
    return actor.tenant if actor is not None else None


def tenant_filter(column: object, actor: Actor | None) -> list:
    """SQL conditions restricting ``column`` (an owner column) to what ``actor`` sees; none for admins."""
    if actor is None or actor.admin:
        return []
    if actor.tenant is None:
        return [false()]
    return [column == actor.tenant]  # type: ignore[operator]
