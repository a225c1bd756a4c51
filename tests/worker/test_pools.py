"""Two real worker processes on two pools (two Celery queues): jobs route by estimated memory, heartbeats list
the fleet, a job too big for every pool is refused at submission, and a job whose worker host is killed is
taken by the other pool (which fits it) and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests import factories
from tests.api.fixtures import environment, set_models, start_worker, stop_process, wait_for

SMALL = {"batch_size": 2, "max_seq_len": 16}
LARGE = {"batch_size": 8, "max_seq_len": 64}
HUGE = {"batch_size": 64, "max_seq_len": 512}


def _peak(model_dir, hp: dict) -> int:
    """The job's estimate as job creation makes it: its rows' token lengths, on the workers' device (cpu)."""
    from smt_core.estimate import estimate, load_config, token_stats

    tokens = token_stats(factories.completion_rows(48), "prompt_completion", model_dir)
    return estimate(load_config(model_dir), "smt", 4096, ["q", "k", "v"], hp["batch_size"], hp["max_seq_len"],
                    {"block_size": 16}, device="cpu", tokens=tokens)["memory"]["peak"]


@pytest.fixture(scope="module")
def fleet(service_env, tiny_llama_dir, tmp_path_factory) -> Iterator[dict[str, subprocess.Popen]]:
    """Pool "small" holds the SMALL job only, "large" holds the LARGE one; one worker each, 1 s heartbeats."""
    small, large = _peak(tiny_llama_dir, SMALL), _peak(tiny_llama_dir, LARGE)
    assert small < large < _peak(tiny_llama_dir, HUGE)
    env = {"SPARSETUNE_POOLS": json.dumps({"small": (small + large) // 2, "large": large * 3 // 2}),
           "SPARSETUNE_HEARTBEAT_SECONDS": "1"}
    logs = tmp_path_factory.mktemp("fleet")
    with environment(env):
        _retire_other_modules_jobs()
        set_models({"tiny-llama": str(tiny_llama_dir)})
        procs: dict[str, subprocess.Popen] = {}
        try:
            for pool in ("small", "large"):
                procs[pool] = start_worker({"SPARSETUNE_WORKER_POOL": pool}, logs / f"{pool}.log")
            yield procs
        finally:
            for pool, proc in procs.items():
                stop_process(proc, timeout=30)
                print(pool, (logs / f"{pool}.log").read_text()[-2000:])


def _retire_other_modules_jobs() -> None:
    """Jobs other test modules left queued or running would be re-routed to this fleet by the reconciler
    (their pool is not configured here): end them first, so each worker starts idle and runs only ours."""
    import time as _time

    from sqlalchemy import update

    from service.db import session_scope
    from service.models import Job, JobStatus

    with session_scope() as s:
        s.execute(update(Job).where(Job.status.in_([JobStatus.queued, JobStatus.running]))
                  .values(status=JobStatus.cancelled, finished_at=_time.time(), lease_expires_at=None))


@pytest.fixture()
def dataset(client, auth) -> str:
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(48)).encode()
    return client.post("/v1/datasets", headers=auth, files={"file": ("pc.jsonl", data)}).json()["id"]


def body(dataset: str, hp: dict, steps: int) -> dict:
    return {"model": "tiny-llama", "training_dataset": dataset, "method": "smt", "budget": 4096,
            "hyperparameters": {"steps": steps, **hp}, "method_options": {"block_size": 16, "selection_steps": 2}}


def workers(client, auth) -> dict[int, dict]:
    r = client.get("/v1/workers", headers=auth)
    assert r.status_code == 200, r.text
    return {w["pid"]: w for w in r.json()["data"]}


def job_of(client, auth, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}", headers=auth).json()


def finished(client, auth, job_id: str) -> dict | None:
    job = job_of(client, auth, job_id)
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


@pytest.mark.timeout(300)
def test_jobs_route_by_estimated_memory_and_heartbeats_list_the_fleet(client, auth, other_auth, dataset, fleet):
    listed = wait_for(lambda: (w := workers(client, auth)) and all(p.pid in w for p in fleet.values()) and w,
                      30, 0.3, "both workers' heartbeats")
    for pool, proc in fleet.items():
        w = listed[proc.pid]
        assert w["pool"] == pool and w["status"] == "idle" and w["current_job"] is None
        assert w["host"] and w["device"] and w["device_memory"] > 0 and w["pool_memory"] > 0
        assert time.time() - w["last_seen_at"] < 10
    ids = {pool: listed[proc.pid]["id"] for pool, proc in fleet.items()}

    # the smallest pool that fits: each job lands on its own worker
    small = client.post("/v1/jobs", headers=auth, json=body(dataset, SMALL, 3)).json()
    large = client.post("/v1/jobs", headers=auth, json=body(dataset, LARGE, 3)).json()
    assert (small["pool"], large["pool"]) == ("small", "large")
    assert 0 < small["estimated_memory"] < large["estimated_memory"]
    for job, pool in ((small, "small"), (large, "large")):
        done = wait_for(lambda j=job: finished(client, auth, j["id"]), 180, 0.5, f"the {pool} job to finish")
        assert done["status"] == "succeeded", done["error"]
        assert done["worker"] == ids[pool] and done["attempts"] == 1 and done["merge_status"] is None
    newer = client.get(f"/v1/jobs/{small['id']}/metrics?after_step=1", headers=auth).json()["data"]
    assert [m["step"] for m in newer] == [2, 3]  # a client that has step 1 fetches only the rest

    # too big for every pool: refused at submission, saying why, and nothing is written
    n_jobs = len(client.get("/v1/jobs?limit=100", headers=auth).json()["data"])
    r = client.post("/v1/jobs", headers=auth, json=body(dataset, HUGE, 3))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == "hyperparameters" and "largest worker pool, large" in err["message"]
    assert "smaller batch_size" in err["message"]
    assert len(client.get("/v1/jobs?limit=100", headers=auth).json()["data"]) == n_jobs

    # a busy worker shows its job to the job's owner only
    job_id = client.post("/v1/jobs", headers=auth, json=body(dataset, SMALL, 6)).json()["id"]
    w = wait_for(lambda: (x := workers(client, auth)[fleet["small"].pid])["current_job"] == job_id and x,
                 120, 0.2, "the small worker to report the job")
    assert w["status"] == "busy"
    assert workers(client, other_auth)[fleet["small"].pid]["current_job"] is None
    assert wait_for(lambda: finished(client, auth, job_id), 180, 0.5, "the job")["status"] == "succeeded"


@pytest.mark.timeout(300)
def test_job_of_a_killed_worker_host_moves_to_a_pool_that_fits_and_resumes(client, auth, dataset, fleet):
    """Runs last: it kills the small pool's worker and its training child (the whole host, as far as the job
    can tell). The lease expires, the small pool has no heartbeat, so the large pool takes the job."""
    from service.db import session_scope
    from service.models import Job

    job_id = client.post("/v1/jobs", headers=auth, json=body(dataset, SMALL, 30)).json()["id"]

    def checkpointed_on_small():
        with session_scope() as s:
            job = s.get(Job, job_id)
            return job.pool == "small" and (job.checkpoint_step or 0) >= 2 and job.child_pid

    wait_for(checkpointed_on_small, 180, 0.1, "a stored checkpoint on the small pool")
    os.killpg(fleet["small"].pid, signal.SIGKILL)
    fleet["small"].wait(10)
    job = wait_for(lambda: finished(client, auth, job_id), 240, 0.5, "the job to finish on the large pool")
    assert job["status"] == "succeeded", job["error"]
    assert job["pool"] == "large" and job["attempts"] == 2 and job["steps_completed"] == 30
    listed = workers(client, auth)
    assert job["worker"] == listed[fleet["large"].pid]["id"]
    assert listed[fleet["small"].pid]["status"] == "lost"
    events = client.get(f"/v1/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]
    assert any("resumed from the checkpoint" in e["data"].get("message", "") for e in events)
    claims = [e["data"]["pool"] for e in events if e["type"] == "status" and "attempt" in e["data"]]
    assert claims == ["large", "small"]  # newest first: one claim per pool
