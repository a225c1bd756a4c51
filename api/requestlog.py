"""Pure ASGI middleware: refuse an oversized body from its Content-Length, and log each request.

Not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every request through an extra task and
memory streams, which cost about as much CPU as a whole short request here (see bench/api_load.py)."""

from __future__ import annotations

import logging
import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors

log = logging.getLogger("sparsetune.api")
MULTIPART_SLACK = 64 * 1024  # boundaries and headers around the file part


class GuardAndLogMiddleware:
    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app, self.max_upload_bytes = app, max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_upload_bytes + MULTIPART_SLACK:
                body = errors.error_body(413, f"file: larger than the {self.max_upload_bytes}-byte upload limit",
                                         "file")
                response = JSONResponse(body, status_code=413, headers={"Connection": "close"})
                return await response(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_and_note_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"method": scope["method"], "path": scope["path"],
                                           "status_code": status[0],
                                           "duration_ms": round((time.perf_counter() - start) * 1000, 1)})
