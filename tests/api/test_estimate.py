"""GET /v1/models/{id}/estimate with a training dataset and a device, and the estimate a job is created with:
the dataset's token lengths size the activations, cuda halves the frozen weights, SMT adds its warm-up, and
job creation stores the same dataset-aware estimate and routes by it."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from tests import factories
from tests.api.fixtures import TINY_LLAMA_CONFIG, environment

BASE = "/v1/models/cfg-llama/estimate?method=smt&budget=4096&batch_size=8&max_seq_len=256"


def _upload(client, auth, rows: list[dict]) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post("/v1/datasets", headers=auth, files={"file": ("d.jsonl", data)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture()
def short_ds(client, auth) -> str:
    return _upload(client, auth, factories.completion_rows(40))  # "the red fruit is" → " apple": ~10 tokens


def test_short_rows_give_much_smaller_activations_than_max_seq_len(client, auth, short_ds):
    plain = client.get(BASE, headers=auth).json()
    short = client.get(f"{BASE}&training_dataset={short_ds}", headers=auth)
    assert short.status_code == 200, short.text
    est = short.json()
    assert plain["sequence_length"] == 256 and plain["tokens"] is None and plain["training_dataset"] is None
    assert est["training_dataset"] == short_ds and est["tokens"]["rows"] == 40
    assert not est["tokens"]["exact"], "cfg-llama has no tokenizer.json: characters stand in for tokens"
    assert est["sequence_length"] == est["tokens"]["longest"] < 20
    assert est["memory"]["activations"] * 10 < plain["memory"]["activations"]
    assert est["memory"]["peak"] < plain["memory"]["peak"]
    assert est["memory"]["weights"] == plain["memory"]["weights"]


def test_the_models_own_tokenizer_counts_rows_exactly(client, auth, short_ds, tmp_path, monkeypatch):
    """A model folder with a tokenizer.json: exact counts, and each dataset is tokenized once."""
    from service import estimates
    from smt_core.estimate import token_stats

    folder = tmp_path / "tok-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(factories.minilm_dir() / name, folder / name)
    calls = []
    real = estimates.token_stats_of_jsonl
    monkeypatch.setattr(estimates, "token_stats_of_jsonl", lambda *a: calls.append(a) or real(*a))
    models = json.dumps({**json.loads(os.environ["SPARSETUNE_MODELS"]), "tok-llama": str(folder)})
    with environment({"SPARSETUNE_MODELS": models}):
        url = f"/v1/models/tok-llama/estimate?method=lora&budget=4096&training_dataset={short_ds}"
        first = client.get(url, headers=auth).json()
        again = client.get(url + "&batch_size=4", headers=auth).json()
    want = token_stats(factories.completion_rows(40), "prompt_completion", folder)
    assert first["tokens"] == {"rows": 40, "longest": want.longest, "shortest": want.shortest, "exact": True}
    assert again["tokens"] == first["tokens"] and len(calls) == 1, "cached per dataset"


def test_cuda_halves_the_frozen_weights(client, auth, short_ds):
    cpu = client.get(f"{BASE}&device=cpu&training_dataset={short_ds}", headers=auth).json()
    gpu = client.get(f"{BASE}&device=cuda&training_dataset={short_ds}", headers=auth).json()
    assert cpu["device"] == "cpu" and gpu["device"] == "cuda"
    assert gpu["memory"]["weights"] * 2 == cpu["memory"]["weights"] > 0
    for k in ("trainable", "gradients", "optimizer"):
        assert gpu["memory"][k] == cpu["memory"][k]  # fp32 on both
    assert gpu["memory"]["activations"] < cpu["memory"]["activations"]
    assert client.get(BASE, headers=auth).json()["device"] == "cpu", "cpu by default"


def test_selection_is_there_for_smt_only(client, auth):
    smt = client.get(BASE, headers=auth).json()["memory"]
    lora = client.get(BASE.replace("method=smt", "method=lora"), headers=auth).json()["memory"]
    targeted = 2 * (64 * 64 + 2 * 32 * 64)  # q, k, v of both layers
    assert smt["selection"] == targeted * 8 and "selection" not in lora
    assert smt["peak"] >= smt["weights"] + smt["selection"]


def test_another_owners_or_an_unknown_dataset_is_404(client, auth, other_auth, short_ds):
    for headers, ds in ((other_auth, short_ds), (auth, "ds_nope"), (auth, "x" * 64)):
        r = client.get(f"{BASE}&training_dataset={ds}", headers=headers)
        assert r.status_code == 404, r.text
        err = r.json()["error"]
        assert err["code"] == "not_found" and err["param"] == "training_dataset"


def test_a_bad_device_is_422_naming_it(client, auth):
    r = client.get(f"{BASE}&device=tpu", headers=auth)
    assert r.status_code == 422 and r.json()["error"]["param"] == "device"
    assert "cpu, cuda" in r.json()["error"]["message"]


def _job(client, auth, ds: str, **hp) -> dict:
    body = {"model": "cfg-llama", "training_dataset": ds, "method": "smt", "budget": 4096,
            "hyperparameters": {"steps": 2, "batch_size": 8, "max_seq_len": 256, **hp}}
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_job_creation_stores_the_dataset_aware_estimate(client, auth, short_ds):
    """No worker has reported for the pool: its device is unknown, so the job gets the larger of the two."""
    job = _job(client, auth, short_ds)
    per_device = [client.get(f"{BASE}&training_dataset={short_ds}&device={d}", headers=auth).json()["memory"]["peak"]
                  for d in ("cpu", "cuda")]
    assert job["estimated_memory"] == max(per_device)
    assert job["estimated_memory"] < client.get(BASE, headers=auth).json()["memory"]["peak"], "rows, not max_seq_len"


def test_a_gpu_pools_jobs_are_estimated_for_cuda_and_routed_by_it(client, auth, short_ds):
    """Pool "gpu" has a worker that reported a GPU, "cpu" one on the CPU: each pool is judged by its own
    device's estimate. Sized so the job fits the GPU pool on cuda (bf16) but not the CPU pool on cpu."""
    from service.db import session_scope
    from service.models import Worker

    est = {d: client.get(f"{BASE}&training_dataset={short_ds}&device={d}", headers=auth).json()["memory"]["peak"]
           for d in ("cpu", "cuda")}
    assert est["cuda"] < est["cpu"]
    pools = {"gpu": est["cuda"] + 1000, "cpu": (est["cuda"] + est["cpu"]) // 2}  # cpu pool: too small on cpu
    now = time.time()
    with environment({"SPARSETUNE_POOLS": json.dumps(pools)}):
        with session_scope() as s:
            s.add_all([Worker(id="w-est-gpu", host="h", pid=1, pool="gpu", queue="q.gpu", device="NVIDIA H200",
                              device_memory=141 * 2**30, status="idle", started_at=now, last_seen_at=now),
                       Worker(id="w-est-cpu", host="h", pid=2, pool="cpu", queue="q.cpu",
                              device="AMD EPYC (16 cores)", device_memory=2**36, status="idle", started_at=now,
                              last_seen_at=now)])
        job = None
        try:
            job = _job(client, auth, short_ds)
            assert job["pool"] == "gpu" and job["estimated_memory"] == est["cuda"]
        finally:
            from service.models import Job, JobStatus

            with session_scope() as s:
                for wid in ("w-est-gpu", "w-est-cpu"):
                    s.delete(s.get(Worker, wid))
                if job is not None:  # queued on a pool that is about to go: never to run
                    row = s.get(Job, job["id"])
                    row.status, row.finished_at = JobStatus.cancelled, time.time()
