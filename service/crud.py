"""Reads and writes of rows for the routes: pagination, datasets, jobs, events. (Responses are built from the
API's pydantic models, read from these rows: api/schemas.py.)"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, delete, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import webhooks
from service.blobstore import get_store
from service.errors import Invalid, conflict
from service.models import FINISHED, Artifact, Checkpoint, Dataset, Event, Job, JobStatus
from service.security import new_id
from service.states import ACTIVE, EventType, WebhookEventType
from service.storable import is_plausible_id

IDEMPOTENCY_SECONDS = 24 * 3600

if TYPE_CHECKING:  # the API's request model; the core only reads its attributes
    from api.schemas import JobCreate


def page(session: Session, stmt: Select, model: Any, limit: int, after: str | None) -> tuple[list[Any], bool]:
    """Newest first, keyset pagination on (created_at, id); ``after`` is the last id of the previous page."""
    if after is not None:
        # only the key of the anchor row, under the same filters (another owner's id is no anchor)
        anchor = session.execute(stmt.with_only_columns(model.created_at, model.id).where(model.id == after)
                                 ).first() if is_plausible_id(after) else None
        if anchor is None:
            raise Invalid(f"after: no item {after!r} in this list", param="after")
        # a row comparison, so (owner_id, created_at, id) serves any page as one index range scan
        stmt = stmt.where(tuple_(model.created_at, model.id) < tuple_(anchor.created_at, anchor.id))
    rows = list(session.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def add_event(session: Session, job: Job, type_: EventType, data: dict[str, Any]) -> Event:
    ev = Event(job_id=job.id, owner_id=job.owner_id, type=type_, data=data, created_at=time.time())
    session.add(ev)
    return ev


def delete_dataset(session: Session, ds: Dataset) -> None:
    busy = session.scalar(select(func.count()).select_from(Job).where(
        or_(Job.training_dataset_id == ds.id, Job.validation_dataset_id == ds.id),
        Job.status.in_(ACTIVE)))
    if busy:
        raise conflict(f"dataset {ds.id} is used by {busy} queued or running job(s)")
    blob_id = ds.blob_id
    session.delete(ds)
    session.flush()
    get_store().delete(session, blob_id)


def request_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def find_idempotent(session: Session, owner_id: str, key: str, digest: str) -> Job | None:
    """The job an earlier request with this key made, or None; 409 if that request had another body."""
    job = session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))
    if job is None:
        return None
    if (job.idempotency_expires_at or 0) < time.time():
        job.idempotency_key = None  # expired: the key is free again
        session.flush()
        return None
    if job.request_hash != digest:
        raise conflict("Idempotency-Key was already used with a different request body", param="Idempotency-Key")
    return job


def create_job(session: Session, owner_id: str, body: JobCreate, hp: dict[str, Any],
               idempotency_key: str | None, pool: str | None = None, estimated_memory: int | None = None,
               warnings: list[str] | None = None) -> Job:
    now = time.time()
    job = Job(id=new_id("job"), owner_id=owner_id, model=body.model, method=body.method, budget=body.budget,
              training_dataset_id=body.training_dataset, validation_dataset_id=body.validation_dataset,
              targets=list(body.targets), hyperparameters=hp, method_options=dict(body.method_options),
              seed=body.seed, suffix=body.suffix, meta=dict(body.metadata), status=JobStatus.queued,
              created_at=now, idempotency_key=idempotency_key, request_hash=request_hash(body),
              idempotency_expires_at=now + IDEMPOTENCY_SECONDS if idempotency_key else None,
              pool=pool, estimated_memory=estimated_memory, init_from=body.init_from, warnings=warnings)
    session.add(job)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won the race
        session.rollback()
        raise conflict("a request with this Idempotency-Key is already in progress", param="Idempotency-Key") from None
    add_event(session, job, EventType.status, {"status": JobStatus.queued, "phase": None})
    return job


def cancel_job(session: Session, job: Job) -> Job:
    """Queued: cancelled at once (never starts). Running: a flag the trainer reads every step. Finished: 409."""
    now = time.time()
    res = session.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.queued)
                          .values(status=JobStatus.cancelled, finished_at=now, cancel_requested=True))
    session.refresh(job)
    if res.rowcount == 1:
        add_event(session, job, EventType.status, {"status": JobStatus.cancelled, "phase": None})
        add_event(session, job, EventType.end, {"status": JobStatus.cancelled, "error": None})
        webhooks.enqueue(session, job, WebhookEventType.job_cancelled)  # committed with the cancel, or not at all
        return job
    if job.status == JobStatus.running:
        if not job.cancel_requested:
            job.cancel_requested = True
            add_event(session, job, EventType.log, {"level": "info", "message": "cancel requested"})
        return job
    raise conflict(f"job {job.id} is already {job.status.value}")


def drop_checkpoint(session: Session, job_id: str) -> None:
    """A job that has ended keeps its artifacts, never its checkpoint (it cannot resume): row and blob go."""
    ck = session.get(Checkpoint, job_id)
    if ck is None:
        return
    blob_id = ck.blob_id
    session.delete(ck)
    session.flush()
    get_store().delete(session, blob_id)


def delete_job(session: Session, job: Job) -> None:
    if job.status not in FINISHED:
        raise conflict(f"job {job.id} is {job.status.value}; cancel it first")
    store = get_store()
    blob_ids = list(session.scalars(select(Artifact.blob_id).where(Artifact.job_id == job.id)))
    blob_ids += list(session.scalars(select(Checkpoint.blob_id).where(Checkpoint.job_id == job.id)))
    session.execute(delete(Artifact).where(Artifact.job_id == job.id))
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job.id))
    session.delete(job)
    session.flush()
    for blob_id in blob_ids:
        store.delete(session, blob_id)

