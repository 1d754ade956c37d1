"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` headers, made with the ``standardwebhooks`` package so
any receiver's own verifier (OpenAI's SDK, Svix, ``standardwebhooks``) accepts them."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def check_secret(secret: str) -> None:
    """``whsec_`` then base64 of at least 16 bytes (the spec asks for 24-64); else ValueError, secret unsaid."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("RERANKQ_WEBHOOK_SECRET must start with whsec_ (whsec_ + base64 of 24-64 random bytes)")
    try:
        encoded = secret[len(SECRET_PREFIX) :].rstrip("=")
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("RERANKQ_WEBHOOK_SECRET: the part after whsec_ is not base64") from None
    if len(raw) < 16:
        raise ValueError(f"RERANKQ_WEBHOOK_SECRET: {len(raw)} bytes of key, at least 16 needed (24-64 recommended)")


def signed_headers(secret: str, msg_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    """The three headers for one attempt: signed at the attempt's time (receivers refuse stale timestamps)."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }
