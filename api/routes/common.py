"""Shared route pieces: documented error responses and the pagination query parameters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from api.schemas import ErrorResponse
from smt_core.hyperparameters import Hyperparameter

LimitQuery = Annotated[int, Query(ge=1, le=100, description="page size")]
AfterQuery = Annotated[str | None, Query(max_length=64, description="the last id of the previous page")]


def query_from(h: Hyperparameter, **extra: Any) -> Any:
    """A query parameter with the help and bounds of the hyperparameter's one definition
    (smt_core/hyperparameters.py); the route gives ``h.default`` as its default."""
    return Query(description=h.help, **h.bounds(), **extra)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route really returns (always 401, 422, 429, and 503 while the
    database is unreachable)."""
    return {c: {"model": ErrorResponse} for c in sorted({401, 422, 429, 503, *codes})}
