"""Thin tasks: claim the job row, supervise the training child, record what its exit means.

Redelivered or duplicate messages are no-ops (the claim fails). What each exit of the child means, and which
are retried, is decided in ``worker/failures.py``: a child killed by a signal, crashing, or losing the database
is handed back (resumes from its checkpoint) until ``max_attempts``; the engine's own errors (bad data, out of
memory) fail the job with their message, written by the child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from service import workdirs
from service.db import retry_on_disconnect, session_scope
from service.models import Job, JobStatus, MergeStatus
from service.queue import TASK_MERGE_JOB, TASK_RUN_JOB, enqueue
from service.settings import get_settings
from worker import failures, heartbeat, leases
from worker.celery_app import app
from worker.child import merge_main, train_main
from worker.failures import ChildExit, Outcome

log = logging.getLogger("sparsetune.worker")
_ctx = multiprocessing.get_context("spawn")


@app.task(name=TASK_RUN_JOB, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> Outcome:
    """Run one job if this worker can claim it."""
    token = leases.claim(job_id, heartbeat.WORKER_ID)
    if token is None:  # a duplicate or late message: someone else holds the job, or it has ended
        log.info("skipped: not claimable", extra={"job_id": job_id})
        return Outcome.skipped
    log.info("claimed", extra={"job_id": job_id})
    heartbeat.set_current_job(job_id)
    try:
        outcome = supervise(job_id, token)
    finally:
        heartbeat.set_current_job(None)
        _sweep(job_id)
    log.info("done", extra={"job_id": job_id, "status": outcome})
    return outcome


def _sweep(job_id: str) -> None:
    """A child killed outright left its work folder (the user's data) behind: remove it now. If the database
    is away, the reconciler's next tick does."""
    try:
        workdirs.sweep(job_id)
    except Exception:  # noqa: BLE001 - never fail a run over housekeeping
        log.warning("work folder sweep failed", extra={"job_id": job_id}, exc_info=True)


def supervise(job_id: str, token: int) -> Outcome:
    """Start the child, keep the lease while it lives, and turn SIGTERM into a hand-back."""
    stop = _ctx.Event()
    proc = _ctx.Process(target=train_main, args=(job_id, token, stop), name=f"train-{job_id}", daemon=False)
    previous = _install_sigterm(stop)
    try:
        proc.start()
        interval = max(0.5, get_settings().lease_seconds / 3)
        while proc.is_alive():
            proc.join(interval)
            if proc.is_alive():
                try:
                    leases.renew(job_id, token)
                except DBAPIError:
                    # the database stayed away past the retries: the child notices too and hands the job back
                    log.warning("lease renewal failed", extra={"job_id": job_id})
                    continue
                except leases.LostLease:
                    # finished or cancelled meanwhile, or another worker took it: the child stops at its
                    # next step by itself; terminate only a child that does not
                    proc.join(30)
                    if proc.is_alive():
                        log.warning("lease lost; stopping the child", extra={"job_id": job_id})
                        proc.terminate()
                        proc.join(30)
                    # a child that recorded its own end (succeeded, failed, cancelled) exits 0 right after
                    return Outcome.recorded if proc.exitcode == ChildExit.recorded else Outcome.lost
        return after_exit(job_id, token, proc.exitcode)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            if stop.is_set():  # let Celery shut down warmly now that the job is handed back
                os.kill(os.getpid(), signal.SIGTERM)


def after_exit(job_id: str, token: int, code: int | None) -> Outcome:
    """Act on the child's exit as ``worker/failures.py`` reads it."""
    if code == ChildExit.recorded:
        return Outcome.recorded
    if code == ChildExit.lost:
        return Outcome.lost
    if code == ChildExit.handback:
        if leases.hand_back(job_id, token, failures.HANDBACK_MESSAGE, count_attempt=False):
            enqueue(job_id)
        return Outcome.handed_back
    how = failures.how_it_died(code)
    attempts, step = retry_on_disconnect(lambda: _attempts_and_checkpoint(job_id), "reading the job")
    if failures.resumes(attempts):
        if leases.hand_back(job_id, token, failures.resume_message(how, step)):
            enqueue(job_id)
        return Outcome.requeued
    try:
        leases.finish(job_id, token, JobStatus.failed, failures.crashed(how, attempts).as_error())
    except leases.LostLease:
        return Outcome.lost
    return Outcome.failed


def _attempts_and_checkpoint(job_id: str) -> tuple[int, int | None]:
    with session_scope() as s:
        job = s.get(Job, job_id)
        return job.attempts, job.checkpoint_step


def _install_sigterm(stop):
    """Only the main thread may set handlers (the solo pool runs tasks there)."""
    try:
        def handler(signum, frame):  # noqa: ARG001
            stop.set()

        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


@app.task(name=TASK_MERGE_JOB, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def merge_job(job_id: str) -> str:
    """Build merged.tar for a succeeded job (once, even if the message is delivered twice)."""
    with session_scope() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.succeeded,
                                          Job.merge_status == MergeStatus.requested)
                        .values(merge_status=MergeStatus.running))
        if res.rowcount != 1:
            return Outcome.skipped
    proc = _ctx.Process(target=merge_main, args=(job_id,), name=f"merge-{job_id}")
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(merge_status=MergeStatus.failed))
        return MergeStatus.failed
    return MergeStatus.done



