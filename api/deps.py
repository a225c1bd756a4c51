"""Dependencies that enter handlers through Annotated aliases; row lookups return the row or a 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.db import session_factory
from api.errors import APIError, not_found
from api.models import Dataset, Job, Owner
from api.security import authenticate
from api.storable import is_plausible_id

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


def get_session() -> Iterator[Session]:
    with session_factory()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_owner(session: SessionDep,
                      creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Owner:
    """401 for a missing, malformed, unknown or revoked key; the key itself is never logged."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise APIError(401, "missing API key: send Authorization: Bearer <key>", param="Authorization",
                       headers=challenge)
    owner = authenticate(session, creds.credentials)
    if owner is None:
        raise APIError(401, "invalid or revoked API key", param="Authorization", headers=challenge)
    return owner


CurrentOwner = Annotated[Owner, Depends(get_current_owner)]


def get_owned_job(job_id: Annotated[str, Path(max_length=64)], session: SessionDep, owner: CurrentOwner) -> Job:
    """Another owner's job is indistinguishable from a missing one (404)."""
    job = session.get(Job, job_id) if is_plausible_id(job_id) else None
    if job is None or job.owner_id != owner.id:
        raise not_found("job", job_id)
    return job


def get_owned_dataset(dataset_id: Annotated[str, Path(max_length=64)], session: SessionDep,
                      owner: CurrentOwner) -> Dataset:
    ds = session.get(Dataset, dataset_id) if is_plausible_id(dataset_id) else None
    if ds is None or ds.owner_id != owner.id:
        raise not_found("dataset", dataset_id)
    return ds


JobDep = Annotated[Job, Depends(get_owned_job)]
DatasetDep = Annotated[Dataset, Depends(get_owned_dataset)]
