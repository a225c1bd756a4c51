"""The `sparsetune` parser and exit codes without a server: 0 ok, 1 failed (API unreachable), 2 bad usage."""

from __future__ import annotations

import json

import pytest

from cli.commands import build_parser, job_body, main


def test_engine_and_service_commands_share_one_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"train", "merge", "export", "up", "keys", "datasets", "jobs"} <= set(sub.choices)


def test_bad_usage_exits_2(capsys):
    assert main(["jobs", "create", "--model", "m"]) == 2  # required flags missing
    assert main(["nope"]) == 2
    assert main(["datasets", "upload", "/no/such/file.jsonl"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_unreachable_api_exits_1_with_message(capsys, monkeypatch):
    monkeypatch.setenv("SPARSETUNE_API_KEY", "st_x_y")
    assert main(["jobs", "list", "--api-url", "http://127.0.0.1:9", "--json"]) == 1
    out = capsys.readouterr()
    assert "cannot reach the API" in out.err and json.loads(out.out)["error"]["message"].startswith("cannot reach")


def test_job_body_parses_options_and_budget():
    args = build_parser().parse_args(["jobs", "create", "--model", "m", "--training-dataset", "ds_1", "--method",
                                      "smt", "--budget", "0.01", "--steps", "5", "--targets", "q,v",
                                      "--method-option", "block_size=16", "--method-option", "score=l2"])
    body = job_body(args)
    assert body["budget"] == 0.01 and body["targets"] == ["q", "v"]
    assert body["method_options"] == {"block_size": 16, "score": "l2"}
    assert body["hyperparameters"] == {"steps": 5} and "validation_dataset" not in body
    args = build_parser().parse_args(["jobs", "create", "--model", "m", "--training-dataset", "ds_1", "--method",
                                      "lora", "--batch-size", "8", "--num-devices", "2"])
    assert job_body(args)["hyperparameters"] == {"batch_size": 8, "num_devices": 2}


@pytest.mark.parametrize("argv", [["--json", "jobs", "list"], ["jobs", "list", "--json"]])
def test_json_flag_accepted_before_or_after(argv):
    assert build_parser().parse_args(argv).json is True
