"""`sparsetune up` supervises its worker: SIGKILL the worker mid-job (the training child is left behind, as
when the OOM killer picks the worker) and `up` reaps it, kills its child, logs it, releases its job at once
and starts a new worker, which resumes the job from its checkpoint; the job succeeds with every step
recorded once, and no copy of the user's data is left in the work folders. Embedded default, real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cli.bootstrap import stop_process_group
from service.workdirs import alive
from tests import factories
from tests.api.fixtures import ROOT, wait_for
from tests.e2e.test_http import free_port
from tests.jobs import events_of, finished, job_of, log_messages, metric_steps

BIN = str(Path(ROOT) / ".venv" / "bin" / "sparsetune")
STEPS = 30


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def start_up(env: dict, port: int, log) -> tuple[subprocess.Popen, str]:
    up = subprocess.Popen([BIN, "up", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                          start_new_session=True, cwd=ROOT)
    key = None
    for line in up.stdout:
        if line.startswith("SPARSETUNE_API_KEY="):
            key = line.strip().split("=", 1)[1]
        if line.startswith("ready on http://"):
            break
    assert key, "no key printed"
    return up, key


def live_workers(http: httpx.Client, auth: dict, kind: str = "trainer") -> dict[int, dict]:
    return {w["pid"]: w for w in http.get("/v1/workers", headers=auth).json()["data"]
            if w["status"] in ("idle", "busy") and w["kind"] == kind}


@pytest.mark.timeout(480)
def test_up_restarts_a_killed_worker_and_its_job_resumes_from_the_checkpoint(tiny_llama_dir, tmp_path):
    port, home = free_port(), tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "SPARSETUNE_QUEUE",
                                                            "SPARSETUNE_API_KEY")}
    # the default lease (120 s): the job must come back long before it would expire
    env.update({"SPARSETUNE_HOME": str(home), "SPARSETUNE_MODELS": json.dumps({"tiny-llama": str(tiny_llama_dir)}),
                "SPARSETUNE_CHECKPOINT_EVERY": "2", "SPARSETUNE_HEARTBEAT_SECONDS": "1",
                "SPARSETUNE_RESTART_BACKOFF_SECONDS": "0.5", "HF_HUB_OFFLINE": "1"})
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        up, key = start_up(env, port, log)
        try:
            auth = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                run(http, auth, home, log_path)
        finally:
            stop_process_group(up, grace=90)
    assert up.returncode == 0


def run(http: httpx.Client, auth: dict, home: Path, log_path: Path) -> None:
    wait_for(lambda: http.get("/readyz").json().get("workers") == "ok", 60, 0.3, "the worker's first heartbeat")
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(48)).encode()
    ds = http.post("/v1/datasets", headers=auth, files={"file": ("pc.jsonl", data)}).json()["id"]
    r = http.post("/v1/jobs", headers=auth, json={
        "model": "tiny-llama", "training_dataset": ds, "method": "smt", "budget": 4096,
        "hyperparameters": {"steps": STEPS, "batch_size": 4, "max_seq_len": 32},
        "method_options": {"block_size": 16, "selection_steps": 2}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.json()["warnings"] == []  # a worker is live

    job = wait_for(lambda: (j := job_of(http, auth, job_id))["status"] == "running" and (j["checkpoint_step"] or 0) >= 2
                   and j, 180, 0.1, "a stored checkpoint")
    assert job["steps_completed"] < STEPS
    (worker,) = [pid for pid, w in live_workers(http, auth).items() if w["status"] == "busy"]
    trainers = children_of(worker)
    assert trainers, "the training child"
    assert [p.name for p in (home / "work").iterdir() if p.name.startswith(job_id)]  # the job's data copy

    os.kill(worker, signal.SIGKILL)  # the worker alone: its training child stays behind, orphaned
    killed_at = time.time()
    wait_for(lambda: not alive(worker), 10, 0.1, "up to reap the dead worker (no zombie)")
    wait_for(lambda: not any(alive(p) for p in trainers), 10, 0.1, "the orphaned training child to be killed")
    new = wait_for(lambda: [pid for pid in live_workers(http, auth) if pid != worker], 60, 0.3, "a new worker")
    assert new and worker not in live_workers(http, auth)
    resumed = wait_for(lambda: (j := job_of(http, auth, job_id))["attempts"] == 2 and j, 90, 0.2,
                       "the restarted worker to claim the job")
    assert time.time() - killed_at < 90 < 120  # released at once, not after the 120 s lease
    assert resumed["status"] in ("running", "succeeded")

    job = wait_for(lambda: finished(http, auth, job_id), 240, 0.5, "the resumed job to finish")
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and job["steps_completed"] == STEPS
    assert any(m.startswith("resumed from the checkpoint at step") for m in log_messages(http, auth, job_id))
    assert metric_steps(http, auth, job_id) == list(range(1, STEPS + 1))  # each step once
    assert [e["type"] for e in events_of(http, auth, job_id)].count("end") == 1
    assert not [p.name for p in (home / "work").iterdir() if p.name.startswith(job_id)]  # no data copy left

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    (death,) = [e for e in lines if e.get("supervised") == "worker"]
    assert death["pid"] == worker and death["exit_code"] == -signal.SIGKILL and death["restart_in_seconds"] == 0.5
    assert "was killed by signal 9 (SIGKILL)" in death["message"]
