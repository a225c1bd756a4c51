"""A training child over its real memory cap (RLIMIT_AS) fails its job with a message that says so and what
to try; the same worker then serves the next job, trained with the option the message suggested."""

from __future__ import annotations

import json
import random

import pytest

from tests import factories
from tests.api.fixtures import set_models, start_worker, stop_process, wait_for
from tests.jobs import finished


@pytest.mark.timeout(240)
def test_job_over_memory_cap_fails_with_out_of_memory(client, auth, service_env, tiny_llama_dir, tmp_path):
    set_models({"tiny-llama": str(tiny_llama_dir)})
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    rows = [{"prompt": " ".join(rng.choice(words) for _ in range(400)), "completion": " end"} for _ in range(64)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    ds = client.post("/v1/datasets", headers=auth, files={"file": ("long.jsonl", data)}).json()["id"]
    body = {"model": "tiny-llama", "training_dataset": ds, "method": "smt", "budget": 4096,
            "hyperparameters": {"steps": 2, "batch_size": 64, "max_seq_len": 512},  # logits alone ~4 GB
            "method_options": {"block_size": 16, "selection_steps": 1}}
    job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    worker = start_worker({"SPARSETUNE_CHILD_MEMORY_BYTES": str(1536 * 1024 * 1024)}, tmp_path / "w.log")
    try:
        job = wait_for(lambda: finished(client, auth, job_id), 200, 0.5, "the job to fail")
        assert worker.poll() is None  # the worker survived its child's failure
        small = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(16)).encode()
        ds2 = client.post("/v1/datasets", headers=auth, files={"file": ("small.jsonl", small)}).json()["id"]
        body2 = {**body, "training_dataset": ds2, "method_options": {"block_size": 16, "selection_steps": 1},
                 "hyperparameters": {"steps": 2, "batch_size": 4, "max_seq_len": 32, "gradient_checkpointing": True}}
        r = client.post("/v1/jobs", headers=auth, json=body2)
        assert r.status_code == 201, r.text
        next_job = wait_for(lambda: finished(client, auth, r.json()["id"]), 200, 0.5, "the next job to finish")
    finally:
        stop_process(worker, timeout=30)
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["code"] == "out_of_memory", job["error"]
    message = job["error"]["message"]
    assert message.startswith("the training process ran out of memory under its cap "
                              "(SPARSETUNE_CHILD_MEMORY_BYTES=1610612736, 1.5 GiB). Try "), message
    for advice in ("batch_size", "max_seq_len", "gradient_checkpointing", "SPARSETUNE_CHILD_MEMORY_BYTES on the"):
        assert advice in message, message
    assert next_job["status"] == "succeeded", next_job["error"]
    config = client.get(f"/v1/jobs/{next_job['id']}/artifacts/adapter_config.json", headers=auth).json()
    assert config["hyperparameters"]["gradient_checkpointing"] is True  # the engine really recomputed
