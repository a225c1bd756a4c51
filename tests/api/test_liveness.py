"""What the API knows about live workers without needing one: `/readyz`'s `workers`, a job's `warnings` when
no pool that fits it has a live worker, and the reconciler the API process runs itself, which re-sends an
expired lease (or fails the job after its last attempt) with no worker alive to do it.

Two pools of their own (names unique to the run) keep heartbeat rows other tests left out of the picture:
``tiny`` (1 byte: fits no job, so a worker there is live but takes nothing) and ``huge`` (1024 TiB: fits any).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import update

from service import pools
from service.db import session_scope
from service.models import Job
from service.settings import get_settings
from tests import factories
from tests.api.fixtures import start_worker, stop_process, wait_for
from tests.jobs import events_of, job_of


@pytest.fixture()
def two_pools(monkeypatch, service_env) -> Iterator[tuple[str, str]]:
    tag = secrets.token_hex(3)
    tiny, huge = f"tiny{tag}", f"huge{tag}"
    monkeypatch.setenv("SPARSETUNE_POOLS", json.dumps({tiny: "1B", huge: "1024TiB"}))
    get_settings.cache_clear()
    yield tiny, huge
    monkeypatch.delenv("SPARSETUNE_POOLS")
    get_settings.cache_clear()


@pytest.fixture()
def dataset(client, auth) -> str:
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(16)).encode()
    return client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", data)}).json()["id"]


def new_job(client, auth, dataset: str) -> dict:
    body = {"model": "cfg-llama", "training_dataset": dataset, "method": "smt", "budget": 0.05,
            "hyperparameters": {"steps": 4, "batch_size": 4, "max_seq_len": 32}, "method_options": {"block_size": 16}}
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def workers_state(client) -> str:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    return r.json()["workers"]


@pytest.mark.timeout(120)
def test_readyz_says_none_live_without_a_worker_and_ok_while_one_heartbeats(client, two_pools, tmp_path):
    tiny, _ = two_pools
    r = client.get("/readyz")
    assert r.json() == {"status": "ok", "database": "ok", "broker": "ok", "workers": "none_live"}
    proc = start_worker({"SPARSETUNE_WORKER_POOL": tiny}, tmp_path / "worker.log")
    try:
        wait_for(lambda: workers_state(client) == "ok", 30, 0.3, "readyz to see the worker's heartbeat")
    finally:
        stop_process(proc, timeout=30)
    assert workers_state(client) == "none_live"  # a warm stop says so at once


@pytest.mark.timeout(120)
def test_job_created_with_no_live_worker_is_queued_and_says_so(client, auth, dataset, two_pools, tmp_path):
    tiny, huge = two_pools
    job = new_job(client, auth, dataset)
    assert job["status"] == "queued" and job["pool"] == huge
    assert len(job["warnings"]) == 1 and job["warnings"][0].startswith("no worker is running")
    assert job_of(client, auth, job["id"])["warnings"] == job["warnings"]  # kept with the job

    proc = start_worker({"SPARSETUNE_WORKER_POOL": tiny}, tmp_path / "worker.log")
    try:  # a live worker, but in a pool too small for the job: it still waits
        wait_for(lambda: workers_state(client) == "ok", 30, 0.3, "the worker's heartbeat")
        job = new_job(client, auth, dataset)
        assert job["status"] == "queued" and job["pool"] == huge
        assert job["warnings"] == [f"no pool that fits the job has a live worker: it waits in pool {huge}'s "
                                   f"queue until one starts (sparsetune worker --pool {huge})"]
    finally:
        stop_process(proc, timeout=30)


def _claimed_then_lost(job_id: str, attempts: int | None = None) -> None:
    """A worker claimed the job and vanished: its lease is over, its message long sent."""
    from worker import leases

    assert leases.claim(job_id, "wk_gone") is not None
    values: dict = {"lease_expires_at": time.time() - 1, "enqueued_at": time.time() - 60}
    if attempts is not None:
        values["attempts"] = attempts
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def messages_naming(job_id: str, queue: str) -> int:
    with redis.Redis.from_url(get_settings().broker) as r:
        return sum(job_id.encode() in m for m in r.lrange(queue, 0, -1))


@pytest.mark.timeout(60)
def test_the_api_reconciler_resends_an_expired_lease_with_no_worker_running(client, auth, dataset, two_pools):
    _, huge = two_pools
    job = new_job(client, auth, dataset)
    queue = pools.by_name(huge).queue
    assert messages_naming(job["id"], queue) == 1  # sent at creation; no worker consumes this queue
    _claimed_then_lost(job["id"])
    wait_for(lambda: messages_naming(job["id"], queue) >= 2, 20, 0.2, "the API's reconciler to send it again")
    after = job_of(client, auth, job["id"])
    assert after["status"] == "running" and after["attempts"] == 1  # the next worker's claim takes it


@pytest.mark.timeout(60)
def test_the_api_reconciler_fails_an_expired_lease_after_its_last_attempt(client, auth, dataset, two_pools):
    job = new_job(client, auth, dataset)
    last = get_settings().max_attempts
    _claimed_then_lost(job["id"], attempts=last)
    _with_checkpoint(job["id"])
    done = wait_for(lambda: (j := job_of(client, auth, job["id"]))["status"] != "running" and j, 20, 0.2,
                    "the API's reconciler to fail the job")
    assert done["status"] == "failed" and done["error"]["code"] == "worker_crashed"
    assert f"attempt {last} of {last}" in done["error"]["message"]
    types = [e["type"] for e in events_of(client, auth, job["id"])]
    assert types[-1] == "end" and types.count("end") == 1
    from worker import leases

    assert leases.claim(job["id"], "wk_late") is None  # a late message finds nothing to run
    assert _checkpoint_blobs(job["id"]) == (0, 0)  # a job that cannot resume keeps no checkpoint


def _with_checkpoint(job_id: str) -> None:
    from service.blobstore import get_store
    from service.models import Checkpoint

    with session_scope() as s:
        blob = get_store().write_bytes(s, b"a checkpoint's bytes")
        s.add(Checkpoint(job_id=job_id, step=3, blob_id=blob.id, fencing_token=1))
    assert _checkpoint_blobs(job_id)[0] == 1


def _checkpoint_blobs(job_id: str) -> tuple[int, int]:
    """(checkpoint rows of the job, blobs holding the checkpoint's bytes)."""
    from sqlalchemy import func, select

    from service.models import Blob, Checkpoint

    with session_scope() as s:
        rows = s.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.job_id == job_id))
        blobs = s.scalar(select(func.count()).select_from(Blob).where(Blob.bytes == len(b"a checkpoint's bytes")))
    return rows, blobs


def test_the_api_reconciler_can_be_switched_off(service_env, monkeypatch):
    from fastapi.testclient import TestClient

    from api.main import create_app

    monkeypatch.setenv("SPARSETUNE_API_RECONCILER", "false")
    get_settings.cache_clear()
    try:
        app = create_app()
        with TestClient(app):
            assert app.state.reconciler is None
    finally:
        monkeypatch.delenv("SPARSETUNE_API_RECONCILER")
        get_settings.cache_clear()
    app = create_app()
    with TestClient(app):
        assert app.state.reconciler is not None
