"""Per-owner limits: queued + running jobs, steps of one job, and bytes stored (datasets + artifacts).

Generous defaults (settings ``SPARSETUNE_MAX_ACTIVE_JOBS_PER_OWNER``, ``SPARSETUNE_MAX_STEPS``,
``SPARSETUNE_MAX_STORED_BYTES_PER_OWNER``): they stop one client from filling the queue or the disk, not
normal use. Too many active jobs is a 429 ``quota_exceeded`` (retry once one finishes); too many bytes a 413
``storage_quota_exceeded`` (delete something first); a job longer than the step limit a 422 on its field, since
retrying the same body can never succeed. ``param`` names the limit, as ``GET /v1/usage`` lists it.
Checked before the write, not under a lock: two concurrent requests may each pass and overshoot by one.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from service.errors import Invalid, OverLimit, StorageFull
from service.models import Artifact, Dataset, Job, JobStatus
from service.settings import get_settings
from service.states import ACTIVE


def limits() -> dict[str, int]:
    s = get_settings()
    return {"max_active_jobs_per_owner": s.max_active_jobs_per_owner, "max_steps": s.max_steps,
            "max_stored_bytes_per_owner": s.max_stored_bytes_per_owner}


def _active_jobs_of(owner_id: str) -> tuple[ColumnElement[bool], ...]:
    """What makes a job count against the owner's active-job limit (queued or running)."""
    return Job.owner_id == owner_id, Job.status.in_(ACTIVE)


def job_counts(session: Session, owner_id: str) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).where(*_active_jobs_of(owner_id)).group_by(Job.status))
    counts = {JobStatus(status): n for status, n in rows}
    return {"queued_jobs": counts.get(JobStatus.queued, 0), "running_jobs": counts.get(JobStatus.running, 0)}


def _stored_bytes_query(owner_id: str) -> ColumnElement[int]:
    """The owner's dataset bytes plus artifact bytes, as one SQL expression (so a check can ask it alongside
    other counts in one round trip)."""
    datasets = select(func.coalesce(func.sum(Dataset.bytes), 0)).where(Dataset.owner_id == owner_id)
    artifacts = (select(func.coalesce(func.sum(Artifact.bytes), 0)).join(Job, Job.id == Artifact.job_id)
                 .where(Job.owner_id == owner_id))
    return datasets.scalar_subquery() + artifacts.scalar_subquery()


def stored_bytes(session: Session, owner_id: str) -> int:
    return int(session.scalar(select(_stored_bytes_query(owner_id))) or 0)


def usage(session: Session, owner_id: str) -> dict[str, Any]:
    return {"object": "usage", **job_counts(session, owner_id), "stored_bytes": stored_bytes(session, owner_id),
            "limits": limits()}


def check_new_job(session: Session, owner_id: str) -> None:
    """429 once the owner has the maximum of queued + running jobs; 413 once their storage is full (the job's
    artifacts would have nowhere to go)."""
    s = get_settings()
    # one round trip for both (job creation is the busiest write; see bench/api_load.py)
    active_jobs = select(func.count()).where(*_active_jobs_of(owner_id)).scalar_subquery()
    active, used = session.execute(select(active_jobs, _stored_bytes_query(owner_id))).one()
    used = int(used or 0)
    if active >= s.max_active_jobs_per_owner:
        raise OverLimit(f"{active} jobs are queued or running, the most one owner may have "
                       f"(SPARSETUNE_MAX_ACTIVE_JOBS_PER_OWNER={s.max_active_jobs_per_owner}); retry when one "
                       "finishes, or cancel one", param="max_active_jobs_per_owner", code="quota_exceeded")
    if used >= s.max_stored_bytes_per_owner:
        raise _storage_full(used, 0, s.max_stored_bytes_per_owner)


def check_new_bytes(session: Session, owner_id: str, size: int) -> None:
    """413 if storing ``size`` more bytes would take the owner past their storage limit."""
    limit = get_settings().max_stored_bytes_per_owner
    used = stored_bytes(session, owner_id)
    if used + size > limit:
        raise _storage_full(used, size, limit)


def _storage_full(used: int, size: int, limit: int) -> StorageFull:
    more = f" plus these {size}" if size else ""
    return StorageFull(f"{used} bytes stored{more} would exceed the owner's limit of {limit} "
                    "(SPARSETUNE_MAX_STORED_BYTES_PER_OWNER); delete datasets or jobs first",
                    param="max_stored_bytes_per_owner", code="storage_quota_exceeded")


def check_steps(hp: dict[str, Any], rows: int | None) -> None:
    """The job's steps, given or implied by epochs × rows / batch_size, within SPARSETUNE_MAX_STEPS."""
    limit = get_settings().max_steps
    if hp.get("steps") is not None:
        if hp["steps"] > limit:
            raise Invalid(f"hyperparameters.steps: {hp['steps']} is over the limit of {limit} "
                           "(SPARSETUNE_MAX_STEPS)", param="hyperparameters.steps", code="quota_exceeded")
        return
    if hp.get("epochs") is not None and rows:
        step_rows = hp["batch_size"] * (hp.get("gradient_accumulation_steps") or 1)  # rows per optimizer step
        implied = math.ceil(hp["epochs"] * math.ceil(rows / step_rows))
        if implied > limit:
            raise Invalid(f"hyperparameters.epochs: {hp['epochs']} epochs of {rows} rows at {step_rows} "
                           f"rows a step is about {implied} steps, over the limit of {limit} "
                           "(SPARSETUNE_MAX_STEPS)", param="hyperparameters.epochs", code="quota_exceeded")
