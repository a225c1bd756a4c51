"""The job row as a state machine: claim by compare-and-set, fencing tokens, lease renewal and hand-back.

A claim succeeds on a queued job or a running job whose lease expired, and bumps the fencing token; every
later write by that run says ``WHERE fencing_token = :token``, so a run that lost its lease writes nothing.
Each transaction here is retried through a short database outage (``retried``), its fence checked again.
"""

from __future__ import annotations

import time

from sqlalchemy import and_, func, or_, update
from sqlalchemy.orm import Session

from service import webhooks
from service.crud import add_event, drop_checkpoint
from service.db import retried, session_scope
from service.models import Job, JobStatus
from service.settings import get_settings
from service.states import EventType, WebhookEventType


class LostLease(RuntimeError):
    """Another worker holds the job now (or it finished): stop without writing anything."""


@retried("claim")
def claim(job_id: str, worker_id: str | None = None) -> int | None:
    """Take the job if it is free; returns the new fencing token, or None (a duplicate message: no-op)."""
    settings = get_settings()
    now, lease = time.time(), settings.lease_seconds
    with session_scope() as s:
        # an expired lease on its last attempt is not taken: the reconciler fails that job (service/reconcile.py)
        token = s.execute(
            update(Job)
            .where(Job.id == job_id, or_(Job.status == JobStatus.queued,
                                         and_(Job.status == JobStatus.running, Job.lease_expires_at < now,
                                              Job.attempts < settings.max_attempts)))
            .values(status=JobStatus.running, fencing_token=Job.fencing_token + 1, lease_expires_at=now + lease,
                    attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now), child_pid=None,
                    worker_id=worker_id)
            .returning(Job.fencing_token)
        ).scalar()
        if token is None:
            return None
        job = s.get(Job, job_id)
        add_event(s, job, EventType.status, {"status": JobStatus.running, "phase": job.phase, "attempt": job.attempts,
                                     "pool": job.pool, "worker": worker_id})
        return token


def fenced(s: Session, job_id: str, token: int, **values: object) -> None:
    """Update the job only if this run still holds it (also takes the row lock on Postgres)."""
    values = values or {"fencing_token": token}  # nothing to change: still take the row and check it
    res = s.execute(update(Job).where(Job.id == job_id, Job.fencing_token == token,
                                      Job.status == JobStatus.running).values(**values))
    if res.rowcount != 1:
        raise LostLease(f"job {job_id}: fencing token {token} is stale")


@retried("lease renewal")
def renew(job_id: str, token: int) -> bool:
    """Extend the lease; returns cancel_requested. Raises LostLease if the job is no longer ours."""
    now = time.time()
    with session_scope() as s:
        flag = s.execute(update(Job).where(Job.id == job_id, Job.fencing_token == token,
                                           Job.status == JobStatus.running)
                         .values(lease_expires_at=now + get_settings().lease_seconds)
                         .returning(Job.cancel_requested)).scalar()
    if flag is None:
        raise LostLease(f"job {job_id}: fencing token {token} is stale")
    return bool(flag)


@retried("hand-back")
def hand_back(job_id: str, token: int, message: str, count_attempt: bool = True) -> bool:
    """Put a running job back in the queue (it resumes from its checkpoint); False if it was not ours."""
    with session_scope() as s:
        values: dict[str, object] = {"status": JobStatus.queued, "lease_expires_at": None, "child_pid": None,
                                     "enqueued_at": time.time()}
        if not count_attempt:
            values["attempts"] = Job.attempts - 1
        try:
            fenced(s, job_id, token, **values)
        except LostLease:
            return False
        job = s.get(Job, job_id)
        add_event(s, job, EventType.log, {"level": "warning", "message": message})
        add_event(s, job, EventType.status, {"status": JobStatus.queued, "phase": job.phase})
    return True


def finish(job_id: str, token: int, status: JobStatus, error: dict | None = None, s: Session | None = None,
           **values: object) -> None:
    """The one way a run ends: status, time, error, and the `end` event, in the caller's transaction."""
    def _do(sess: Session) -> None:
        fenced(sess, job_id, token, status=status, finished_at=time.time(), lease_expires_at=None,
               error=error, child_pid=None, **values)
        drop_checkpoint(sess, job_id)  # ended in any way: it will never resume
        job = sess.get(Job, job_id)
        sess.refresh(job)
        add_event(sess, job, EventType.status, {"status": status, "phase": job.phase, "error": error})
        add_event(sess, job, EventType.end, {"status": status, "error": error})
        webhooks.enqueue(sess, job, WebhookEventType.for_status(status))  # the outbox, in this transaction

    if s is not None:
        _do(s)  # the caller's transaction: the caller retries it whole
    else:
        @retried("finishing the job")
        def _own() -> None:
            with session_scope() as sess:
                _do(sess)

        _own()
