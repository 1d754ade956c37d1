"""GET /v1/audit: the audit trail (admin keys only; producer/service/security.py), as `producer audit` prints it."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

router = APIRouter(prefix="/v1", tags=["audit"])


class AuditEntry(BaseModel):
    at: datetime
    key_id: str | None
    key_name: str
    tenant: str | None
    action: str
    object_id: str | None
    client: str | None


@router.get("/audit", response_model=list[AuditEntry])
def audit_trail(
    request: Request,
    limit: int = Query(100, ge=1, le=10_000),
    tenant: str | None = Query(None, description="only this tenant's events"),
    action: str | None = Query(None, description="e.g. job.cancel"),
) -> list[AuditEntry]:
    """Who submitted, cancelled, deleted or retried what, and when; newest first."""
    rows = request.app.state.audit.events(limit, tenant=tenant, action=action)
    return [AuditEntry(**{f: getattr(r, f) for f in AuditEntry.model_fields}) for r in rows]
