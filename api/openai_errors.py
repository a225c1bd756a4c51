"""OpenAI's error answers, for the OpenAI-compatible routes only (/v1/files, /v1/fine_tuning/jobs, GET and
DELETE /v1/models/{id}).

OpenAI answers an invalid request with 400 where the native routes answer 422, and adds a ``type``
(``invalid_request_error``…) to the error object; the openai SDK picks its exception class
(``BadRequestError``, ``NotFoundError``, ``ConflictError``…) from the status. The app-wide handlers
(api/errors.py) stay as they are for the native routes: the translation is a route class, so it applies only to
the routes of the routers built with it, and the error keeps our one shape (``code``, ``message``, ``param``,
``details``) with ``type`` added.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import CODES, APIError, error_body, service_status, validation_parts
from api.schemas import OpenAIErrorResponse
from service import errors as service_errors

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         429: "rate_limit_error"}


def openai_type(status: int) -> str:
    """OpenAI's error ``type`` for a status: 404, 409 and 413 are invalid requests too."""
    return "server_error" if status >= 500 else TYPES.get(status, "invalid_request_error")


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 details: list[dict[str, Any]] | None = None, total: int | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """Our error shape with OpenAI's status (422 becomes 400) and ``type``."""
    status = 400 if status == 422 else status
    body = error_body(status, message, param, code, details, total)
    body["error"]["type"] = openai_type(status)
    return JSONResponse(body, status_code=status, headers=headers)


def translate(exc: Exception) -> JSONResponse | None:
    """The OpenAI answer for a refusal raised under one of these routes; None for anything else (a 500 or a
    database outage goes on to the app's handlers)."""
    if isinstance(exc, APIError):
        return openai_error(exc.status, exc.message, exc.param, exc.code, exc.details, exc.total, exc.headers)
    if isinstance(exc, service_errors.ServiceError):
        return openai_error(service_status(exc), exc.message, exc.param, exc.code)
    if isinstance(exc, RequestValidationError):
        message, param, details = validation_parts(exc)
        return openai_error(400, message, param, details=details)
    if isinstance(exc, StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else CODES.get(exc.status_code, "error")
        return openai_error(exc.status_code, message, getattr(exc, "param", None),
                            headers=getattr(exc, "headers", None))
    return None


class OpenAIRoute(APIRoute):
    """A route whose refusals (schema, dependencies, handler) answer in OpenAI's statuses and error type."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def translated(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                answer = translate(exc)
                if answer is None:
                    raise
                return answer

        return translated


def openai_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for these routes' error statuses (always 400, 401, 429, and 503 while the database is
    unreachable), in OpenAI's error shape."""
    return {c: {"model": OpenAIErrorResponse} for c in sorted({400, 401, 429, 503, *codes})}
