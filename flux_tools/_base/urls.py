"""Where a URL points: its origin (what decides where credentials may go) and what kind of host
it names (loopback, private, link-local...), without a DNS lookup. One definition for every layer.
"""

from __future__ import annotations

import ipaddress

import httpx2

Origin = tuple[str, str, int | None]


def origin(url: str | httpx2.URL) -> Origin:
    """Scheme, host and port (default ports filled in): what decides where credentials may go."""
    parsed = httpx2.URL(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host, port


def non_public(address: str) -> str | None:
    """Why an IP address is no public Internet address (None when it is one)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, flagged in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flagged:
            return reason
    return None if ip.is_global else "non-global"


def host_kind(host: str) -> str | None:
    """What kind of non-public host a name is, without a DNS lookup: ``"loopback"`` for
    ``localhost`` (and ``*.localhost``), the reason of :func:`non_public` for an IP literal
    (``"private"``, ``"link-local"``...), None for a public address or any other name."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        return non_public(host)
    except ValueError:
        return None


def is_local_host(host: str) -> bool:
    """Whether a host name is on this machine or a private network (no DNS lookup)."""
    return host_kind(host) is not None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, brackets allowed) is this machine."""
    return host_kind(host) == "loopback"


__all__ = [
    "Origin",
    "host_kind",
    "is_local_host",
    "is_loopback",
    "non_public",
    "origin",
    "redact_url",
]


def redact_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``: a URL fit for a log."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{head}://{user}:***@{host}" if ":" in credentials else f"{head}://***@{host}"
