"""Continuing a job through the API (issue 18, item 1): ``init_from`` names a succeeded job of the same owner
with the same model, method, targets and budget; another owner's or a missing job is a 404, anything else that
does not fit a 422 naming init_from; ``method_options.selection`` only with init_from and only on smt. The job
echoes init_from, and ``sparsetune jobs create --init-from`` sends it."""

from __future__ import annotations

import argparse

import pytest

from tests.api.fixtures import count_rows

PC_LINE = b'{"prompt": "p", "completion": "c"}\n'


def body(dataset: str, **kw) -> dict:
    return {"model": "cfg-llama", "training_dataset": dataset, "method": "smt", "budget": 0.05,
            "targets": ["q", "k", "v"], "hyperparameters": {"steps": 5}, **kw}


def _dataset(client, auth, data: bytes = PC_LINE) -> str:
    return client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", data, "application/jsonl")}).json()["id"]


def _set_status(job_id: str, status: str) -> None:
    from service.db import session_scope
    from service.models import Job, JobStatus

    with session_scope() as s:
        s.get(Job, job_id).status = JobStatus(status)


@pytest.fixture()
def parent(client, auth) -> tuple[str, str]:
    """(a succeeded smt job, its dataset)."""
    ds = _dataset(client, auth)
    job_id = client.post("/v1/jobs", headers=auth, json=body(ds)).json()["id"]
    _set_status(job_id, "succeeded")
    return job_id, ds


def test_a_job_continues_a_succeeded_one_and_echoes_it(client, auth, parent):
    job_id, ds = parent
    r = client.post("/v1/jobs", headers=auth, json=body(ds, init_from=job_id, method_options={"selection": "fresh"}))
    assert r.status_code == 201, r.text
    assert r.json()["init_from"] == job_id and r.json()["method_options"]["selection"] == "fresh"
    child = client.get(f"/v1/jobs/{r.json()['id']}", headers=auth).json()
    assert child["init_from"] == job_id
    plain = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert plain["init_from"] is None


def test_another_owners_or_a_missing_job_is_a_404_naming_init_from(client, auth, other_auth, parent):
    job_id, _ = parent
    theirs = _dataset(client, other_auth)
    for who, ds, ref in ((other_auth, theirs, job_id), (auth, parent[1], "job_doesnotexist")):
        before = count_rows("jobs")
        r = client.post("/v1/jobs", headers=who, json=body(ds, init_from=ref))
        assert r.status_code == 404, r.text
        assert r.json()["error"]["param"] == "init_from" and count_rows("jobs") == before


@pytest.mark.parametrize("change", [{"budget": 0.02}, {"targets": ["q", "v"]}, {"method": "lora"}])
def test_a_parent_that_differs_is_a_422_naming_init_from(client, auth, parent, change):
    job_id, ds = parent
    r = client.post("/v1/jobs", headers=auth, json={**body(ds, init_from=job_id), **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "init_from"


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_an_unfinished_parent_is_a_422(client, auth, parent, status):
    job_id, ds = parent
    _set_status(job_id, status)
    r = client.post("/v1/jobs", headers=auth, json=body(ds, init_from=job_id))
    assert r.status_code == 422 and r.json()["error"]["param"] == "init_from", r.text


def test_selection_without_init_from_or_off_smt_is_a_422(client, auth, parent):
    job_id, ds = parent
    r = client.post("/v1/jobs", headers=auth, json=body(ds, method_options={"selection": "reuse"}))
    assert r.status_code == 422 and r.json()["error"]["param"] == "method_options.selection", r.text
    lora = client.post("/v1/jobs", headers=auth, json=body(ds, method="lora", method_options={"selection": "reuse"}))
    assert lora.status_code == 422 and lora.json()["error"]["param"] == "method_options.selection", lora.text
    bad = client.post("/v1/jobs", headers=auth, json=body(ds, init_from=job_id, method_options={"selection": "x"}))
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "method_options.selection", bad.text


def test_new_labels_are_a_422_naming_them(client, auth):
    pos = b'{"text": "good", "label": "positive"}\n{"text": "bad", "label": "negative"}\n'
    ds = _dataset(client, auth, pos)
    cls = {"model": "cfg-llama", "training_dataset": ds, "method": "lora", "budget": 0.05,
           "hyperparameters": {"steps": 5}}
    job_id = client.post("/v1/jobs", headers=auth, json=cls).json()["id"]
    _set_status(job_id, "succeeded")
    more = _dataset(client, auth, pos + b'{"text": "meh", "label": "neutral"}\n')
    r = client.post("/v1/jobs", headers=auth, json={**cls, "training_dataset": more, "init_from": job_id})
    assert r.status_code == 422 and r.json()["error"]["param"] == "init_from" and "neutral" in r.text, r.text


def test_the_cli_sends_init_from():
    from cli.commands import job_body

    args = argparse.Namespace(model="m", training_dataset="d", method="smt", method_option=["selection=fresh"],
                              seed=0, targets="q,v", budget=None, validation_dataset=None, suffix=None,
                              init_from="job_x", **{h.name: None for h in __import__(
                                  "smt_core.hyperparameters", fromlist=["JOB"]).JOB})
    sent = job_body(args)
    assert sent["init_from"] == "job_x" and sent["method_options"] == {"selection": "fresh"}
