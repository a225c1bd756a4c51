"""A training child over its memory cap fails its job with a clear message; the worker goes on."""

from __future__ import annotations

import json
import random

import pytest

from tests.api.fixtures import set_models, start_worker, stop_process, wait_for


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
        def done():
            job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(done, 200, 0.5, "the job to fail")
        assert worker.poll() is None  # the worker survived its child's failure
    finally:
        stop_process(worker, timeout=30)
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["code"] == "out_of_memory", job["error"]
    assert "SPARSETUNE_CHILD_MEMORY_BYTES" in job["error"]["message"]
