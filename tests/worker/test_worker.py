"""A real Celery worker process against Postgres and Redis: claim, train in a child, record, cancel, crash
recovery from a checkpoint, duplicate messages, the reconciler and failures with a message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests import factories
from tests.api.fixtures import set_models, start_worker, stop_process, wait_for
from tests.jobs import create, events_of, finished, job_of


@pytest.fixture(scope="module")
def models(service_env, tiny_llama_dir, config_only_model) -> dict[str, str]:
    m = {"cfg-llama": str(config_only_model), "tiny-llama": str(tiny_llama_dir)}
    set_models(m)
    return m


@pytest.fixture(scope="module")
def live_worker(models, tmp_path_factory) -> Iterator[subprocess.Popen]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = start_worker({}, log)
    proc.log_path = log  # type: ignore[attr-defined]  # read by tests that check what the worker did
    try:
        yield proc
    finally:
        stop_process(proc, timeout=30)
        print(log.read_text()[-4000:])


@pytest.fixture()
def dataset(client, auth) -> str:
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(48)).encode()
    return client.post("/v1/datasets", headers=auth, files={"file": ("pc.jsonl", data)}).json()["id"]


@pytest.mark.timeout(240)
def test_job_trains_records_rows_and_ignores_duplicate_message(client, auth, dataset, live_worker):
    job_id = create(client, auth, dataset, steps=4)
    job = wait_for(lambda: finished(client, auth, job_id), 180, 0.5, "the job to finish")
    assert job["status"] == "succeeded", job["error"]
    assert job["steps_completed"] == 4 and job["total_steps"] == 4 and job["attempts"] == 1
    assert job["trainable_params"] == 4096 and job["total_params"] > 4096
    assert job["metrics"]["train_loss"] > 0 and set(job["memory"]) >= {"weights", "optimizer", "peak"}
    assert job["hyperparameters"]["learning_rate"] > 0  # resolved from the method's default
    assert job["started_at"] <= job["finished_at"] and job["phase"] is None
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth).json()["data"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and metrics[-1]["eval_loss"] is not None
    blocks = client.get(f"/v1/jobs/{job_id}/blocks", headers=auth).json()
    assert blocks["block_size"] == 16
    assert sum(len(m["blocks"]) for m in blocks["modules"]) * 16 * 16 == 4096
    arts = {a["name"]: a for a in client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()["data"]}
    assert {"adapter.safetensors", "adapter_config.json"} <= set(arts)
    r = client.get(f"/v1/jobs/{job_id}/artifacts/adapter.safetensors", headers=auth)
    import hashlib

    assert r.headers["x-checksum-sha256"] == arts["adapter.safetensors"]["sha256"]
    assert hashlib.sha256(r.content).hexdigest() == arts["adapter.safetensors"]["sha256"]
    assert int(r.headers["content-length"]) == len(r.content) == arts["adapter.safetensors"]["bytes"]
    types = [e["type"] for e in events_of(client, auth, job_id)]
    assert types[-1] == "end" and types.count("end") == 1 and "metric" in types
    # a duplicate delivery is a no-op: the claim fails, nothing is written
    from service.queue import enqueue

    n_events = len(types)
    enqueue(job_id)

    def skipped() -> bool:
        lines = [json.loads(line) for line in live_worker.log_path.read_text().splitlines() if line.startswith("{")]
        return any(e.get("job_id") == job_id and e["message"].startswith("skipped") for e in lines)

    wait_for(skipped, 30, 0.2, "the worker to read the duplicate message and skip it")
    assert job_of(client, auth, job_id)["attempts"] == 1 and len(events_of(client, auth, job_id)) == n_events
    from tests.api.fixtures import count_rows

    assert count_rows("checkpoints") == 0  # finished jobs keep artifacts, not checkpoints


@pytest.mark.timeout(240)
def test_cancel_running_job_stops_within_a_step(client, auth, dataset, live_worker):
    job_id = create(client, auth, dataset, steps=400)
    wait_for(lambda: job_of(client, auth, job_id)["steps_completed"] >= 1, 180, 0.2, "training to start")
    r = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    at_cancel = r.json()["steps_completed"]
    job = wait_for(lambda: finished(client, auth, job_id), 60, 0.2, "the job to stop")
    assert job["status"] == "cancelled"
    assert job["steps_completed"] <= at_cancel + 2  # the step in flight, plus the one being recorded
    assert events_of(client, auth, job_id)[-1]["type"] == "end"
    assert client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()["data"] == []


@pytest.mark.timeout(300)
def test_sigkill_training_child_resumes_from_checkpoint_and_succeeds_once(client, auth, dataset, live_worker):
    from service.db import session_scope
    from service.models import Job

    job_id = create(client, auth, dataset, steps=24)

    def pid_after_checkpoint():
        with session_scope() as s:
            job = s.get(Job, job_id)
            return job.child_pid if (job.checkpoint_step or 0) >= 2 and job.child_pid else None

    pid = wait_for(pid_after_checkpoint, 180, 0.1, "a stored checkpoint")
    os.kill(pid, signal.SIGKILL)
    job = wait_for(lambda: finished(client, auth, job_id), 240, 0.5, "the resumed job to finish")
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and job["steps_completed"] == 24
    events = events_of(client, auth, job_id)
    messages = [e["data"].get("message", "") for e in events if e["type"] == "log"]
    assert any("died (signal 9); resuming from its checkpoint" in m for m in messages), messages
    assert any("resumed from the checkpoint" in m for m in messages), messages
    assert [e["type"] for e in events].count("end") == 1
    assert [e["data"]["status"] for e in events if e["type"] == "status"].count("succeeded") == 1
    steps = [m["step"] for m in client.get(f"/v1/jobs/{job_id}/metrics", headers=auth).json()["data"]]
    assert steps == list(range(1, 25))  # repeated steps after the resume appear once


@pytest.mark.timeout(120)
def test_reconciler_picks_up_unenqueued_job_and_engine_error_fails_it(client, auth, dataset, live_worker):
    """A job the broker never heard of still runs; a model without weights fails with the engine's message."""
    from api.schemas import JobCreate
    from service import crud
    from service.db import session_scope

    body = JobCreate(model="cfg-llama", training_dataset=dataset, method="smt", budget=4096,
                     hyperparameters={"steps": 2, "batch_size": 4, "max_seq_len": 32})
    with session_scope() as s:
        from service.security import authenticate

        owner = authenticate(s, auth["Authorization"].split()[1]).id
        job_id = crud.create_job(s, owner, body, {"steps": 2, "batch_size": 4, "max_seq_len": 32,
                                                  "epochs": None, "learning_rate": None, "lr_warmup_steps": 0},
                                 None).id
    job = wait_for(lambda: finished(client, auth, job_id), 90, 0.5, "the reconciler to run the job")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_request" and "safetensors" in job["error"]["message"]


@pytest.mark.timeout(240)
def test_two_device_job_trains_on_two_gloo_ranks_beside_the_child(client, auth, dataset, live_worker):
    """hyperparameters.num_devices: the child is rank 0 (it records), one more rank trains beside it."""
    body = {"model": "tiny-llama", "training_dataset": dataset, "method": "smt", "budget": 4096,
            "hyperparameters": {"steps": 4, "batch_size": 4, "max_seq_len": 32, "num_devices": 2},
            "method_options": {"block_size": 16, "selection_steps": 2}}
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 201, r.text
    job = wait_for(lambda: finished(client, auth, r.json()["id"]), 180, 0.5, "the two-device job to finish")
    assert job["status"] == "succeeded", job["error"]
    assert job["steps_completed"] == 4 and job["trainable_params"] == 4096
    assert job["hyperparameters"]["num_devices"] == 2
    config = client.get(f"/v1/jobs/{job['id']}/artifacts/adapter_config.json", headers=auth).json()
    assert config["hyperparameters"]["num_devices"] == 2 and config["hyperparameters"]["batch_size"] == 4


@pytest.mark.timeout(300)
def test_sigterm_worker_hands_job_back_and_another_worker_resumes_it(client, auth, dataset, live_worker,
                                                                       tmp_path):
    """Runs last in this module: it stops the module's worker."""
    from service.db import session_scope
    from service.models import Job

    job_id = create(client, auth, dataset, steps=30)

    def checkpointed():
        with session_scope() as s:
            return (s.get(Job, job_id).checkpoint_step or 0) >= 2

    wait_for(checkpointed, 180, 0.1, "a stored checkpoint")
    live_worker.send_signal(signal.SIGTERM)  # the worker alone, as `docker stop` does
    assert live_worker.wait(60) == 0
    job = job_of(client, auth, job_id)
    assert job["status"] == "queued" and job["attempts"] == 0, job
    second = start_worker({}, tmp_path / "worker2.log")
    try:
        job = wait_for(lambda: finished(client, auth, job_id), 240, 0.5, "the resumed job to finish")
    finally:
        stop_process(second, timeout=30)
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["steps_completed"] == 30
    messages = [e["data"].get("message", "") for e in events_of(client, auth, job_id) if e["type"] == "log"]
    assert any("handed back" in m for m in messages) and any("resumed from the checkpoint" in m for m in messages)
