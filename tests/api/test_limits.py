"""Per-owner limits (active jobs, steps, stored bytes), GET /v1/usage, upper bounds on every number and size in
a job body, and the estimate refusing what job creation refuses (issue 14)."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from smt_core.dataformats import parse_line
from tests import factories
from tests.api.fixtures import count_rows, environment

PC_LINE = b'{"prompt": "p", "completion": "c"}\n'


def _upload(client, auth, data: bytes):
    return client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", data, "application/jsonl")})


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def job_body(dataset: str, **over) -> dict:
    return {"model": "cfg-llama", "training_dataset": dataset, "method": "smt", "budget": 0.05,
            "hyperparameters": {"steps": 2}, **over}


@pytest.fixture()
def dataset(client, auth) -> str:
    return _upload(client, auth, PC_LINE).json()["id"]


# -- per-owner limits ------------------------------------------------------------------------------------------

def test_active_jobs_past_the_limit_are_429_quota_exceeded_until_one_finishes(client, auth, other_auth, dataset):
    with environment({"SPARSETUNE_MAX_ACTIVE_JOBS_PER_OWNER": "2"}):
        jobs = [client.post("/v1/jobs", headers=auth, json=job_body(dataset)) for _ in range(2)]
        assert [r.status_code for r in jobs] == [201, 201], jobs[-1].text
        before = count_rows("jobs")
        r = client.post("/v1/jobs", headers=auth, json=job_body(dataset))
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["code"] == "quota_exceeded" and err["param"] == "max_active_jobs_per_owner"
        assert "SPARSETUNE_MAX_ACTIVE_JOBS_PER_OWNER" in err["message"] and count_rows("jobs") == before
        other_ds = _upload(client, other_auth, PC_LINE).json()["id"]
        assert client.post("/v1/jobs", headers=other_auth, json=job_body(other_ds)).status_code == 201, \
            "the limit is per owner"
        assert client.post(f"/v1/jobs/{jobs[0].json()['id']}/cancel", headers=auth).status_code == 200
        assert client.post("/v1/jobs", headers=auth, json=job_body(dataset)).status_code == 201


def test_steps_past_the_default_limit_are_refused(client, auth, dataset):
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, hyperparameters={"steps": 100_001}))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "quota_exceeded" and err["param"] == "hyperparameters.steps"
    assert "SPARSETUNE_MAX_STEPS" in err["message"]
    assert client.post("/v1/jobs", headers=auth,
                       json=job_body(dataset, hyperparameters={"steps": 100_000})).status_code == 201


def test_steps_implied_by_epochs_count_against_the_limit(client, auth):
    ds = _upload(client, auth, _jsonl(factories.completion_rows(20))).json()["id"]
    with environment({"SPARSETUNE_MAX_STEPS": "100"}):
        hp = {"epochs": 10, "batch_size": 1}  # 200 steps
        r = client.post("/v1/jobs", headers=auth, json=job_body(ds, hyperparameters=hp))
        assert r.status_code == 422 and r.json()["error"]["param"] == "hyperparameters.epochs", r.text
        assert "200 steps" in r.json()["error"]["message"]
        hp = {"epochs": 5, "batch_size": 1}  # 100 steps
        assert client.post("/v1/jobs", headers=auth, json=job_body(ds, hyperparameters=hp)).status_code == 201


def test_storage_past_the_limit_is_413_and_writes_nothing(client, auth, other_auth):
    first, second = _jsonl(factories.completion_rows(10)), _jsonl(factories.completion_rows(10, seed=1))
    limit = len(first) + len(second) - 1
    with environment({"SPARSETUNE_MAX_STORED_BYTES_PER_OWNER": str(limit)}):
        ds = _upload(client, auth, first)
        assert ds.status_code == 201, ds.text
        before = [count_rows(t) for t in ("datasets", "blobs", "blob_chunks")]
        r = _upload(client, auth, second)
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "storage_quota_exceeded" and err["param"] == "max_stored_bytes_per_owner"
        assert [count_rows(t) for t in ("datasets", "blobs", "blob_chunks")] == before, "nothing half-written"
        assert _upload(client, other_auth, second).status_code == 201, "the limit is per owner"
    with environment({"SPARSETUNE_MAX_STORED_BYTES_PER_OWNER": str(len(first))}):  # full: no room for artifacts
        r = client.post("/v1/jobs", headers=auth, json=job_body(ds.json()["id"]))
        assert r.status_code == 413 and r.json()["error"]["code"] == "storage_quota_exceeded", r.text
        assert client.delete(f"/v1/datasets/{ds.json()['id']}", headers=auth).status_code == 200
        assert _upload(client, auth, second[:len(first)]).status_code == 201, "deleting frees the space"


def test_storage_limit_setting_takes_sizes_with_units():
    from service.settings import Settings

    with environment({"SPARSETUNE_MAX_STORED_BYTES_PER_OWNER": "2GiB"}):
        assert Settings().max_stored_bytes_per_owner == 2 * 2**30


def test_usage_counts_the_owners_jobs_and_bytes_only(client, auth, other_auth, dataset):
    from service.blobstore import get_store
    from service.db import session_scope
    from service.models import Artifact

    job = client.post("/v1/jobs", headers=auth, json=job_body(dataset)).json()["id"]
    with session_scope() as s:  # an artifact as a worker would store it
        blob = get_store().write_bytes(s, b"x" * 1000)
        s.add(Artifact(job_id=job, name="adapter.safetensors", blob_id=blob.id, bytes=1000, sha256=blob.sha256))
    r = client.get("/v1/usage", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "usage", "queued_jobs": 1, "running_jobs": 0, "stored_bytes": len(PC_LINE) + 1000,
                        "limits": {"max_active_jobs_per_owner": 20, "max_steps": 100_000,
                                   "max_stored_bytes_per_owner": 50 * 2**30}}
    other = client.get("/v1/usage", headers=other_auth).json()
    assert (other["queued_jobs"], other["running_jobs"], other["stored_bytes"]) == (0, 0, 0)
    assert client.get("/v1/usage").status_code == 401
    schema = client.get("/openapi.json").json()
    assert "get" in schema["paths"]["/v1/usage"] and "UsagePublic" in schema["components"]["schemas"]


# -- upper bounds on every number and size in a job body -----------------------------------------------------

@pytest.mark.parametrize("over, param", [
    ({"hyperparameters": {"steps": 2, "lr_warmup_steps": 10**30}}, "hyperparameters.lr_warmup_steps"),
    ({"hyperparameters": {"steps": 2, "lr_warmup_steps": 100_001}}, "hyperparameters.lr_warmup_steps"),
    ({"method": "lora", "budget": 0.5, "method_options": {"alpha": 10**100}}, "method_options.alpha"),
    ({"method": "lora", "budget": 0.5, "method_options": {"alpha": 1e300}}, "method_options.alpha"),
    ({"method_options": {"block_size": 2**40}}, "method_options.block_size"),
    ({"method_options": {"selection_steps": 10**9}}, "method_options.selection_steps"),
    ({"method_options": {"head_steps": 10**9}}, "method_options.head_steps"),
    ({"metadata": {"a": "x" * 200_000}}, "metadata"),  # the tests cap bodies at 256 KiB
    ({"metadata": {"a": "x" * 513}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": {"a": ["x" * 500] * 100}}, "metadata"),
    ({"targets": ["q" * 10_000]}, "targets.0"),
])
def test_numbers_and_sizes_past_their_bounds_are_422_and_write_nothing(client, auth, dataset, over, param):
    before = count_rows("jobs")
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, **over))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param and count_rows("jobs") == before


def test_metadata_within_its_bounds_is_kept(client, auth, dataset):
    meta = {f"k{i}": "v" * 512 for i in range(16)}
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, metadata=meta))
    assert r.status_code == 201 and r.json()["metadata"] == meta, r.text


# -- the estimate validates as job creation does ----------------------------------------------------------------

def _estimate(client, auth, **params):
    query = {"method": "smt", "budget": "4096", **params}
    return client.get(f"/v1/models/cfg-llama/estimate?{urllib.parse.urlencode(query)}", headers=auth)


@pytest.mark.parametrize("params, param", [
    ({"method_options": "[" * 1000 + "]" * 1000}, "method_options"),
    ({"method_options": '{"a":' * 300 + "1" + "}" * 300}, "method_options"),
    ({"method_options": '{"block_size": 0}'}, "method_options.block_size"),
    ({"method_options": '{"block_size": NaN}'}, "method_options"),
    ({"method": "lora", "budget": "0.5", "method_options": '{"alpha": 1e300}'}, "method_options.alpha"),
    ({"budget": "1.5"}, "budget"),
    ({"targets": "q,q"}, "targets"),
    ({"method": "lora", "budget": "10"}, "budget"),
])
def test_the_estimate_refuses_what_job_creation_refuses(client, auth, dataset, params, param):
    r = _estimate(client, auth, **params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param
    body = job_body(dataset, method=params.get("method", "smt"), budget=float(params.get("budget", 4096)),
                    targets=params.get("targets", "q,k,v").split(","))
    try:
        body["method_options"] = parse_line(params.get("method_options", "{}"))
    except (ValueError, RecursionError):
        return  # not JSON a job body could carry
    if isinstance(body["method_options"], dict):
        r = client.post("/v1/jobs", headers=auth, json=body)
        assert r.status_code == 422 and r.json()["error"]["param"].startswith(param.split(".")[0]), r.text
