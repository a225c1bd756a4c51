"""The periodic safety net in every worker: the broker can lose messages (embedded transports never
redeliver; Redis only after its visibility timeout), so queued jobs nobody picked up and running jobs
whose lease expired are enqueued again. A duplicate message is harmless: the claim decides."""

from __future__ import annotations

import logging
import time

from sqlalchemy import or_, select, update

from api import pools
from api.db import session_scope
from api.models import Job, JobStatus
from api.queue import enqueue, enqueue_merge, queue_depth
from api.settings import get_settings
from worker.periodic import Periodic

log = logging.getLogger("sparsetune.reconciler")


def reconcile_once() -> list[str]:
    """Enqueue stale queued jobs and expired leases (re-routed to a live pool that fits); returns the ids sent."""
    settings = get_settings()
    now = time.time()
    stale = now - settings.requeue_after_seconds
    with session_scope() as s:
        queued = list(s.scalars(select(Job).where(
            Job.status == JobStatus.queued, or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale)).limit(100)))
        expired = list(s.scalars(select(Job).where(
            Job.status == JobStatus.running, Job.lease_expires_at < now,
            or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - settings.lease_seconds)).limit(100)))
        live = pools.live_pools(s)
        depth: dict[str, int | None] = {}
        send: list[tuple[str, str]] = []
        for job in queued + expired:
            before = job.pool
            pool = pools.reroute(s, job)
            if job.status == JobStatus.queued and job.enqueued_at is not None and pool.name == before and (pool.name in live or not live):
                # while messages wait in a live pool's queue, its queued jobs are still on their way: re-send
                # only to an empty queue (or one we cannot see), so a busy worker does not collect duplicates
                if pool.queue not in depth:
                    depth[pool.queue] = queue_depth(pool.queue)
                if depth[pool.queue]:
                    continue
            job.enqueued_at = now
            send.append((job.id, pool.queue))
        merges = list(s.scalars(select(Job.id).where(Job.merge_status == "requested",
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


_periodic = Periodic("reconcile", lambda: reconcile_once(), lambda: get_settings().reconcile_seconds)
start, stop = _periodic.start, _periodic.stop
