"""The safety net that notices what nobody reported: queued jobs whose message the broker lost (embedded
transports never redeliver; Redis only after its visibility timeout), running jobs whose lease expired (their
worker died or was cut off) and merges nobody picked up. Each is sent again, re-routed to a live pool that
fits; a duplicate message is harmless, the claim decides.

It runs in every worker (worker/reconciler.py) and beside the API (api/background.py), so a dead worker is
noticed even when no worker is left alive. ``sparsetune up`` also calls :func:`release_worker` the moment a
worker it started dies, so its job resumes at once rather than after ``SPARSETUNE_LEASE_SECONDS``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service import pools, webhooks
from service.crud import add_event, drop_checkpoint
from service.db import session_scope
from service.models import Job, JobStatus, Worker
from service.queue import enqueue, enqueue_merge, queue_depth
from service.settings import get_settings
from service.states import EventType, JobErrorCode, MergeStatus, WebhookEventType, WorkerStatus

log = logging.getLogger("sparsetune.reconciler")


def reconcile_once(released: Collection[str] = ()) -> list[str]:
    """Enqueue stale queued jobs and expired leases, fail expired leases that used their last attempt;
    returns the ids sent. ``released``: jobs whose lease was just expired on purpose (their worker is known
    dead), sent now even if their last message is recent."""
    settings = get_settings()
    now = time.time()
    stale = now - settings.requeue_after_seconds
    with session_scope() as s:
        queued = list(s.scalars(select(Job).where(
            Job.status == JobStatus.queued, or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale)).limit(100)))
        # an expired lease is sent again unless a message went out within the lease (still on its way)
        expired = list(s.scalars(select(Job).where(
            Job.status == JobStatus.running, Job.lease_expires_at < now,
            or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - settings.lease_seconds,
                Job.attempts >= settings.max_attempts, Job.id.in_(list(released)))).limit(100)))
        resend = []
        for job in expired:
            if job.attempts >= settings.max_attempts:
                _give_up(s, job, now, settings.max_attempts)
            else:
                resend.append(job)
        send = _route(s, queued + resend, now)
        merges = list(s.scalars(select(Job.id).where(Job.merge_status == MergeStatus.requested,
                                                     or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale))))
        if merges:
            s.execute(update(Job).where(Job.id.in_(merges)).values(enqueued_at=now))
    for job_id, queue in send:
        enqueue(job_id, queue)
    for job_id in merges:
        enqueue_merge(job_id)
    if send:
        log.info("re-enqueued %d job(s)", len(send))
    return [job_id for job_id, _ in send]


def _route(s: Session, jobs: list[Job], now: float) -> list[tuple[str, str]]:
    """(job id, queue) for each job worth a message now; marks them sent."""
    live = pools.live_pools(s)
    depth: dict[str, int | None] = {}
    send: list[tuple[str, str]] = []
    for job in jobs:
        before = job.pool
        pool = pools.reroute(s, job)
        if job.status == JobStatus.queued and job.enqueued_at is not None and pool.name == before and (
                pool.name in live or not live):
            # while messages wait in a live pool's queue, its queued jobs are still on their way: re-send
            # only to an empty queue (or one we cannot see), so a busy worker does not collect duplicates
            if pool.queue not in depth:
                depth[pool.queue] = queue_depth(pool.queue)
            if depth[pool.queue]:
                continue
        job.enqueued_at = now
        send.append((job.id, pool.queue))
    return send


def _give_up(s: Session, job: Job, now: float, max_attempts: int) -> None:
    """Fail a job whose worker vanished on its last attempt (the fencing token moves on, so a run that is
    somehow still alive writes nothing more). Conditional: another reconciler or a claim may have won."""
    error = {"code": JobErrorCode.worker_crashed,
             "message": f"the worker running the job stopped (its lease expired) on attempt {job.attempts} of "
                        f"{max_attempts} (SPARSETUNE_MAX_ATTEMPTS)"}
    res = s.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.running,
                                      Job.fencing_token == job.fencing_token, Job.lease_expires_at < now)
                    .values(status=JobStatus.failed, finished_at=now, lease_expires_at=None, child_pid=None,
                            error=error, fencing_token=Job.fencing_token + 1))
    if res.rowcount != 1:
        return
    drop_checkpoint(s, job.id)
    s.refresh(job)
    add_event(s, job, EventType.status, {"status": JobStatus.failed, "phase": job.phase, "error": error})
    add_event(s, job, EventType.end, {"status": JobStatus.failed, "error": error})
    webhooks.enqueue(s, job, WebhookEventType.job_failed)
    log.warning("failed after its last attempt: worker lost", extra={"job_id": job.id})


def release_worker(host: str, pid: int, since: float) -> list[str]:
    """The worker process ``pid`` on ``host``, started at ``since``, is known dead and its training child
    killed (its supervisor saw to both): mark its heartbeat row ``lost`` and expire its jobs' leases now, then
    reconcile them (sent again, or failed after their last attempt). Returns the ids sent."""
    now = time.time()
    with session_scope() as s:
        ids = list(s.scalars(select(Worker.id).where(Worker.host == host, Worker.pid == pid,
                                                     Worker.started_at >= since - 5)))
        if not ids:
            return []
        s.execute(update(Worker).where(Worker.id.in_(ids)).values(status=WorkerStatus.lost, current_job_id=None))
        jobs = list(s.scalars(update(Job).where(Job.worker_id.in_(ids), Job.status == JobStatus.running)
                              .values(lease_expires_at=now - 1).returning(Job.id)))
    for job_id in jobs:
        log.warning("its worker died; lease released", extra={"job_id": job_id})
    return reconcile_once(released=set(jobs))
