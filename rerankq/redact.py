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
# scheme://user:secret@ : the user part stops at the URL's delimiters, the secret at whitespace or '@'
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^@\s]*@")
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
    """A database or broker URL (or libpq DSN) as it may be shown: its password masked, the rest kept."""
    return mask_secrets(str(url))
