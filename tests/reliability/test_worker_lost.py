"""A worker host disappears mid-job (worker and training child SIGKILLed together, nobody hands the job
back): its lease expires and another worker resumes the job from the stored checkpoint."""

from __future__ import annotations

import os
import signal

import pytest

from service.db import session_scope
from service.models import Job
from service.workdirs import alive
from tests.api.fixtures import start_worker, stop_process, wait_for
from tests.jobs import create, events_of, finished, log_messages, metric_steps


@pytest.mark.timeout(300)
def test_worker_host_gone_lease_expires_and_another_worker_finishes_job(faults, http, auth, dataset):
    first = start_worker({}, faults.logs / "worker-a.log")
    try:
        job_id = create(http, auth, dataset, steps=30)

        def child_after_checkpoint() -> int | None:
            with session_scope() as s:
                job = s.get(Job, job_id)
                return job.child_pid if (job.checkpoint_step or 0) >= 2 and job.child_pid else None

        child = wait_for(child_after_checkpoint, 180, 0.1, "a stored checkpoint")
        os.killpg(first.pid, signal.SIGKILL)  # the whole host: the worker and its training child, no goodbye
        first.wait(10)
        wait_for(lambda: not alive(child), 10, 0.1, "the training child to die with its worker")
    finally:
        stop_process(first)
    with session_scope() as s:
        lost = s.get(Job, job_id)
        assert lost.status == "running" and lost.attempts == 1  # nobody handed it back
        stranded_at_step = lost.steps_completed
    assert stranded_at_step < 30

    second = start_worker({}, faults.logs / "worker-b.log")
    try:
        job = wait_for(lambda: finished(http, auth, job_id), 240, 0.5, "another worker to finish the job")
    finally:
        stop_process(second, timeout=30)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and job["steps_completed"] == 30
    assert any(m.startswith("resumed from the checkpoint at step") for m in log_messages(http, auth, job_id))
    assert metric_steps(http, auth, job_id) == list(range(1, 31))  # steps redone after the resume appear once
    types = [e["type"] for e in events_of(http, auth, job_id)]
    assert types.count("end") == 1
