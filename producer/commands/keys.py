"""`producer keys create | list | revoke` and `producer audit`: the service's API keys and who did what.

Run on a host that reaches the ledger (the operator's): a key is printed once, at creation, and only its
SHA-256 is kept (rerankq/store/keys.py)."""

from __future__ import annotations

import dataclasses
import getpass
import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from producer.commands.common import JsonFlag, friendly, out, say, utc, visible


def _stores() -> tuple:
    from rerankq.settings import get_settings
    from rerankq.store.audit import AuditLog
    from rerankq.store.keys import KeyStore

    settings = get_settings()
    return KeyStore(settings.database, settings.connect_timeout), AuditLog(settings.database, settings.connect_timeout, check=False)


def _operator():  # noqa: ANN202 - an Actor (imported lazily)
    from rerankq.store.actor import SCOPES, Actor

    return Actor(None, f"cli:{getpass.getuser()}", None, frozenset(SCOPES))


def audit_cli(action: str, object_id: str) -> None:
    """The CLI's changes in the audit trail too: by ``cli:<user>``, of no tenant (the operator)."""
    _, audit = _stores()
    audit.record(_operator(), action, object_id)


@friendly
def create(
    name: Annotated[str, typer.Argument(help="who holds the key, e.g. search-team (unique)")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="read, submit, admin or metrics (GET /metrics only); repeat for several [default: read and submit]")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="the tenant whose objects it sees and makes [default: NAME]")] = None,
) -> None:
    """A new key, printed once on stdout (only its digest is kept): give it to the client now."""
    from producer.errors import InputError
    from rerankq.store.keys import KeyError_

    keys, audit = _stores()
    scopes = [s.strip() for item in (scope or ["read", "submit"]) for s in item.split(",") if s.strip()]
    try:
        key, row = keys.create_key(name, scopes, tenant)
    except KeyError_ as exc:
        raise InputError(str(exc)) from None
    audit.record(_operator(), "key.create", row.id)
    say(f"key {row.id} ({row.name}): tenant {row.tenant}, scopes {', '.join(row.scopes)}. It is shown only now:")
    print(key)


@friendly
def list_keys(
    revoked: Annotated[bool, typer.Option("--revoked", help="include revoked keys")] = False, as_json: JsonFlag = False
) -> None:
    """Keys by id, name, tenant and scopes (never the key itself), with when each was last used."""
    keys, _ = _stores()
    rows = keys.keys(revoked=revoked)
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], default=str, indent=2))
        return
    table = Table("id", "name", "tenant", "scopes", "created", "last used", "revoked")
    table.columns[0].no_wrap = True  # ids are copied whole
    for r in rows:
        table.add_row(*(Text(visible(v, lines=False)) for v in (r.id, r.name, r.tenant, ",".join(r.scopes), utc(r.created_at), utc(r.last_used_at), utc(r.revoked_at))))
    out.print(table)


@friendly
def revoke(name: Annotated[str, typer.Argument(help="the key's name or id")]) -> None:
    """Revoked at once: its requests get 401 and its console sessions end."""
    from producer.errors import InputError
    from rerankq.store.keys import KeyError_

    keys, audit = _stores()
    try:
        row = keys.revoke(name)
    except KeyError_ as exc:
        raise InputError(str(exc)) from None
    audit.record(_operator(), "key.revoke", row.id)
    say(f"key {row.id} ({row.name}) revoked")


@friendly
def audit_trail(
    limit: Annotated[int, typer.Option(min=1, help="events, newest first")] = 50,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's events")] = None,
    action: Annotated[str | None, typer.Option(help="only this action, e.g. job.cancel")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Who (key id and name, tenant, client address) submitted, cancelled, deleted or retried what, and when."""
    _, audit = _stores()
    rows = audit.events(limit, tenant=tenant, action=action)
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], default=str, indent=2))
        return
    table = Table("when", "action", "object", "key", "tenant", "client")
    for r in rows:
        key = f"{r.key_id or '-'} ({r.key_name})"
        table.add_row(*(Text(visible(v, lines=False)) for v in (utc(r.at), r.action, r.object_id or "", key, r.tenant or "-", r.client or "")))
    out.print(table)
