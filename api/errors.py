"""One error shape for every response: {"error": {"code", "message", "param", "details"}}.

FastAPI's default {"detail": …} is replaced here, for our own errors, HTTP errors and schema validation.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors as service_errors
from service.db import is_disconnect

log = logging.getLogger("sparsetune.api")

CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
         416: "range_not_satisfiable",
         422: "invalid_request", 429: "rate_limited", 500: "internal_error", 503: "unavailable"}

# the service core's refusals (service/errors.py) and their HTTP status: the one place the mapping lives
SERVICE_STATUS: dict[type[service_errors.ServiceError], int] = {
    service_errors.NotFound: 404, service_errors.Conflict: 409, service_errors.Invalid: 422,
    service_errors.OverLimit: 429, service_errors.StorageFull: 413}

RETRY_AFTER_SECONDS = 5  # a database restart usually takes a few seconds


class APIError(Exception):
    """Raise from anywhere under a request; it becomes the INTERFACE error shape with ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 details: list[dict[str, Any]] | None = None, total: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or CODES.get(status, "error")
        self.details, self.total, self.headers = details, total, headers


class BodyRefused(StarletteHTTPException):
    """Raised from ``receive`` by the ASGI body guard (api/requestlog.py) while the app reads a body: too large
    (413) or too slow (408). An HTTPException, so FastAPI's body parsing passes it on instead of making it a
    400; the connection is closed after the answer, the rest of the body unread."""

    def __init__(self, status: int, message: str, param: str | None) -> None:
        super().__init__(status, message, headers={"Connection": "close"})
        self.param = param


def unauthorized(missing: bool) -> JSONResponse:
    """The one 401 (a missing, malformed, unknown or revoked key): answered by the door before any body is read."""
    message = "missing API key: send Authorization: Bearer <key>" if missing else "invalid or revoked API key"
    return JSONResponse(error_body(401, message, "Authorization"), status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


def not_found(kind: str, ident: str) -> APIError:
    return APIError(404, f"no {kind} {ident!r}", param="id")


def conflict(message: str, param: str | None = None) -> APIError:
    return APIError(409, message, param=param)


def invalid(param: str, message: str) -> APIError:
    return APIError(422, f"{param}: {message}", param=param)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None,
               details: list[dict[str, Any]] | None = None, total: int | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code or CODES.get(status, "error"), "message": message, "param": param}
    if details is not None:
        err["details"] = details
    if total is not None:
        err["total"] = total
    return {"error": err}


def busy_response() -> JSONResponse:
    """The one answer of a shed request (pool exhausted, too many in flight): 503, retry in a second."""
    return JSONResponse(error_body(503, "server busy, retry shortly"), status_code=503, headers={"Retry-After": "1"})


def database_unavailable_response() -> JSONResponse:
    """The one answer while the database is away (a restart): 503, retry in a few seconds."""
    return JSONResponse(error_body(503, "database unavailable, retry shortly"), status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _loc_to_param(loc: tuple[Any, ...], kind: str | None = None) -> str | None:
    if kind == "json_invalid":  # the body itself is not JSON: name the body, not the character offset
        return "body"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _validation_message(err: dict[str, Any]) -> str:
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "missing":
        return "missing"
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def validation_parts(exc: RequestValidationError) -> tuple[str, str | None, list[dict[str, Any]]]:
    """A schema refusal as (message, param, details): the first problem names the field, details list them all."""
    details = [{"field": _loc_to_param(tuple(e.get("loc", ())), e.get("type")), "message": _validation_message(e)}
               for e in exc.errors()[:100]]
    first = details[0] if details else {"field": None, "message": "invalid request"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return message, first["field"], details


def service_status(exc: service_errors.ServiceError) -> int:
    """The HTTP status of a service core refusal (SERVICE_STATUS)."""
    return next(code for kind, code in SERVICE_STATUS.items() if isinstance(exc, kind))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, exc.param, exc.code, exc.details, exc.total),
                            status_code=exc.status, headers=exc.headers)

    @app.exception_handler(service_errors.ServiceError)
    async def _service_error(_: Request, exc: service_errors.ServiceError) -> JSONResponse:
        status = service_status(exc)
        return JSONResponse(error_body(status, exc.message, exc.param, exc.code), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(exc.status_code, message, getattr(exc, "param", None)),
                            status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, details = validation_parts(exc)
        return JSONResponse(error_body(422, message, param, details=details), status_code=422)

    @app.exception_handler(PoolTimeout)
    async def _busy(_: Request, exc: PoolTimeout) -> JSONResponse:
        """Every database connection is busy: shed the request with a 503 the client retries, not a 500."""
        log.warning("database pool exhausted: request shed")
        return busy_response()

    @app.exception_handler(DBAPIError)
    async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        """A database restart is a 503 the client can retry, not a 500; the pool reconnects by itself."""
        if not is_disconnect(exc):
            log.exception("unhandled database error", exc_info=exc)
            return JSONResponse(error_body(500, "internal error"), status_code=500)
        log.warning("database unavailable: %s", exc.__class__.__name__)
        return database_unavailable_response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body(500, "internal error"), status_code=500)
