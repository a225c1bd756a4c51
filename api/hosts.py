"""The Host check: refuse requests that name a host this service does not answer to (DNS rebinding).

A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 makes the browser send ``Host:
evil.example`` to this API as if it were its own origin; refusing unknown names stops that page from reading
any answer. Always allowed: the local names (``localhost``, ``*.localhost``, which browsers resolve to the
loopback themselves) and any literal IP address (a browser sends an IP only when the user typed or followed
one: a rebinding page always carries its own domain name). ``SPARSETUNE_ALLOWED_HOSTS`` adds names — the
ones a server bound to 0.0.0.0 is reached by (``api.example.com``, ``*.internal.example``) — or ``*`` for any.
A request without a Host header (HTTP/1.0 probes) comes from no browser and passes.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_body
from service.settings import get_settings

LOCAL_NAMES = ("localhost", "*.localhost")
SETTING = "SPARSETUNE_ALLOWED_HOSTS"


def host_name(header: str) -> str:
    """The name in a Host header: no port, no IPv6 brackets, lower case, no trailing dot."""
    name = header.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        name = name.split(":", 1)[0]
    return name.rstrip(".")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """Exact names, ``*.domain`` for its subdomains, ``*`` for any; local names and IP addresses always."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        names = [host_name(p) if p.strip() != "*" else "*" for p in (*LOCAL_NAMES, *patterns) if p.strip()]
        self.any = "*" in names
        self.exact = frozenset(n for n in names if not n.startswith("*."))
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))  # ".localhost"

    def allows(self, name: str) -> bool:
        subdomain = name.endswith(self.suffixes) and not name.startswith(".")
        return self.any or name in self.exact or subdomain or is_ip(name)


class HostCheckMiddleware:
    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = next((value for name, value in scope["headers"] if name == b"host"), None)
        if header is not None:
            name = host_name(header.decode("latin-1"))
            if not self.allowed.allows(name):
                return await refused(name)(scope, receive, send)
        await self.app(scope, receive, send)


def refused(name: str) -> JSONResponse:
    """400 in the one error shape, saying which setting lets the name in."""
    message = (f"Host: {name!r} is not a host name this server answers to; add it to {SETTING} "
               "(comma-separated; *.domain for subdomains) if it is one")
    return JSONResponse(error_body(400, message, "Host"), status_code=400, headers={"Connection": "close"})


def allow_bound_host(host: str) -> None:
    """``sparsetune up --host NAME``: the name the server is bound to is one it answers to. Added to the
    setting in this process's environment before the app is built (an address needs no entry)."""
    name = host_name(host)
    current = os.environ.get(SETTING, "")
    if not name or AllowedHosts(current.split(",")).allows(name):
        return
    os.environ[SETTING] = ",".join(p for p in (current, name) if p)
    get_settings.cache_clear()
