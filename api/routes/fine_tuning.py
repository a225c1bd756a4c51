"""OpenAI's fine-tuning jobs: each is a native job (same id, visible at /v1/jobs/{id}), created by POST /v1/jobs'
own code from OpenAI's body and shown through OpenAI's types (translation in api/openai_jobs.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Caller, CurrentOwner, SessionDep
from api.errors import APIError
from api.openai_errors import OpenAIRoute, openai_errors
from api.openai_jobs import (
    checkpoints_of,
    event_anchor,
    event_of,
    fine_tuning_job,
    job_create_of,
    renamed,
    trains_classifier,
)
from api.routes import jobs
from api.routes.common import AfterQuery, LimitQuery
from api.schemas import (
    FineTuningCheckpointPublic,
    FineTuningEventPublic,
    FineTuningJobCreate,
    FineTuningJobPublic,
    ListPage,
)
from service import crud
from service.errors import ServiceError
from service.models import Event, Job
from service.storable import is_plausible_id

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], route_class=OpenAIRoute)
JobId = Annotated[str, Path(max_length=64, description="a job id (job_…): the native job's")]


def _owned(session: Session, owner: Caller, job_id: str) -> Job:
    """Another owner's job is indistinguishable from a missing one (404)."""
    job = session.get(Job, job_id) if is_plausible_id(job_id) else None
    if job is None or job.owner_id != owner.id:
        raise APIError(404, f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
    return job


@router.post("", response_model=FineTuningJobPublic, responses=openai_errors(404, 409, 413))
def create_fine_tuning_job(body: FineTuningJobCreate, session: SessionDep, owner: CurrentOwner,
                           idempotency_key: jobs.IdempotencyKey = None) -> FineTuningJobPublic:
    """Create a fine-tuning job: the same checks, quotas, routing and Idempotency-Key as POST /v1/jobs; 200 as
    at OpenAI (a replay of the same key and body returns the same job)."""
    native, renames = job_create_of(body, trains_classifier(session, owner.id, body.training_file))
    try:
        created = jobs.create_job(native, session, owner, Response(), idempotency_key)
    except (APIError, ServiceError) as exc:
        raise renamed(exc, renames) from None
    job = session.get(Job, created.id)
    assert job is not None  # just committed
    return fine_tuning_job(session, job)


@router.get("", response_model=ListPage[FineTuningJobPublic], responses=openai_errors())
def list_fine_tuning_jobs(session: SessionDep, owner: CurrentOwner, limit: LimitQuery = 20,
                          after: AfterQuery = None) -> ListPage[FineTuningJobPublic]:
    """The owner's jobs (every native job too), newest first."""
    rows, more = crud.page(session, select(Job).where(Job.owner_id == owner.id), Job, limit, after)
    return ListPage[FineTuningJobPublic].of([fine_tuning_job(session, j) for j in rows], more)


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJobPublic, responses=openai_errors(404))
def read_fine_tuning_job(session: SessionDep, owner: CurrentOwner, fine_tuning_job_id: JobId) -> FineTuningJobPublic:
    """One job."""
    return fine_tuning_job(session, _owned(session, owner, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", response_model=FineTuningJobPublic, responses=openai_errors(404, 409))
def cancel_fine_tuning_job(session: SessionDep, owner: CurrentOwner,
                           fine_tuning_job_id: JobId) -> FineTuningJobPublic:
    """Cancel: queued never starts, running stops within one step (``cancelled`` once it has), finished is 409."""
    job = _owned(session, owner, fine_tuning_job_id)
    crud.cancel_job(session, job)
    session.commit()
    return fine_tuning_job(session, job)


@router.get("/{fine_tuning_job_id}/events", response_model=ListPage[FineTuningEventPublic],
            responses=openai_errors(404))
def list_fine_tuning_events(session: SessionDep, owner: CurrentOwner, fine_tuning_job_id: JobId,
                            limit: LimitQuery = 20, after: AfterQuery = None) -> ListPage[FineTuningEventPublic]:
    """The job's events, newest first (status changes, logs and metrics; our ``warning`` level is ``warn``)."""
    job = _owned(session, owner, fine_tuning_job_id)
    stmt = select(Event).where(Event.job_id == job.id)
    anchor = event_anchor(after)
    if anchor is not None:
        stmt = stmt.where(Event.id < anchor)
    rows = list(session.scalars(stmt.order_by(Event.id.desc()).limit(limit + 1)))
    return ListPage[FineTuningEventPublic].of([event_of(e) for e in rows[:limit]], len(rows) > limit)


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=ListPage[FineTuningCheckpointPublic],
            responses=openai_errors(404))
def list_fine_tuning_checkpoints(session: SessionDep, owner: CurrentOwner, fine_tuning_job_id: JobId,
                                 limit: LimitQuery = 10, after: AfterQuery = None
                                 ) -> ListPage[FineTuningCheckpointPublic]:
    """A succeeded job's final adapter as a checkpoint (its fine-tuned model's name); none before that."""
    data = checkpoints_of(session, _owned(session, owner, fine_tuning_job_id))
    if after is not None:
        ids = [c.id for c in data]
        if after not in ids:
            raise APIError(400, f"after: no checkpoint {after!r} in this list", param="after")
        data = data[ids.index(after) + 1:]
    return ListPage[FineTuningCheckpointPublic].of(data[:limit], len(data) > limit)
