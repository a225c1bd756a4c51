"""End to end over real HTTP: uvicorn and a Celery worker as processes, Postgres and Redis underneath.
Upload, create an SMT job, follow SSE to `end`, read metrics and blocks, download and check artifacts,
merge the adapter."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator

import httpx
import pytest

from tests import factories
from tests.api.fixtures import ROOT, make_key, set_models, start_worker, stop_process, wait_for
from tests.helpers import free_port


@pytest.fixture(scope="module")
def server(service_env, tiny_llama_dir, config_only_model, tmp_path_factory) -> Iterator[str]:
    set_models({"tiny-llama": str(tiny_llama_dir), "cfg-llama": str(config_only_model)})
    logs = tmp_path_factory.mktemp("e2e")
    worker = start_worker({}, logs / "worker.log")
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level",
                            "warning"], cwd=ROOT, env=os.environ.copy(), start_new_session=True,
                           stdout=open(logs / "api.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 60, 0.3, "the API to serve")
        yield url
    finally:
        stop_process(api)
        stop_process(worker, timeout=30)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def sse(url: str, headers: dict, path: str, last_id: str | None = None) -> tuple[int, list[dict]]:
    """Read an SSE stream until the server closes it; returns (status, events)."""
    h = {**headers, "Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
    out, cur = [], {}
    with httpx.stream("GET", url + path, headers=h, timeout=httpx.Timeout(10, read=180)) as r:
        if r.status_code != 200:
            return r.status_code, []
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "data" in cur:
                    out.append({"id": cur.get("id"), "event": cur.get("event"), **json.loads(cur["data"])})
                cur = {}
                continue
            k, _, v = line.partition(":")
            cur[k] = v.lstrip(" ")
    return 200, out


@pytest.mark.timeout(400)
def test_smt_job_end_to_end_over_http(server, tmp_path):
    key, owner = make_key("e2e")
    h = {"Authorization": f"Bearer {key}"}
    hook = _webhook(owner)
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(48)).encode()
    ds = httpx.post(f"{server}/v1/datasets", headers=h, files={"file": ("pc.jsonl", data)}).json()
    assert ds["sha256"] == hashlib.sha256(data).hexdigest()
    body = {"model": "tiny-llama", "training_dataset": ds["id"], "method": "smt", "budget": 4096,
            "hyperparameters": {"steps": 4, "batch_size": 4, "max_seq_len": 32},
            "method_options": {"block_size": 16, "selection_steps": 2}}
    job = httpx.post(f"{server}/v1/jobs", headers=h, json=body).json()

    status, events = sse(server, h, f"/v1/jobs/{job['id']}/events")
    assert status == 200 and events[-1]["event"] == "end" and events[-1]["data"]["status"] == "succeeded"
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e["data"]["step"] for e in events if e["event"] == "metric" and "train_loss" in e["data"]] == [1, 2, 3, 4]
    # reconnecting mid-stream misses nothing; reconnecting after `end` is 204
    _, tail = sse(server, h, f"/v1/jobs/{job['id']}/events", last_id=str(ids[2]))
    assert [int(e["id"]) for e in tail] == ids[3:]
    assert sse(server, h, f"/v1/jobs/{job['id']}/events", last_id=str(ids[-1]))[0] == 204

    # the owner-wide stream (the dashboard's) carries the same events, from Last-Event-ID on
    seen = []
    with httpx.stream("GET", f"{server}/v1/events", headers={**h, "Accept": "text/event-stream",
                                                              "Last-Event-ID": str(ids[0] - 1)},
                      timeout=httpx.Timeout(10, read=30)) as r:
        for line in r.iter_lines():
            if line.startswith("id:"):
                seen.append(int(line[3:].strip()))
                if seen[-1] == ids[-1]:
                    break
    assert seen == ids

    job = httpx.get(f"{server}/v1/jobs/{job['id']}", headers=h).json()
    assert job["status"] == "succeeded" and job["trainable_params"] == 4096
    metrics = httpx.get(f"{server}/v1/jobs/{job['id']}/metrics", headers=h).json()["data"]
    assert len(metrics) == 4 and all(m["train_loss"] is not None for m in metrics)
    blocks = httpx.get(f"{server}/v1/jobs/{job['id']}/blocks", headers=h).json()
    assert {m["target"] for m in blocks["modules"]} <= {"q", "k", "v"}
    assert all(b["height"] == b["width"] == 16 for m in blocks["modules"] for b in m["blocks"])

    arts = {a["name"]: a for a in httpx.get(f"{server}/v1/jobs/{job['id']}/artifacts", headers=h).json()["data"]}
    shira_refused = any("peft-shira.tar not written" in e["data"].get("message", "") for e in events)
    assert ("peft-shira.tar" in arts) != shira_refused  # written, or refused with a logged reason
    for name in ("adapter.safetensors", "adapter_config.json"):
        r = httpx.get(f"{server}/v1/jobs/{job['id']}/artifacts/{name}", headers=h)
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
        assert hashlib.sha256(r.content).hexdigest() == r.headers["x-checksum-sha256"] == arts[name]["sha256"]
    config = httpx.get(f"{server}/v1/jobs/{job['id']}/artifacts/adapter_config.json", headers=h).json()
    assert config["method"] == "smt"

    r = httpx.post(f"{server}/v1/jobs/{job['id']}/artifacts/merged", headers=h)
    assert r.status_code == 202 and r.json()["name"] == "merged.tar"

    def merged():
        listing = httpx.get(f"{server}/v1/jobs/{job['id']}/artifacts", headers=h).json()["data"]
        return next((a for a in listing if a["name"] == "merged.tar"), None)

    art = wait_for(merged, 180, 1, "merged.tar")
    r = httpx.get(f"{server}/v1/jobs/{job['id']}/artifacts/merged.tar", headers=h, timeout=60)
    assert hashlib.sha256(r.content).hexdigest() == art["sha256"]
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and all(m.mtime == 0 for m in members)
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names)
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(tmp_path / "merged", filter="data")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # a standard HF folder
    assert sum(p.numel() for p in model.parameters()) == job["total_params"]
    # the training child's success and the merge each wrote their webhook event with their own change
    assert _outbox(hook) == [("fine_tuning.job.succeeded", job["id"]), ("sparsetune.job.merged", job["id"])]


def _webhook(owner: str) -> str:
    """A webhook row written directly (its URL is private: the worker refuses to send there, which is fine)."""
    from service.db import session_scope
    from service.models import Webhook
    from service.webhooks import new_secret

    with session_scope() as s:
        s.add(Webhook(id=f"wh_e2e{os.getpid()}", owner_id=owner, url="http://127.0.0.1:9/x", events=[
            "fine_tuning.job.succeeded", "sparsetune.job.merged"], secret=new_secret()))
    return f"wh_e2e{os.getpid()}"


def _outbox(webhook_id: str) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import WebhookMessage

    with session_scope() as s:
        rows = s.scalars(select(WebhookMessage).where(WebhookMessage.webhook_id == webhook_id)
                         .order_by(WebhookMessage.id))
        return [(m.event_type, m.payload["data"]["id"]) for m in rows]


@pytest.mark.timeout(180)
def test_watch_of_failing_job_exits_1_with_its_message(server, tmp_path):
    """`sparsetune jobs watch` against the Postgres/Redis service: a failed job is exit 1 and says why."""
    key, _ = make_key("watcher")
    env = {**os.environ, "SPARSETUNE_API_KEY": key, "SPARSETUNE_API_URL": server}
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(8))
    bin_ = str(ROOT / ".venv" / "bin" / "sparsetune")
    ds = json.loads(subprocess.run([bin_, "datasets", "upload", str(data), "--json"], env=env, capture_output=True,
                                   text=True, timeout=60, check=True).stdout)["id"]
    job = subprocess.run([bin_, "jobs", "create", "--model", "cfg-llama", "--training-dataset", ds, "--method",
                          "smt", "--budget", "0.05", "--steps", "1"], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    r = subprocess.run([bin_, "jobs", "watch", job], env=env, capture_output=True, text=True, timeout=150)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed" in r.stdout and "safetensors" in r.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_packaged_minilm_alias_trains_classification_through_the_service(server):
    """The packaged alias resolves in the worker; label names travel from the upload to the adapter."""
    key, _ = make_key("minilm")
    h = {"Authorization": f"Bearer {key}"}
    models = {m["id"]: m for m in httpx.get(f"{server}/v1/models", headers=h).json()["data"]}
    assert models["minilm-l6"]["parameters"] == 22713216
    data = "".join(json.dumps(r) + "\n" for r in factories.classification_rows(64)).encode()
    ds = httpx.post(f"{server}/v1/datasets", headers=h, files={"file": ("cls.jsonl", data)}).json()
    body = {"model": "minilm-l6", "training_dataset": ds["id"], "method": "smt", "budget": 0.001,
            "hyperparameters": {"steps": 3, "batch_size": 8, "max_seq_len": 32},
            "method_options": {"selection_steps": 1}}
    r = httpx.post(f"{server}/v1/jobs", headers=h, json=body)
    assert r.status_code == 201, r.text
    status, events = sse(server, h, f"/v1/jobs/{r.json()['id']}/events")
    assert events[-1]["data"]["status"] == "succeeded", events[-3:]
    job = httpx.get(f"{server}/v1/jobs/{r.json()['id']}", headers=h).json()
    assert job["metrics"]["eval_accuracy"] is not None and job["total_params"] >= 22713216
    config = httpx.get(f"{server}/v1/jobs/{job['id']}/artifacts/adapter_config.json", headers=h).json()
    assert config["label_names"] == ["negative", "positive"]
