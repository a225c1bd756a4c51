"""The job row as the scheduler: one claim wins, an expired lease can be taken over, and the run that lost
its lease writes nothing more (fencing)."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from api.schemas import JobCreate
from service import crud
from service.blobstore import get_store
from service.db import session_scope
from service.models import Dataset, Job, JobStatus, MetricPoint
from service.security import create_key
from worker import leases
from worker.recorder import Recorder


def queued_job() -> str:
    with session_scope() as s:
        key_row, _ = create_key(s, "lease-test")
        blob = get_store().write_bytes(s, b"{}\n")
        ds = Dataset(id=f"ds_{time.time_ns()}", owner_id=key_row.owner_id, filename="x.jsonl", format="chat",
                     rows=1, bytes=3, sha256=blob.sha256, blob_id=blob.id)
        s.add(ds)
        s.flush()
        body = JobCreate(model="cfg-llama", training_dataset=ds.id, method="smt", budget=16)
        return crud.create_job(s, key_row.owner_id, body, {"steps": 1}, None).id


def test_only_one_claim_wins(service_env):
    job_id = queued_job()
    first = leases.claim(job_id)
    assert first == 1 and leases.claim(job_id) is None  # a duplicate message is a no-op


def test_expired_lease_is_taken_over_and_stale_run_is_fenced(service_env):
    job_id = queued_job()
    old = leases.claim(job_id)
    with session_scope() as s:  # the old worker stopped renewing
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=time.time() - 1))
    new = leases.claim(job_id)
    assert new == old + 1
    stale = Recorder(job_id, old)
    stale.on_step_end({"step": 1, "total_steps": 1, "train_loss": 1.0})
    assert stale.lost and stale.should_stop()
    with session_scope() as s:
        assert s.scalar(select(MetricPoint).where(MetricPoint.job_id == job_id)) is None
        assert s.get(Job, job_id).steps_completed == 0
    fresh = Recorder(job_id, new)
    fresh.on_step_end({"step": 1, "total_steps": 1, "train_loss": 1.0})
    assert not fresh.lost and fresh.should_stop() is False
    leases.finish(job_id, new, JobStatus.succeeded)
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job.status == JobStatus.succeeded and job.steps_completed == 1 and job.attempts == 2


def test_cancel_flag_is_read_by_the_stop_check(service_env):
    job_id = queued_job()
    token = leases.claim(job_id)
    rec = Recorder(job_id, token)
    assert rec.should_stop() is False
    with session_scope() as s:
        crud.cancel_job(s, s.get(Job, job_id))
    assert rec.should_stop() is True and not rec.lost
