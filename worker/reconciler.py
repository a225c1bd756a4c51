"""The periodic safety net in every worker: the broker can lose messages (embedded transports never
redeliver; Redis only after its visibility timeout), so queued jobs nobody picked up and running jobs
whose lease expired are enqueued again. A duplicate message is harmless: the claim decides."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import and_, or_, select, update

from api.db import session_scope
from api.models import Job, JobStatus
from api.queue import enqueue, enqueue_merge, queue_depth
from api.settings import get_settings

log = logging.getLogger("sparsetune.reconciler")
_stop = threading.Event()
_thread: threading.Thread | None = None


def reconcile_once() -> list[str]:
    """Enqueue stale queued jobs and expired leases; returns the job ids sent."""
    settings = get_settings()
    now = time.time()
    stale = now - settings.requeue_after_seconds
    # while messages wait in the broker, queued jobs are still on their way: re-send only to an empty queue
    # (or one we cannot see), so a busy worker does not collect duplicates of every waiting job
    queued_lost = Job.status == JobStatus.queued
    if queue_depth():
        queued_lost = queued_lost & Job.enqueued_at.is_(None)  # only jobs that were never sent
    with session_scope() as s:
        ids = list(s.scalars(select(Job.id).where(or_(
            and_(queued_lost, or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale)),
            and_(Job.status == JobStatus.running, Job.lease_expires_at < now,
                 or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - settings.lease_seconds))))
            .limit(100)))
        merges = list(s.scalars(select(Job.id).where(Job.merge_status == "requested",
                                                     or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale))))
        if ids or merges:
            s.execute(update(Job).where(Job.id.in_(ids + merges)).values(enqueued_at=now))
    for job_id in ids:
        enqueue(job_id)
    for job_id in merges:
        enqueue_merge(job_id)
    if ids:
        log.info("re-enqueued %d job(s)", len(ids))
    return ids


def _loop() -> None:
    interval = get_settings().reconcile_seconds
    while not _stop.wait(interval):
        try:
            reconcile_once()
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the thread; try again next tick
            log.warning("reconcile failed", exc_info=True)


def start() -> None:
    global _thread
    if _thread is None or not _thread.is_alive():
        _stop.clear()
        _thread = threading.Thread(target=_loop, name="sparsetune-reconciler", daemon=True)
        _thread.start()


def stop() -> None:
    _stop.set()
