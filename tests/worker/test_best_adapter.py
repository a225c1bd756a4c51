"""A job that evaluates and chooses, run by a real worker: early stopping ends it ``succeeded`` with
``stopped_early``, the best evaluation's adapter is stored as ``adapter-best.safetensors``, and inference and
merged.tar use that one, not the last (issue 18, item 3)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from tests import factories
from tests.api.fixtures import set_models, start_worker, stop_process, wait_for
from tests.jobs import finished


def _upload(client, auth, rows: list[dict], name: str) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return client.post("/v1/datasets", headers=auth, files={"file": (name, data)}).json()["id"]


@pytest.mark.timeout(300)
def test_early_stopping_keeps_the_best_adapter_and_serves_and_merges_it(client, auth, service_env, tiny_llama_dir,
                                                                       tmp_path):
    set_models({"tiny-llama": str(tiny_llama_dir)})
    train = _upload(client, auth, factories.completion_rows(24), "train.jsonl")
    val = _upload(client, auth, factories.completion_rows(2, seed=3), "val.jsonl")
    # a tiny random model's exact-match accuracy stays 0: step 1's evaluation is the best, step 2's does not
    # improve on it, and patience 1 stops the job there
    body = {"model": "tiny-llama", "training_dataset": train, "validation_dataset": val, "method": "lora",
            "budget": 0.05, "hyperparameters": {"steps": 8, "batch_size": 2, "gradient_accumulation_steps": 2,
                                                "max_seq_len": 32, "eval_every": 1, "metric_for_best": "eval_accuracy",
                                                "early_stopping_patience": 1}}
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    worker = start_worker({}, tmp_path / "w.log")
    try:
        job = wait_for(lambda: finished(client, auth, job_id), 200, 0.5, "the job to finish")
        assert job["status"] == "succeeded", job["error"]
        assert job["stopped_early"] is True and job["steps_completed"] == 2 and job["total_steps"] == 8
        assert job["metrics"]["best"] == {"metric": "eval_accuracy", "value": 0.0, "step": 1}
        arts = {a["name"]: a for a in client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()["data"]}
        assert {"adapter.safetensors", "adapter-best.safetensors"} <= set(arts)
        best = client.get(f"/v1/jobs/{job_id}/artifacts/adapter-best.safetensors", headers=auth)
        assert best.status_code == 200 and hashlib.sha256(best.content).hexdigest() == arts[
            "adapter-best.safetensors"]["sha256"]
        assert arts["adapter-best.safetensors"]["sha256"] != arts["adapter.safetensors"]["sha256"]

        from inference import adapters

        target = adapters.resolve_target(None, job_id)  # what the fine-tuned model serves
        assert (target.adapter_dir / "adapter.safetensors").read_bytes() == best.content

        assert client.post(f"/v1/jobs/{job_id}/artifacts/merged", headers=auth).status_code == 202

        def merged():
            listing = client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()["data"]
            return next((a for a in listing if a["name"] == "merged.tar"), None)

        wait_for(merged, 180, 1, "merged.tar")
    finally:
        stop_process(worker, timeout=30)
    tar_bytes = client.get(f"/v1/jobs/{job_id}/artifacts/merged.tar", headers=auth).content
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        info = json.loads(tar.extractfile(tar.getmember("sparsetune_merge.json")).read())
    assert info["adapters_sha256"] == [arts["adapter-best.safetensors"]["sha256"]]  # the best was merged
