"""A job continuing another through the real worker (issue 18, item 1): the child's work folder gets the
parent's adapter from the database, the engine starts from it, and the child's manifest records the lineage
(the parent job and the sha256 of the adapter it started from)."""

from __future__ import annotations

import json

import pytest

from tests import factories
from tests.api.fixtures import set_models, start_worker, stop_process, wait_for
from tests.jobs import finished


def _upload(client, auth, rows: list[dict], name: str) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return client.post("/v1/datasets", headers=auth, files={"file": (name, data)}).json()["id"]


@pytest.mark.timeout(300)
def test_a_job_continues_another_through_the_worker(client, auth, service_env, tiny_llama_dir, tmp_path):
    set_models({"tiny-llama": str(tiny_llama_dir)})
    body = {"model": "tiny-llama", "training_dataset": _upload(client, auth, factories.completion_rows(16), "a.jsonl"),
            "method": "smt", "budget": 2048, "method_options": {"selection_steps": 1, "block_size": 16},
            "hyperparameters": {"steps": 2, "batch_size": 2, "max_seq_len": 32}}
    parent = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    worker = start_worker({}, tmp_path / "w.log")
    try:
        job = wait_for(lambda: finished(client, auth, parent), 200, 0.5, "the parent to finish")
        assert job["status"] == "succeeded", job["error"]
        more = _upload(client, auth, factories.completion_rows(16, seed=1), "b.jsonl")
        r = client.post("/v1/jobs", headers=auth, json={**body, "training_dataset": more, "init_from": parent})
        assert r.status_code == 201, r.text
        child = r.json()["id"]
        job = wait_for(lambda: finished(client, auth, child), 200, 0.5, "the child to finish")
        assert job["status"] == "succeeded", job["error"]
        assert job["init_from"] == parent
    finally:
        stop_process(worker, timeout=30)
    arts = {a["name"]: a for a in client.get(f"/v1/jobs/{parent}/artifacts", headers=auth).json()["data"]}
    manifest = client.get(f"/v1/jobs/{child}/artifacts/adapter_config.json", headers=auth).json()
    assert manifest["init_from"] == {"job": parent, "adapter_sha256": arts["adapter.safetensors"]["sha256"]}
    assert manifest["method_info"]["selection_steps"] == 0, "reuse (the default) runs no warm-up"
    parent_manifest = client.get(f"/v1/jobs/{parent}/artifacts/adapter_config.json", headers=auth).json()
    assert manifest["method_info"]["modules"] == parent_manifest["method_info"]["modules"], "the same blocks"
