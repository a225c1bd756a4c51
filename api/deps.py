"""Dependencies that enter handlers through Annotated aliases; row lookups return the row or a 404."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.door import checked_identity
from api.errors import APIError, not_found
from service.db import session_factory
from service.models import Dataset, Job, Webhook
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


@dataclass(frozen=True)
class Caller:
    """The owner a request acts for: its id is all a route needs (rows are filtered and written by it)."""

    id: str


@dataclass(frozen=True)
class Key:
    """The request's bearer key, and its owner when the door verified it under the current revocation mark
    (api/door.py ``checked_identity``): then no lookup of the route's own is needed."""

    token: str | None
    checked_owner_id: str | None = None


async def key_of(request: Request,
                 creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Key:
    token = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else None
    identity = checked_identity(request.scope, token) if token else None
    return Key(token or None, identity.owner_id if identity is not None else None)


Credentials = Annotated[Key, Depends(key_of)]


def owner_of(session: Session, key: Key) -> Caller:
    """The key's owner; 401 for a missing, malformed, unknown or revoked key (the key itself is never logged).
    A key the door checked under the current revocation mark costs nothing more; any other is looked up, so a
    key revoked from another process is refused on the very next request either way."""
    if key.checked_owner_id is not None:
        return Caller(key.checked_owner_id)
    challenge = {"WWW-Authenticate": "Bearer"}
    if not key.token:
        raise APIError(401, "missing API key: send Authorization: Bearer <key>", param="Authorization",
                       headers=challenge)
    owner = authenticate(session, key.token)
    if owner is None:
        raise APIError(401, "invalid or revoked API key", param="Authorization", headers=challenge)
    return Caller(owner.id)


async def get_current_owner(session: SessionDep, key: Credentials) -> Caller:
    """On the event loop when the door checked the key (``owner_of`` makes no lookup then); else one thread
    hop for the lookup."""
    if key.checked_owner_id is not None:
        return owner_of(session, key)
    return await to_thread.run_sync(owner_of, session, key)


CurrentOwner = Annotated[Caller, Depends(get_current_owner)]


# The row dependencies authenticate themselves instead of depending on CurrentOwner: FastAPI runs each sync
# dependency in its own thread hop, and key plus row in one hop is cheaper. No route takes both a row and
# CurrentOwner (it would authenticate twice).

def _owned(session: Session, creds: Key, table: type, row_id: str, what: str):
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
