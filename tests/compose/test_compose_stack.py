"""The Docker image and docker-compose.yml, built and run for real (issue 19).

Builds the images from the repository's Dockerfile on base images made here from Debian packages (no registry
is reachable: docker/bases/build.sh), starts the whole stack (Postgres, Redis, migrate, API, worker,
inference), uploads a dataset, trains a small SMT job on the packaged MiniLM through the API, restarts the
worker container mid-job and sees the job resume from its checkpoint and succeed, downloads the adapter and
checks its sha256, asks the fine-tuned model for predictions (served by the inference container), then
``down -v``. Skips on a machine without a Docker daemon; under CI (``CI=true``) a
missing daemon fails the run. ``make compose-test`` runs only this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests import factories
from tests.api.fixtures import wait_for
from tests.compose.stack import (
    ROOT,
    Stack,
    build_local_bases,
    daemon_problem,
    prepare_build_context,
    stack_env,
)
from tests.e2e.test_http import free_port
from tests.jobs import finished, job_of, log_messages, metric_steps

STEPS = 150
ARTIFACTS = ROOT / "test-artifacts"
SERVICES = ("postgres", "redis", "api", "worker", "inference")


def _require_docker() -> None:
    problem = daemon_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {problem}: the compose test must run in CI")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def stack():
    _require_docker()
    port = free_port()
    stack = Stack(stack_env(port))
    stack.compose("down", "-v", "--remove-orphans", check=False)  # what an interrupted run left
    timings = {"context": prepare_build_context()}
    started = time.monotonic()
    build_local_bases()
    timings["bases_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    stack.compose("build")
    timings["build_s"] = round(time.monotonic() - started, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        started = time.monotonic()
        stack.compose("up", "-d", timeout=900)
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            wait_for(lambda: _ready(http), 300, 1, "the API's /readyz with a live worker")
        timings["up_s"] = round(time.monotonic() - started, 1)
        key = stack.compose("exec", "-T", "api", "sparsetune", "keys", "create", "--name", "compose-test").stdout
        stack.auth = {"Authorization": f"Bearer {key.strip().splitlines()[-1]}"}
        stack.timings = timings
        yield stack
    finally:
        (ARTIFACTS / "compose-stack.log").write_text(stack.logs())
        stack.compose("down", "-v", "--remove-orphans", check=False, timeout=600)


@pytest.mark.parametrize("files", [
    ["docker-compose.yml"],
    ["docker-compose.yml", "docker-compose.gpu.yml"],
    ["docker-compose.remote-worker.yml"],
])
def test_each_documented_compose_combination_parses(files):
    """What the README tells users to run parses with the Compose here (1.29 reads no `!reset` and such)."""
    if not shutil.which("docker-compose") and daemon_problem():
        _require_docker()
    env = {**stack_env(8000), "DATABASE_URL": "postgresql+psycopg://u:p@db:5432/d", "BROKER_URL": "redis://r:6379/0"}
    args = [a for f in files for a in ("-f", f)]
    done = Stack(env).compose(*args, "config", check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    config = done.stdout
    assert "worker" in config and "${" not in config
    for name in files:
        assert "!reset" not in (ROOT / name).read_text()


def _ready(http: httpx.Client) -> bool:
    try:
        r = http.get("/readyz")
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.json().get("workers") == "ok"


def _health(stack: Stack, service: str) -> str:
    return stack.inspect(stack.container(service))["State"].get("Health", {}).get("Status", "none")


@pytest.mark.timeout(3000)
def test_the_stack_comes_up_healthy_and_only_the_api_listens_outside(stack):
    wait_for(lambda: all(_health(stack, s) == "healthy" for s in SERVICES), 240, 3,
             "every service's healthcheck: " + ", ".join(f"{s}" for s in SERVICES))
    migrate = stack.inspect(stack.container("migrate"))["State"]
    assert migrate["Status"] == "exited" and migrate["ExitCode"] == 0
    published = {s: [b for bs in (stack.inspect(stack.container(s))["HostConfig"]["PortBindings"] or {}).values()
                     for b in bs] for s in SERVICES}
    assert published.pop("api") == [{"HostIp": "127.0.0.1", "HostPort": stack.env["SPARSETUNE_PORT"]}]
    assert all(not bindings for bindings in published.values()), published

    # non-root, no dev tools, the dashboard built into the image and served at /
    assert stack.compose("exec", "-T", "api", "id", "-u").stdout.strip() != "0"
    probe = "import importlib.util as u; print([m for m in ('pytest', 'ruff', 'playwright', 'schemathesis') if u.find_spec(m)])"
    assert stack.compose("exec", "-T", "worker", "python", "-c", probe).stdout.strip() == "[]"
    page = httpx.get(stack.url + "/", timeout=10)
    assert page.status_code == 200 and "<script" in page.text
    models = httpx.get(stack.url + "/v1/models", headers=stack.auth, timeout=10).json()["data"]
    assert "minilm-l6" in {m["id"] for m in models}
    _record_sizes(stack)  # idle: nothing queued yet


@pytest.mark.timeout(900)
def test_an_smt_job_survives_a_worker_restart_and_its_adapter_downloads_intact(stack):
    with httpx.Client(base_url=stack.url, timeout=60) as http:
        auth = stack.auth
        data = "".join(json.dumps(r) + "\n" for r in factories.classification_rows(96)).encode()
        ds = http.post("/v1/datasets", headers=auth, files={"file": ("cls.jsonl", data)})
        assert ds.status_code == 201, ds.text
        r = http.post("/v1/jobs", headers=auth, json={
            "model": "minilm-l6", "training_dataset": ds.json()["id"], "method": "smt", "budget": 0.002,
            "hyperparameters": {"steps": STEPS, "batch_size": 8, "max_seq_len": 48},
            "method_options": {"block_size": 64, "selection_steps": 2}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        job = wait_for(lambda: (j := job_of(http, auth, job_id))["status"] == "running"
                       and (j["checkpoint_step"] or 0) >= 5 and j, 300, 0.2, "a stored checkpoint")
        assert job["steps_completed"] < STEPS, "the job finished before the restart: make it longer"
        worker = stack.container("worker")
        started_before = stack.inspect(worker)["State"]["StartedAt"]
        stack.compose("restart", "-t", "120", "worker")  # SIGTERM: the worker hands the job back, then starts again
        assert stack.inspect(worker)["State"]["StartedAt"] != started_before

        job = wait_for(lambda: finished(http, auth, job_id), 600, 1, "the resumed job to finish")
        assert job["status"] == "succeeded", job["error"]
        assert job["steps_completed"] == STEPS
        assert any(m.startswith("resumed from the checkpoint at step") for m in log_messages(http, auth, job_id))
        assert metric_steps(http, auth, job_id) == list(range(1, STEPS + 1))  # each step recorded once

        listing = {a["name"]: a for a in http.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()["data"]}
        r = http.get(f"/v1/jobs/{job_id}/artifacts/adapter.safetensors", headers=auth)
        assert r.status_code == 200
        digest = hashlib.sha256(r.content).hexdigest()
        assert digest == r.headers["x-checksum-sha256"] == listing["adapter.safetensors"]["sha256"]
        config = http.get(f"/v1/jobs/{job_id}/artifacts/adapter_config.json", headers=auth).json()
        assert config["method"] == "smt"

        # the API forwards to the inference container, which serves the adapter on its copy of MiniLM
        texts = [r["text"] for r in factories.classification_rows(4, seed=1)]
        r = http.post(f"/v1/jobs/{job_id}/predict", headers=auth, json={"texts": texts}, timeout=120)
        assert r.status_code == 200, r.text
        predictions = r.json()["data"]
        assert len(predictions) == 4 and all(p["label"] in config["label_names"] for p in predictions)
        assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in predictions)


def _record_sizes(stack: Stack) -> None:
    """Image size and the idle stack's memory, for the README and the closing note (test-artifacts/compose.json)."""
    size = stack.inspect(f"{stack.env['SPARSETUNE_IMAGE']}:latest")["Size"]
    stats = {service: subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}",
                                      stack.container(service)], capture_output=True, text=True).stdout.strip()
             for service in SERVICES}
    report = {"image_bytes": size, "memory": stats, **stack.timings}
    Path(ARTIFACTS / "compose.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
