"""Shared route pieces: documented error responses and the pagination query parameters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from api.schemas import ErrorResponse

LimitQuery = Annotated[int, Query(ge=1, le=100, description="page size")]
AfterQuery = Annotated[str | None, Query(max_length=64, description="the last id of the previous page")]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route really returns (always 401, 422, 429, and 503 while the
    database is unreachable)."""
    return {c: {"model": ErrorResponse} for c in sorted({401, 422, 429, 503, *codes})}


def envelope(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "last_id": data[-1]["id"] if data else None}
