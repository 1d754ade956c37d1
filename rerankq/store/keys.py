"""API keys and console sessions in the ledger.

A key is ``rq_<id>_<secret>``: ``id`` (12 hex digits) is the part `producer keys list` shows and the
audit trail names; ``secret`` is 32 random bytes. Only SHA-256 of the whole key is stored: with 256
bits of entropy a fast hash is as safe as a slow one (no dictionary to try), and it lets every
request check its key in microseconds. Digests are compared in constant time.

A console session is a random token in an HttpOnly cookie; the ledger keeps its SHA-256 and the key
it was opened with, so revoking the key ends its sessions too."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from rerankq.store.actor import SCOPES, Actor
from rerankq.store.base import LedgerBase
from rerankq.store.clock import aware, now
from rerankq.store.models import ApiKey, LoginSession

PREFIX = "rq_"
_KEY = re.compile(r"rq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
ENV_KEY_NAME = "RERANKQ_API_KEY"


class KeyError_(ValueError):  # noqa: N801 - not the builtin KeyError
    """A key that cannot be created or revoked, worded for the user."""


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    name: str
    tenant: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def env_key_id(key: str) -> str:
    """RERANKQ_API_KEY's id in sessions and the audit trail: changing the key ends its sessions."""
    return "env:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def env_actor(key: str) -> Actor:
    """RERANKQ_API_KEY: one admin key of no tenant (the operator), kept for compatibility."""
    return Actor(env_key_id(key), ENV_KEY_NAME, None, frozenset(SCOPES))


def _row(k: ApiKey) -> KeyRow:
    return KeyRow(k.id, k.name, k.tenant, list(k.scopes), aware(k.created_at), aware(k.last_used_at), aware(k.revoked_at))


def _actor(k: ApiKey) -> Actor:
    return Actor(k.id, k.name, k.tenant, frozenset(k.scopes))


class KeyStore(LedgerBase):
    # --- keys --------------------------------------------------------------------------------
    def create_key(self, name: str, scopes: list[str], tenant: str | None = None) -> tuple[str, KeyRow]:
        """A new key (returned once, never stored) and its row; ``tenant`` defaults to the key's name."""
        tenant = tenant or name
        for what, value in (("name", name), ("tenant", tenant)):
            if not NAME.match(value):
                raise KeyError_(f"{what} {value!r}: letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise KeyError_(f"scopes {unknown or scopes}: choose among {', '.join(SCOPES)}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = f"{PREFIX}{key_id}_{secret}"
        row = ApiKey(
            id=key_id, name=name, tenant=tenant, scopes=sorted(set(scopes), key=SCOPES.index), digest=digest(key),
            created_at=now(),
        )  # fmt: skip
        try:
            with self.session.begin() as s:
                s.add(row)
        except IntegrityError:
            raise KeyError_(f"a key named {name!r} exists already (names stay taken after a revoke)") from None
        return key, _row(row)

    def keys(self, revoked: bool = False) -> list[KeyRow]:
        with self.session() as s:
            stmt = select(ApiKey).order_by(ApiKey.created_at)
            if not revoked:
                stmt = stmt.where(ApiKey.revoked_at.is_(None))
            return [_row(k) for k in s.scalars(stmt)]

    def revoke(self, name_or_id: str) -> KeyRow:
        """Revoked at once: its requests get 401 and its console sessions end."""
        with self.session.begin() as s:
            key = s.scalar(select(ApiKey).where((ApiKey.name == name_or_id) | (ApiKey.id == name_or_id)))
            if key is None:
                raise KeyError_(f"no key named {name_or_id!r} (see `producer keys list`)")
            if key.revoked_at is None:
                key.revoked_at = now()
            s.execute(delete(LoginSession).where(LoginSession.key_id == key.id))
            return _row(key)

    def any_key(self) -> bool:
        """Whether any key is in force (then every request needs one)."""
        with self.session() as s:
            return s.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def authenticate(self, key: str) -> Actor | None:
        """The actor of a key in force; None for anything else (same work whether the id exists or not)."""
        match = _KEY.match(key)
        given = digest(key)
        with self.session() as s:
            row = s.get(ApiKey, match.group(1)) if match else None
            stored = row.digest if row is not None and row.revoked_at is None else b"\0" * 32
            if not hmac.compare_digest(given, stored) or row is None:
                return None
            return _actor(row)

    def touch(self, key_id: str) -> None:
        """``last_used_at``, at most once a minute per key (a write per request would serialize them)."""
        t = now()
        with self.session.begin() as s:
            s.execute(
                update(ApiKey).where(
                    ApiKey.id == key_id, (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < t - timedelta(minutes=1))
                ).values(last_used_at=t)
            )  # fmt: skip

    # --- console sessions --------------------------------------------------------------------
    def open_session(self, key_id: str, seconds: float) -> str:
        """A new session token for the cookie (its digest is what the ledger keeps); expired ones are dropped."""
        token, t = secrets.token_urlsafe(32), now()
        with self.session.begin() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < t))
            s.add(LoginSession(digest=digest(token), key_id=key_id, created_at=t, expires_at=t + timedelta(seconds=seconds)))
        return token

    def session_actor(self, token: str, env_key: str | None) -> Actor | None:
        """The actor a session token stands for while it and its key are in force."""
        with self.session() as s:
            row = s.get(LoginSession, digest(token))
            if row is None or aware(row.expires_at) <= now():
                return None
            if row.key_id.startswith("env:"):
                return env_actor(env_key) if env_key and hmac.compare_digest(env_key_id(env_key), row.key_id) else None
            key = s.get(ApiKey, row.key_id)
            return _actor(key) if key is not None and key.revoked_at is None else None

    def close_session(self, token: str) -> None:
        with self.session.begin() as s:
            s.execute(delete(LoginSession).where(LoginSession.digest == digest(token)))
