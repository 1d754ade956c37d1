"""What a request's key sees and what it did: its actor (producer/service/security.py sets it), the
filter that list endpoints pass to the ledger, and the audit trail's rows."""

from __future__ import annotations

from fastapi import Request

from rerankq.store.actor import OPEN, Actor


def actor(request: Request) -> Actor:
    return getattr(request.state, "actor", OPEN)


def viewer(request: Request) -> Actor | None:
    """The actor to filter lists by; None when it sees every tenant's objects (an admin key, an open service)."""
    who = actor(request)
    return None if who.admin else who


def audit(request: Request, action: str, object_id: str | None) -> None:
    """One row of the audit trail: this request's key did ``action`` to ``object_id``."""
    client = request.client.host if request.client else None
    request.app.state.audit.record(actor(request), action, object_id, client)
