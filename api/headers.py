"""Security headers on every response: a Content-Security-Policy, no framing, no MIME sniffing, no Referer.

The dashboard (frontend/dist) is one bundled script and one stylesheet from this origin, with no inline
script or style element, talking only to this origin; so the policy allows ``'self'`` and nothing else, plus
``data:``/``blob:`` images (its favicon is ``data:,``). A response that brings its own policy keeps it:
``/docs`` allows its one inline start-up script by hash (api/docs.py). JSON answers get the headers too:
they cost nothing and make a JSON error rendered as a page inert.

Installed outside Starlette's ServerErrorMiddleware (see :func:`install`) so that a 500 carries them as well.
Pure ASGI: it only adds headers to ``http.response.start``, so streamed bodies (SSE) pass through untouched.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'",
    "frame-ancestors 'none'",
))
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", POLICY.encode()),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate it
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, headers: tuple[tuple[bytes, bytes], ...] = HEADERS) -> None:
        self.app, self.headers = app, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: Starlette) -> None:
    """Wrap the whole middleware stack, Starlette's ServerErrorMiddleware included, which ``add_middleware``
    cannot reach: the 500 it answers for an unhandled error then carries the headers like any other response."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: SecurityHeadersMiddleware(build())  # type: ignore[method-assign]
