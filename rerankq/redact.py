"""Passwords out of everything shown: one masking for every URL and DSN form, used wherever a URL or
a driver's error reaches a log line, an error message or a command's output (issue 25: a libpq
``?password=`` was printed in an error).

Masked forms, anywhere in a text: ``scheme://user:PASSWORD@host`` and ``redis://:PASSWORD@host``
(the user name is kept: it tells which account), and ``password=VALUE`` (also ``passwd``, ``pwd``,
``sslpassword``) as a URL's query parameter or a libpq ``key=value`` DSN's entry, quoted or not.
It errs on the side of hiding: a URL with ``:`` then ``@`` in its path loses that part too."""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:secret@host : the user stops at the URL's delimiters; the secret runs to the last '@' before
# the host (an unencoded '@' or '/' in a password, as SQLAlchemy reads it); one already masked (**) stays
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?!\*+@)\S*@(?=[^@\s/]*(?:[/?#\s]|$))")
# password=secret as a query parameter (&, #, whitespace or a sentence's ': ' ends it) or a libpq entry ('quoted')
_KEY_VALUE = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_])(?:password|passwd|pwd|sslpassword)\s*=\s*)"
    r"(?:'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s&#;'\"]+?(?=:\s|:$|[\s&#;'\"]|$))",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """``text`` with every password of a URL or DSN in it replaced by ``***``."""
    if ":" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}", text)


def mask_url(url: str) -> str:
    """A database URL (or libpq DSN) as it may be shown: its password masked, the rest kept."""
    return mask_secrets(str(url))


def mask_broker_url(url: str) -> str:
    """A broker URL as it may be shown: as Kombu itself masks it (``redis://:**@host``, what Celery's own
    messages show), and any password Kombu leaves (``?password=``) masked too."""
    from kombu.utils.url import maybe_sanitize_url

    return mask_secrets(maybe_sanitize_url(str(url)))
