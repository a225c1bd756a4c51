"""PostgreSQL restarted under a running job: the training child and the worker retry their writes through
the outage and the same run finishes; the API answers 503 with a clear error meanwhile and recovers by
itself once the database is back (its pool reconnects, nobody restarts it)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.api.fixtures import start_worker, stop_process, wait_for
from tests.jobs import create, events_of, finished, job_of, metric_steps

UNAVAILABLE = {"error": {"code": "unavailable", "message": "database unavailable, retry shortly", "param": None}}


@pytest.mark.timeout(300)
def test_postgres_restart_mid_job_worker_retries_and_api_answers_503_until_back(faults, api, http, auth,
                                                                                 dataset):
    worker = start_worker({}, faults.logs / "worker-pg.log")
    try:
        job_id = create(http, auth, dataset, steps=40)
        wait_for(lambda: job_of(http, auth, job_id)["steps_completed"] >= 3, 180, 0.1, "training to start")
        # hold the training child while Postgres stops, so its next writes surely meet the outage: on a quiet
        # machine the tiny model finished its 40 steps during the shutdown (the outage itself stays real)
        child = child_pid(job_id)
        os.kill(child, signal.SIGSTOP)
        try:
            faults.pg.stop()
        finally:
            os.kill(child, signal.SIGCONT)
        try:
            r = http.get(f"/v1/jobs/{job_id}", headers=auth)
            assert r.status_code == 503 and r.json() == UNAVAILABLE, r.text
            assert int(r.headers["retry-after"]) > 0
            r = http.post("/v1/jobs", headers=auth, json={"model": "tiny-llama", "training_dataset": dataset,
                                                          "method": "smt"})
            assert r.status_code == 503 and r.json() == UNAVAILABLE, r.text
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["error"]["message"]
            assert http.get("/healthz").status_code == 200  # the process itself is fine
            time.sleep(3)  # several steps' worth of writes meet the outage
            assert worker.poll() is None
        finally:
            faults.pg.start()
        r = http.get(f"/v1/jobs/{job_id}", headers=auth)  # the first request after the restart already works
        assert r.status_code == 200, r.text
        assert http.get("/readyz").status_code == 200
        job = wait_for(lambda: finished(http, auth, job_id), 240, 0.5, "the job to finish")
    finally:
        stop_process(worker, timeout=30)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1 and job["steps_completed"] == 40  # the same run rode the outage out
    log = (faults.logs / "worker-pg.log").read_text()
    assert "database unavailable during recording progress" in log
    # the reconciler and heartbeat threads say the database is away in one line a tick, without a traceback
    assert "skipped: database unavailable" in log and "reconcile failed" not in log and "heartbeat failed" not in log
    assert metric_steps(http, auth, job_id) == list(range(1, 41))
    assert [e["type"] for e in events_of(http, auth, job_id)].count("end") == 1


def child_pid(job_id: str) -> int:
    """The training process of a running job, straight from the database."""
    from service.db import session_scope
    from service.models import Job

    with session_scope() as s:
        return s.get(Job, job_id).child_pid
