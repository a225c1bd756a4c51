"""Dependencies that enter handlers through Annotated aliases; row lookups return the row or a 404."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, Path
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from service.db import session_factory
from service.models import Dataset, Job, Owner, Webhook
from service.security import authenticate
from service.storable import is_plausible_id

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


# closing a session returns its connection to the pool; done on threads of its own, because in the shared
# threadpool a close could wait behind requests that are themselves waiting for a pooled connection
_closer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="session-close")


async def get_session() -> AsyncIterator[Session]:
    """A session per request, made on the event loop (a Session does no I/O until first used) and closed off
    it (closing rolls back on its connection): one thread hop per request instead of FastAPI's two for a sync
    generator; each hop through the shared threadpool costs about 0.1 ms of CPU (bench/api_load.py)."""
    session = session_factory()()
    try:
        yield session
    finally:
        await asyncio.get_running_loop().run_in_executor(_closer, session.close)


SessionDep = Annotated[Session, Depends(get_session)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def owner_of(session: Session, creds: HTTPAuthorizationCredentials | None) -> Owner:
    """The key's owner; 401 for a missing, malformed, unknown or revoked key (the key itself is never logged)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise APIError(401, "missing API key: send Authorization: Bearer <key>", param="Authorization",
                       headers=challenge)
    owner = authenticate(session, creds.credentials)
    if owner is None:
        raise APIError(401, "invalid or revoked API key", param="Authorization", headers=challenge)
    return owner


def get_current_owner(session: SessionDep, creds: Credentials) -> Owner:
    return owner_of(session, creds)


CurrentOwner = Annotated[Owner, Depends(get_current_owner)]


# The row dependencies authenticate themselves instead of depending on CurrentOwner: FastAPI runs each sync
# dependency in its own thread hop, and key plus row in one hop is cheaper. No route takes both a row and
# CurrentOwner (it would authenticate twice).

def _owned(session: Session, creds: HTTPAuthorizationCredentials | None, table: type, row_id: str, what: str):
    """The caller's row of ``table``; another owner's row is indistinguishable from a missing one (404)."""
    owner = owner_of(session, creds)
    row = session.get(table, row_id) if is_plausible_id(row_id) else None
    if row is None or row.owner_id != owner.id:
        raise not_found(what, row_id)
    return row


def get_owned_job(job_id: Annotated[str, Path(max_length=64)], session: SessionDep, creds: Credentials) -> Job:
    return _owned(session, creds, Job, job_id, "job")


def get_owned_dataset(dataset_id: Annotated[str, Path(max_length=64)], session: SessionDep,
                      creds: Credentials) -> Dataset:
    return _owned(session, creds, Dataset, dataset_id, "dataset")


def get_owned_webhook(webhook_id: Annotated[str, Path(max_length=64)], session: SessionDep,
                      creds: Credentials) -> Webhook:
    return _owned(session, creds, Webhook, webhook_id, "webhook")


JobDep = Annotated[Job, Depends(get_owned_job)]
DatasetDep = Annotated[Dataset, Depends(get_owned_dataset)]
WebhookDep = Annotated[Webhook, Depends(get_owned_webhook)]
