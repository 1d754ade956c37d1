"""Where webhooks may be sent. A notify URL comes from a client: unchecked, it makes every worker send
requests to any internal host and port (Redis, a cloud metadata service, an admin page). So, as Svix does
by default: loopback, private, link-local, shared, multicast, reserved and unspecified addresses are
refused unless the operator allow-lists them (``RERANKQ_WEBHOOK_ALLOW``: host names, addresses, CIDRs),
in any spelling (``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``: they are resolved, then judged).

Checked at submission (``check_webhook_url``, the one check the CLI, the Python API and the service
share) and again by the sender before every attempt (``resolve_checked``), whose connection then goes
to the very address checked: a DNS answer that changes in between (rebinding) cannot move it."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "RERANKQ_WEBHOOK_ALLOW"
MAX_URL_CHARS = 2048
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """A URL no attempt can ever deliver to (wrong scheme, credentials, unparseable): refused for good."""


class RefusedTarget(ValueError):
    """A host that resolves to an address the policy refuses (the operator may allow it, DNS may change)."""


@dataclass(frozen=True, slots=True)
class Allow:
    """The operator's exceptions: host names (exact, whatever they resolve to) and networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allow:
        hosts: set[str] = set()
        networks: list[Network] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.removeprefix("[").removesuffix("]"), strict=False))
            except ValueError:
                if not _HOSTNAME.fullmatch(entry):
                    raise ValueError(f"{ALLOW_SETTING}: {raw!r} is neither a host name nor an IP address or CIDR") from None
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def permits(self, address: IPAddress) -> bool:
        address = _unmapped(address)
        return any(address.version == n.version and address in n for n in self.networks)


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is no public receiver's (None: it is one). IPv6 forms that carry an IPv4
    address (mapped, NAT64, 6to4, Teredo) are judged by that address too."""
    address = _unmapped(address)
    for kind, test in (
        ("unspecified", "is_unspecified"), ("loopback", "is_loopback"), ("link-local", "is_link_local"),
        ("multicast", "is_multicast"), ("reserved", "is_reserved"), ("private", "is_private"),
    ):  # fmt: skip
        if getattr(address, test):
            return kind
    if not address.is_global:
        return "non-global"  # e.g. 100.64.0.0/10, shared address space
    if isinstance(address, ipaddress.IPv6Address):
        inner = [address.sixtofour, *(address.teredo or ())]
        if address in _NAT64:
            inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for v4 in filter(None, inner):
            why = refusal(v4)
            if why:
                return f"{why} (embedded {v4})"
    return None


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def masked(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: what errors and logs may show."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    return f"{scheme}://***@{host}{slash}{path}" if at else url


def url_problem(url: str) -> str | None:
    """What makes ``url`` no webhook URL at all (None: it is one), in words that follow the URL."""
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL"
    if "@" in parts.netloc:
        return (
            "carries credentials (user:password@), which are never sent: refused (receivers authenticate "
            "events by their webhook-signature header)"
        )
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        return "has a host name that is not valid"
    return None


def host_port(url: str) -> tuple[str, int]:
    """The host (IDNA-encoded, IPv6 without brackets) and port of a URL ``url_problem`` passed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _literal(host):
        host = host.encode("idna").decode("ascii")
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (numeric forms included: ``127.1``)."""
    try:
        return [ipaddress.ip_address(host.partition("%")[0])]  # a literal ([fe80::1%25eth0] has no resolver answer)
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def checked(host: str, addresses: list[IPAddress], allow: Allow) -> list[IPAddress]:
    """``addresses`` when every one is public or allowed, else RefusedTarget naming the first that is not."""
    if allow.permits_host(host):
        return addresses
    for address in addresses:
        why = refusal(address)
        if why and not allow.permits(address):
            shown = host if _literal(host) else f"{host} resolves to {address}, which"
            article = "an" if why[0] in "aeiou" else "a"
            raise RefusedTarget(f"{shown} is {article} {why} address: refused unless {ALLOW_SETTING} lists it")
    return addresses


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
        return True
    except ValueError:
        return False


def resolve_checked(url: str, allow: Allow) -> list[IPAddress]:
    """The sender's check before each attempt: the addresses it may connect to (and must: pin them).
    UnsafeURL, RefusedTarget, or OSError when the name does not resolve now."""
    problem = url_problem(url)
    if problem:
        raise UnsafeURL(f"{masked(url)!r} {problem}")
    host, port = host_port(url)
    addresses = resolve(host, port)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    return checked(host, addresses, allow)


def check_webhook_url(url: str, allow: Allow) -> str:
    """The submission's check of a notify URL; ValueError (UnsafeURL or RefusedTarget) says why, without
    any credentials. A name that does not resolve here is accepted: the sender checks every attempt."""
    problem = url_problem(url)
    if problem:
        raise UnsafeURL(f"{masked(url)!r} {problem}")
    host, port = host_port(url)
    if allow.permits_host(host):
        return url
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):
        return url
    try:
        checked(host, addresses, allow)
    except RefusedTarget as exc:
        raise RefusedTarget(f"{masked(url)!r}: {exc}") from None
    return url
