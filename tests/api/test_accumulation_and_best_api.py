"""Gradient accumulation and evaluation that chooses, through the API and ``sparsetune jobs create``
(issue 18, items 2 and 3): the fields reach the job, bad values are 422s naming the field, the estimate
reports the effective batch at one micro-batch's memory, and ``stopped_early`` is read from the metrics."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.api.fixtures import count_rows

PC_LINE = b'{"prompt": "p", "completion": "c"}\n'
CHOOSING = {"gradient_accumulation_steps": 4, "eval_every": 5, "metric_for_best": "eval_loss",
            "early_stopping_patience": 2}


def job_body(dataset: str, **hp) -> dict:
    return {"model": "cfg-llama", "training_dataset": dataset, "method": "smt", "budget": 0.05,
            "hyperparameters": {"steps": 20, **hp}}


@pytest.fixture()
def dataset(client, auth) -> str:
    files = {"file": ("t.jsonl", PC_LINE, "application/jsonl")}
    return client.post("/v1/datasets", headers=auth, files=files).json()["id"]


def test_the_settings_reach_the_job_and_default_to_off(client, auth, dataset):
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, **CHOOSING))
    assert r.status_code == 201, r.text
    job = r.json()
    assert {k: job["hyperparameters"][k] for k in CHOOSING} == CHOOSING
    assert job["stopped_early"] is False
    plain = client.post("/v1/jobs", headers=auth, json=job_body(dataset)).json()["hyperparameters"]
    assert (plain["gradient_accumulation_steps"], plain["eval_every"], plain["metric_for_best"],
            plain["early_stopping_patience"]) == (1, 0, None, None)


@pytest.mark.parametrize("hp, param", [
    ({"gradient_accumulation_steps": 0}, "hyperparameters.gradient_accumulation_steps"),
    ({"gradient_accumulation_steps": 10**9}, "hyperparameters.gradient_accumulation_steps"),
    ({"gradient_accumulation_steps": 1.5}, "hyperparameters.gradient_accumulation_steps"),
    ({"eval_every": -1}, "hyperparameters.eval_every"),
    ({"metric_for_best": "train_loss"}, "hyperparameters.metric_for_best"),
    ({"early_stopping_patience": 0}, "hyperparameters.early_stopping_patience"),
    ({"early_stopping_patience": 2, "eval_every": 5}, "hyperparameters.early_stopping_patience"),
    ({"early_stopping_patience": 2, "metric_for_best": "eval_loss"}, "hyperparameters.early_stopping_patience"),
])
def test_bad_values_are_422_naming_the_field_and_write_nothing(client, auth, dataset, hp, param):
    before = count_rows("jobs")
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, **hp))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param and count_rows("jobs") == before


def test_stopped_early_is_read_from_the_metrics(client, auth, dataset):
    from service.db import session_scope
    from service.models import Job

    job_id = client.post("/v1/jobs", headers=auth, json=job_body(dataset, **CHOOSING)).json()["id"]
    with session_scope() as s:  # as the worker stores a run that stopped early
        s.get(Job, job_id).metrics = {"stopped_early": True, "steps": 10,
                                      "best": {"metric": "eval_loss", "value": 0.5, "step": 5}}
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["stopped_early"] is True


def test_the_estimate_keeps_one_micro_batch_of_memory_for_a_larger_effective_batch(client, auth):
    def estimate(**params):
        query = urllib.parse.urlencode({"method": "lora", "budget": "0.01", "batch_size": 4, **params})
        r = client.get(f"/v1/models/cfg-llama/estimate?{query}", headers=auth)
        assert r.status_code == 200, r.text
        return r.json()

    plain, accumulated = estimate(), estimate(gradient_accumulation_steps=4)
    larger = estimate(batch_size=16)
    assert (plain["effective_batch_size"], accumulated["effective_batch_size"]) == (4, 16)
    assert accumulated["memory"] == plain["memory"]  # activations are one micro-batch's
    assert larger["memory"]["activations"] > accumulated["memory"]["activations"]
    bad = client.get("/v1/models/cfg-llama/estimate?method=lora&gradient_accumulation_steps=0", headers=auth)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "gradient_accumulation_steps"


def test_jobs_create_flags_reach_the_job_body():
    from cli.commands import build_parser
    from cli.commands import job_body as cli_body

    args = build_parser().parse_args([
        "jobs", "create", "--model", "m", "--training-dataset", "ds_1", "--method", "smt",
        "--gradient-accumulation-steps", "4", "--eval-every", "5", "--metric-for-best", "eval_loss",
        "--early-stopping-patience", "2"])
    assert cli_body(args)["hyperparameters"] == CHOOSING
    with pytest.raises(SystemExit):  # argparse refuses a metric that is not offered
        build_parser().parse_args(["jobs", "create", "--model", "m", "--training-dataset", "ds_1", "--method",
                                   "smt", "--metric-for-best", "train_loss"])


def test_train_flags_reach_the_spec(tmp_path, monkeypatch):
    import smt_core
    from smt_core.cli import main

    seen = {}

    def fake_run(spec, cb):
        seen["spec"] = spec
        raise SystemExit(0)

    monkeypatch.setattr(smt_core, "run", fake_run)
    with pytest.raises(SystemExit):
        main(["train", "--model", "m", "--data", "d.jsonl", "--method", "lora", "--out", str(tmp_path),
              "--gradient-accumulation-steps", "4", "--eval-every", "5", "--metric-for-best", "eval_accuracy",
              "--early-stopping-patience", "2"])
    spec = seen["spec"]
    assert (spec.gradient_accumulation_steps, spec.eval_every, spec.metric_for_best,
            spec.early_stopping_patience) == (4, 5, "eval_accuracy", 2)
