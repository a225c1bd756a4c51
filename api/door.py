"""The door: every /v1 request is authenticated here, in the ASGI layer, before a byte of its body is read.

Key checks go through a small per-process cache (service/security.py ``KeyCache``). A key verified under the
current revocation mark (service/revocations.py) is trusted by the routes as it is: a revocation anywhere moves
the mark, so the next request looks the key up again. Without a readable mark the routes authenticate for
themselves (a lookup of their own), so a key revoked from another process is still refused at once. The rate limit
is taken here too, once it is known who asks: the verified owner, or the client address for a request
without a valid key. A key this process has not verified lately costs a database lookup, so the client
address pays for that lookup first from a bucket of its own (api/ratelimit.py ``KEY_LOOKUPS``), and a key that
fails draws from the address's bucket like a keyless request: a flood of made-up keys buys neither lookups nor
fresh buckets.
Requests the door refuses (401, 429, 503) never reach the in-flight cap or the body guard inside it; when
such a request carries a body, the answer says ``Connection: close``, so the server drops the connection
instead of reading the unread body to its end to keep it alive (a keyless 250 MiB upload costs its headers).
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import busy_response, database_unavailable_response, unauthorized
from api.ratelimit import RateLimiter, client_address
from service.db import is_disconnect
from service.security import KeyCache, KeyIdentity, bearer_token, looks_like_key

log = logging.getLogger("sparsetune.api")
GUARDED_PREFIX = "/v1"  # health checks, Prometheus, docs and the dashboard's static files are public
IDENTITY = "sparsetune.identity"  # where the door leaves the verified KeyIdentity in the ASGI scope
CHECKED = "sparsetune.identity_checked"  # True: verified under the current revocation mark (KeyCache)


def identity_of(scope: Scope) -> KeyIdentity | None:
    return scope.get(IDENTITY)


def checked_identity(scope: Scope, token: str) -> KeyIdentity | None:
    """The door's identity for ``token`` if no key was revoked since it was verified (the route then needs no
    lookup of its own); None otherwise."""
    identity = scope.get(IDENTITY)
    if identity is None or not scope.get(CHECKED) or bearer_token(scope) != token:
        return None
    return identity


class DoorMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyCache, limiter: RateLimiter | None = None) -> None:
        self.app, self.keys, self.limiter = app, keys, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            return await self.app(scope, receive, send)
        token = bearer_token(scope)
        identity, mark = None, None
        if token is not None and looks_like_key(token):
            mark = await self.keys.mark.read()
            found, identity = self.keys.cached(token, mark)
            if not found:
                # a key remembered from before the mark moved is looked up again at no charge: a revocation
                # must not spend the client's lookup allowance on keys it already proved
                remembered = self.keys.cached(token)[0]
                refused = None if self.limiter is None or remembered else await self.limiter.check_lookup(scope)
                if refused is not None:
                    return await refuse_unread(refused, scope, receive, send)
                try:
                    identity = await self.keys.verify(token, mark)
                except PoolTimeout:
                    log.warning("database pool exhausted: request shed")
                    return await refuse_unread(busy_response(), scope, receive, send)
                except DBAPIError as exc:
                    if not is_disconnect(exc):
                        raise
                    return await refuse_unread(database_unavailable_response(), scope, receive, send)
        refused = await self._limit(scope, f"owner:{identity.owner_id}" if identity else client_address(scope))
        if refused is not None:
            return await refuse_unread(refused, scope, receive, send)
        if identity is None:
            return await refuse_unread(unauthorized(missing=token is None), scope, receive, send)
        scope[IDENTITY] = identity
        scope[CHECKED] = mark is not None
        await self.app(scope, receive, send)

    async def _limit(self, scope: Scope, who: str) -> JSONResponse | None:
        return None if self.limiter is None else await self.limiter.check(scope, who)


def has_body(scope: Scope) -> bool:
    """A request that announces a body: chunked, or a Content-Length above zero."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


async def refuse_unread(response: JSONResponse, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer without reading the body; with one unread, close the connection after the answer."""
    if has_body(scope):
        response.headers["Connection"] = "close"
    await response(scope, receive, send)
