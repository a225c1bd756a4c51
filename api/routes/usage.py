"""GET /v1/usage: the owner's queued and running jobs, stored bytes, and the limits they count against."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOwner, SessionDep
from api.routes.common import errors
from api.schemas import UsagePublic
from service import quotas

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", response_model=UsagePublic, responses=errors())
def read_usage(session: SessionDep, owner: CurrentOwner) -> UsagePublic:
    """What the caller's owner uses against the per-owner limits (see service/quotas.py)."""
    return UsagePublic.model_validate(quotas.usage(session, owner.id))
