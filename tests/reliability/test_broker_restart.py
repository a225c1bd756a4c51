"""Redis restarted (no persistence) while jobs wait in the queue: the messages are gone, the jobs are not.
The database is the truth; the reconciler re-enqueues what the broker lost, the API's producer and the
worker's consumer reconnect by themselves, and no job runs twice."""

from __future__ import annotations

import json

import pytest

from tests.api.fixtures import start_worker, stop_process, wait_for
from tests.jobs import create, finished, job_of


def queued_jobs(faults) -> list[str]:
    """The job ids in messages waiting in the broker for our queue (Redis lists named after it)."""
    r = faults.redis.client()
    try:
        payloads = [m for k in r.scan_iter("st-reliability*") if r.type(k) == b"list" for m in r.lrange(k, 0, -1)]
    finally:
        r.close()
    return [json.loads(p)["headers"]["argsrepr"].split("'")[1] for p in payloads]


@pytest.mark.timeout(300)
def test_redis_restart_with_jobs_queued_loses_no_job(faults, http, auth, dataset):
    worker = start_worker({}, faults.logs / "worker-redis.log")
    try:
        busy = create(http, auth, dataset, steps=4)  # holds the worker (solo pool, prefetch 1) across the restart
        wait_for(lambda: job_of(http, auth, busy)["status"] == "running", 120, 0.1, "the first job to start")
        waiting = [create(http, auth, dataset, steps=2) for _ in range(2)]
        # the waiting jobs' messages are in the queue; on a loaded machine the busy job's lease may lapse and
        # the reconciler send it again too (a duplicate the claim turns away), so it may be there as well
        assert set(waiting) <= set(queued_jobs(faults))
        faults.redis.stop()
        faults.redis.start()
        assert queued_jobs(faults) == []  # the restart lost the queued messages
        assert all(job_of(http, auth, j)["status"] == "queued" for j in waiting)
        later = create(http, auth, dataset, steps=2)
        assert later in queued_jobs(faults)  # the API's producer reconnected to the new Redis by itself
        assert http.post(f"/v1/jobs/{later}/cancel", headers=auth).status_code == 200  # (spares a run)
        jobs = [wait_for(lambda j=j: finished(http, auth, j), 240, 0.5, f"job {j} to finish") for j in (busy, *waiting)]
    finally:
        stop_process(worker, timeout=30)
    for job in jobs:
        assert job["status"] == "succeeded", job["error"]
        assert job["attempts"] == 1  # re-sent messages were duplicates the claim turned away
    assert job_of(http, auth, later)["status"] == "cancelled"
    # the reconciler (the worker's or the API's, whichever ticked first), not luck, brought them back
    log = (faults.logs / "worker-redis.log").read_text() + (faults.logs / "api.log").read_text()
    assert "re-enqueued" in log
