"""The audit trail: who (key id and name, tenant, client address) submitted, cancelled, deleted or
retried what, and when. Rows are only ever added, and removed only by age (`producer prune --audit-older-than`);
`producer audit` and GET /v1/audit (admin) read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

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

    def prune(self, older_than: float, dry_run: bool = False) -> tuple[int, datetime]:
        """Remove (or with ``dry_run`` count) the events older than ``older_than`` seconds: (count, cutoff)."""
        cutoff = now() - timedelta(seconds=older_than)
        with self.session.begin() as s:
            if dry_run:
                return s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.at < cutoff)) or 0, cutoff
            return s.execute(delete(AuditEvent).where(AuditEvent.at < cutoff)).rowcount or 0, cutoff
