"""The audit trail: who (key id and name, tenant, client address) submitted, cancelled, deleted or
retried what, and when. Rows are only ever added; `producer audit` and GET /v1/audit (admin) read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from rerankq.store.actor import Actor, tenant_filter
from rerankq.store.base import LedgerBase
from rerankq.store.clock import aware, now
from rerankq.store.models import AuditEvent


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: datetime
    key_id: str | None
    key_name: str
    tenant: str | None
    action: str
    object_id: str | None
    client: str | None


class AuditLog(LedgerBase):
    def record(self, actor: Actor, action: str, object_id: str | None, client: str | None = None) -> None:
        with self.session.begin() as s:
            s.add(
                AuditEvent(
                    at=now(), key_id=actor.key_id, key_name=actor.name, tenant=actor.tenant, action=action,
                    object_id=object_id, client=client,
                )
            )  # fmt: skip

    def events(
        self, limit: int = 100, tenant: str | None = None, action: str | None = None, viewer: Actor | None = None
    ) -> list[AuditRow]:
        """Newest first; ``viewer`` (a non-admin key) sees only its tenant's events."""
        stmt = select(AuditEvent).where(*tenant_filter(AuditEvent.tenant, viewer)).order_by(AuditEvent.id.desc()).limit(limit)
        if tenant is not None:
            stmt = stmt.where(AuditEvent.tenant == tenant)
        if action is not None:
            stmt = stmt.where(AuditEvent.action == action)
        with self.session() as s:
            return [
                AuditRow(aware(e.at), e.key_id, e.key_name, e.tenant, e.action, e.object_id, e.client)  # type: ignore[arg-type]
                for e in s.scalars(stmt)
            ]
