"""Fine-tuning jobs: create (idempotent), list, read, cancel, delete, and their metrics and blocks."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import select

from api.deps import Credentials, CurrentOwner, JobDep, SessionDep, owner_of
from api.errors import APIError
from api.routes.common import AfterQuery, LimitQuery, errors
from api.schemas import BlocksPublic, Deleted, JobCreate, JobPublic, ListPage, MetricPointPublic
from api.validation import validate_job
from service import crud, estimates, pools, queue, quotas
from service.models import BlockSelection, Job, JobStatus, MetricPoint
from smt_core.registry import get_spec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


@router.post("", status_code=201, response_model=JobPublic, responses={200: {"model": JobPublic}, **errors(400, 409, 413)})
def create_job(body: JobCreate, session: SessionDep, owner: CurrentOwner, response: Response,
               idempotency_key: IdempotencyKey = None) -> JobPublic:
    """Create a fine-tuning job; it is queued once the row is committed."""
    if idempotency_key:
        earlier = crud.find_idempotent(session, owner.id, idempotency_key, crud.request_hash(body))
        if earlier is not None:
            response.status_code = 200
            return JobPublic.model_validate(earlier)
    hp, train = validate_job(session, owner.id, body)  # train: the owner's, checked
    quotas.check_new_job(session, owner.id)  # 429 at the most queued + running jobs, 413 with storage full
    # the estimate with the training rows' token lengths, on each pool's own device (see service/pools.py)
    tokens = estimates.dataset_tokens(session, train, body.model) if train is not None else None
    peaks = pools.estimated_peaks(session, body.model, body.method, body.budget, list(body.targets), hp,
                                  body.method_options, tokens, estimates.task_of(train))
    devices = pools.devices_of(hp)
    live = pools.live_pools(session)
    pool = pools.pick(peaks, live, devices)
    if pool is None:
        raise APIError(422, pools.too_big_message(peaks, devices), param="hyperparameters")
    job = crud.create_job(session, owner.id, body, hp, idempotency_key, pool.name, peaks.get(pool.name),
                          warnings=pools.no_live_worker_warnings(pool, live))  # still queued: starts with a worker
    session.commit()
    if queue.enqueue(job.id, pool.queue):  # only after the commit: a worker must find the row
        job.enqueued_at = job.created_at
        session.commit()
    return JobPublic.model_validate(job)


@router.get("", response_model=ListPage[JobPublic], responses=errors())
async def list_jobs(session: SessionDep, creds: Credentials, limit: LimitQuery = 20, after: AfterQuery = None,
                    status: Annotated[JobStatus | None, Query()] = None) -> ListPage[JobPublic]:
    """List the owner's jobs, newest first, optionally by status."""
    def page() -> ListPage[JobPublic]:
        owner = owner_of(session, creds)
        stmt = select(Job).where(Job.owner_id == owner.id)
        if status is not None:
            stmt = stmt.where(Job.status == status)
        rows, more = crud.page(session, stmt, Job, limit, after)
        return ListPage[JobPublic].of([JobPublic.model_validate(j) for j in rows], more)

    # async, with the key and the rows in one explicit thread hop: a sync route would cost three (see api/deps.py)
    return await to_thread.run_sync(page)


@router.get("/{job_id}", response_model=JobPublic, responses=errors(404))
async def read_job(job: JobDep) -> JobPublic:
    """Read one job (async: the row is already loaded, so no thread hop is needed to serialise it)."""
    return JobPublic.model_validate(job)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=errors(404, 409))
def cancel_job(session: SessionDep, job: JobDep) -> JobPublic:
    """Cancel a job: queued never starts, running stops within one step, finished is a 409."""
    crud.cancel_job(session, job)
    session.commit()
    return JobPublic.model_validate(job)


@router.delete("/{job_id}", response_model=Deleted, responses=errors(404, 409))
def delete_job(session: SessionDep, job: JobDep) -> Deleted:
    """Delete a finished job and its artifacts."""
    job_id = job.id
    crud.delete_job(session, job)
    session.commit()
    return Deleted(id=job_id, object="job")


@router.get("/{job_id}/metrics", response_model=ListPage[MetricPointPublic], responses=errors(404))
def list_metrics(session: SessionDep, job: JobDep,
                 after_step: Annotated[int | None, Query(ge=0, description="only steps after this one")] = None
                 ) -> ListPage[MetricPointPublic]:
    """The job's metrics by step (a resumed run's repeated steps appear once); ``after_step`` lets a client
    that already has the first steps fetch only the new ones."""
    stmt = select(MetricPoint).where(MetricPoint.job_id == job.id)
    if after_step is not None:
        stmt = stmt.where(MetricPoint.step > after_step)
    data = [MetricPointPublic.model_validate(m) for m in session.scalars(stmt.order_by(MetricPoint.step))]
    return ListPage[MetricPointPublic].of(data, last_id=str(data[-1].step) if data else None)


@router.get("/{job_id}/blocks", response_model=BlocksPublic, responses=errors(404))
def read_blocks(session: SessionDep, job: JobDep) -> BlocksPublic:
    """SMT's selected blocks per module (404 until selection is done, or for other methods)."""
    sel = session.get(BlockSelection, job.id)
    if sel is None:
        raise APIError(404, f"job {job.id} has no block selection" + (" yet" if get_spec(job.method).selects_blocks
                       else f" (method {job.method} selects no blocks)"), param="job_id")
    return BlocksPublic.model_validate(sel.data)
