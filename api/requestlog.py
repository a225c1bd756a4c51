"""Pure ASGI middleware: bound every request body (size and read time) as it streams in, and log each request.

The size limit depends on the route: the upload limit (plus multipart slack) for dataset uploads, a small one
(``SPARSETUNE_MAX_BODY_BYTES``) for every other body. A ``Content-Length`` over it is refused before reading;
a chunked body (no length) is counted as it arrives and refused the moment it passes the limit, so nothing
past it is read. Each wait for the next piece of a body is bounded (``SPARSETUNE_BODY_TIMEOUT_SECONDS``), and
after that first grace period the body must keep an average rate (``SPARSETUNE_MIN_BODY_BYTES_PER_SECOND``):
a client trickling a byte at a time cannot hold a request slot for long either. Both get 408, and the
connection is closed.
Both refusals are raised from ``receive`` as :class:`api.errors.BodyRefused` (FastAPI passes HTTP errors
from body parsing on) and answered in the one error shape.

Not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every request through an extra task and
memory streams, which cost about as much CPU as a whole short request here (see bench/api_load.py)."""

from __future__ import annotations

import logging
import time

import anyio
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors

log = logging.getLogger("sparsetune.api")
MULTIPART_SLACK = 64 * 1024  # boundaries and headers around the file part
UPLOAD_ROUTES = frozenset({("POST", "/v1/datasets")})


class GuardAndLogMiddleware:
    def __init__(self, app: ASGIApp, max_upload_bytes: int, max_body_bytes: int = 1024 * 1024,
                 body_timeout: float = 30.0, min_body_rate: float = 16 * 1024) -> None:
        self.app, self.max_upload_bytes, self.max_body_bytes = app, max_upload_bytes, max_body_bytes
        self.body_timeout, self.min_body_rate = body_timeout, min_body_rate

    def _wait_budget(self, started: float, received: int) -> float:
        """Seconds the next piece of a body may take: the per-piece timeout, cut short where the body as a whole
        falls behind ``body_timeout + received / min_body_rate`` since its first wait."""
        deadline = started + self.body_timeout + received / self.min_body_rate
        return min(self.body_timeout, deadline - time.perf_counter())

    def _limit(self, scope: Scope) -> tuple[int, str, str]:
        """(bytes allowed, the message past them, the param named)."""
        if (scope["method"], scope["path"].rstrip("/")) in UPLOAD_ROUTES:
            return (self.max_upload_bytes + MULTIPART_SLACK,
                    f"file: larger than the {self.max_upload_bytes}-byte upload limit", "file")
        return (self.max_body_bytes,
                f"body: larger than the {self.max_body_bytes}-byte limit for this request", "body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, message, param = self._limit(scope)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                body = errors.error_body(413, message, param)
                response = JSONResponse(body, status_code=413, headers={"Connection": "close"})
                return await response(scope, receive, send)
        start, status = time.perf_counter(), [0]
        received, done = [0], [False]

        async def bounded_receive() -> Message:
            if done[0]:  # the body is in: what is left to hear is a disconnect, whenever it comes (streams)
                return await receive()
            wait = self._wait_budget(start, received[0])
            try:
                if wait <= 0:
                    raise TimeoutError
                with anyio.fail_after(wait):
                    msg = await receive()
            except TimeoutError:
                log.warning("request body too slow: refused after %.0f s", time.perf_counter() - start)
                raise errors.BodyRefused(408, f"body: too slow (nothing for {self.body_timeout:g} s, or under "
                                         f"{self.min_body_rate:g} bytes/s on average)", "body") from None
            if msg["type"] == "http.request":
                received[0] += len(msg.get("body", b""))
                if received[0] > limit:
                    raise errors.BodyRefused(413, message, param)
                done[0] = not msg.get("more_body", False)
            else:
                done[0] = True
            return msg

        async def send_and_note_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_and_note_status)
        except errors.BodyRefused as exc:  # raised where no exception handler answered it
            if status[0]:
                raise
            body = errors.error_body(exc.status_code, exc.detail, exc.param)
            await JSONResponse(body, status_code=exc.status_code, headers=exc.headers)(scope, receive,
                                                                                       send_and_note_status)
        finally:
            status[0] = status[0] or 500
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"method": scope["method"], "path": scope["path"],
                                           "status_code": status[0],
                                           "duration_ms": round((time.perf_counter() - start) * 1000, 1)})
