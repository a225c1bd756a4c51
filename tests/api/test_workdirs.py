"""A job's work folder (its copy of the user's data) is swept once its maker on this host is dead or the job
has ended, whoever made it; a live run's folder stays."""

from __future__ import annotations

import json
import os
import subprocess

from sqlalchemy import update

from service import workdirs
from service.db import session_scope
from service.models import Job, JobStatus
from tests import factories


def new_job(client, auth) -> str:
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(16)).encode()
    ds = client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", data)}).json()["id"]
    body = {"model": "cfg-llama", "training_dataset": ds, "method": "smt", "budget": 0.05,
            "hyperparameters": {"steps": 4, "batch_size": 4, "max_seq_len": 32}, "method_options": {"block_size": 16}}
    return client.post("/v1/jobs", headers=auth, json=body).json()["id"]


def folder(job_id: str, pid: int):
    path = workdirs.root() / workdirs.SEP.join((job_id, workdirs.host(), str(pid)))
    path.mkdir(parents=True)
    (path / "train.jsonl").write_text('{"prompt": "private", "completion": "data"}\n')
    return path


def test_sweep_removes_dead_runs_and_ended_jobs_folders_and_keeps_live_ones(client, auth):
    ended, running = new_job(client, auth), new_job(client, auth)
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == ended).values(status=JobStatus.failed))
        s.execute(update(Job).where(Job.id == running).values(status=JobStatus.running))
    exited = subprocess.Popen(["true"])
    exited.wait()
    of_ended = folder(ended, os.getpid())  # its maker is alive, but the job failed: nothing will read it
    of_dead_run = folder(running, exited.pid)  # killed before it could clean up
    of_live_run = folder(running, os.getpid())
    assert workdirs.create(running).name == of_live_run.name and not (of_live_run / "train.jsonl").exists()

    removed = workdirs.sweep()
    assert {of_ended, of_dead_run} <= set(removed) and of_live_run not in removed
    assert not of_ended.exists() and not of_dead_run.exists() and of_live_run.is_dir()
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == running).values(status=JobStatus.succeeded))
    assert workdirs.sweep(running) == [of_live_run] and not of_live_run.exists()
