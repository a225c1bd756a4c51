"""The methods the service offers, with their options, read from the engine's registry (smt_core.registry):
the dashboard builds its new-job form from this list, and job creation validates against the same specs."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOwner
from api.routes.common import errors
from api.schemas import ListPage, MethodPublic
from smt_core.registry import served_specs

router = APIRouter(prefix="/v1/methods", tags=["methods"])


@router.get("", response_model=ListPage[MethodPublic], responses=errors())
def list_methods(_: CurrentOwner) -> ListPage[MethodPublic]:
    """Exactly the methods job creation accepts, each option with its type, default, bounds and help."""
    return ListPage[MethodPublic].of([MethodPublic.model_validate(spec.public()) for spec in served_specs()])
