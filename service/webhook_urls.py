"""Which webhook URLs the service may call: no request forgery into the operator's network.

A webhook URL is the user's, and the request goes out from inside the operator's network, so an endpoint at
``http://10.0.0.5/admin`` or ``http://169.254.169.254/`` (the cloud metadata service) would let any API key
reach what only the service can. So: http(s) only, no credentials in the URL, and every address the host name
resolves to must be a public (global unicast) one — loopback, private, link-local, shared (CGNAT), multicast,
reserved and unspecified addresses are refused, IPv4-mapped IPv6 judged as the IPv4 it maps, unless
SPARSETUNE_WEBHOOK_ALLOW_PRIVATE allows them (``Settings.webhooks_may_reach_private``). The cloud metadata
addresses stay refused even then: no receiver lives there.

The check runs when a webhook is created (422 naming ``url``) and again before every attempt, on a fresh
resolution; the request then goes to the address that passed (worker/webhooks.py pins it), so a name that
resolves to a public address for the check and to a private one for the connection (DNS rebinding) gains
nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.errors import Invalid

MAX_URL_CHARS = 2048
METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200",
                                               "169.254.170.2")}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """Where a request for the URL goes: the host name (Host header, TLS server name), its port and the
    address that passed the check (the one connected to)."""

    scheme: str
    host: str
    port: int
    address: IPAddress


def refused(message: str) -> Invalid:
    return Invalid(f"url: {message}", param="url")


def split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL with a host and no user:password; Invalid otherwise."""
    if len(url) > MAX_URL_CHARS:
        raise refused(f"at most {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise refused("must be plain ASCII without spaces (percent-encode the rest; use the punycode host name)")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise refused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise refused(f"only http and https URLs are allowed, got {parts.scheme or 'no scheme'!r}")
    if not host:
        raise refused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise refused("credentials in the URL are not allowed; verify the signature instead")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def why_not(address: IPAddress, allow_private: bool) -> str | None:
    """Why a request must not go to this address, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    if allow_private:
        return None
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the name resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise refused(f"host {host!r} does not resolve ({exc})") from None
    out: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # a scope id is not part of the address
        if address not in out:
            out.append(address)
    return out


def check(url: str, allow_private: bool) -> Target:
    """The target for ``url``, or Invalid saying why the service will not call it. Every resolved address must
    pass (a name with one private address among public ones is refused: the connection could go to any)."""
    scheme, host, port = split(url)
    addresses = resolve(host, port)
    if not addresses:
        raise refused(f"host {host!r} does not resolve")
    for address in addresses:
        reason = why_not(address, allow_private)
        if reason:
            raise refused(f"{reason}; webhooks go to public addresses only (SPARSETUNE_WEBHOOK_ALLOW_PRIVATE)")
    return Target(scheme, host, port, addresses[0])
