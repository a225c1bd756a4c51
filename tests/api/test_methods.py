"""GET /v1/methods lists exactly what job creation accepts, and job creation enforces each listed option's
type and bounds with a 422 naming the field (both read the engine's method registry)."""

from __future__ import annotations

import json

import pytest

from smt_core.methods.options import Option
from smt_core.registry import get_spec, served_specs
from tests.api.fixtures import count_rows
from tests.api.test_jobs import dataset, job_body  # noqa: F401 - the dataset fixture

OPTION_KEYS = {"name", "type", "default", "minimum", "maximum", "enum", "help"}


def _methods(client, auth) -> list[dict]:
    r = client.get("/v1/methods", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_methods_are_listed_in_the_interface_shape(client, auth):
    r = client.get("/v1/methods", headers=auth)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["object"] == "list" and page["has_more"] is False and page["last_id"] == page["data"][-1]["id"]
    assert [m["id"] for m in page["data"]] == ["smt", "snell", "lora", "dora", "full"]
    for m in page["data"]:
        assert set(m) == {"id", "object", "uses_budget", "options"} and m["object"] == "method", m
        for opt in m["options"]:
            assert set(opt) == OPTION_KEYS and opt["type"] in ("integer", "number", "boolean", "string"), opt
            # a null default is "computed by the method" (the help says how), e.g. smt's selection
            assert opt["help"] and (opt["enum"] is None or opt["default"] in [None, *opt["enum"]]), opt
    smt = page["data"][0]
    assert smt["uses_budget"] is True and page["data"][-1]["uses_budget"] is False  # full ignores the budget
    assert smt["options"][0] == {**smt["options"][0], "name": "block_size", "type": "integer", "default": None,
                                 "minimum": 1, "maximum": 4096, "enum": None}
    assert client.get("/v1/methods").status_code == 401
    assert "/v1/methods" in client.get("/openapi.json").json()["paths"]


def test_every_listed_method_is_accepted_and_no_other(client, auth, dataset):  # noqa: F811
    listed = _methods(client, auth)
    for m in listed:
        r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, method=m["id"], budget=0.05,
                                                                method_options={}))
        assert r.status_code == 201, (m["id"], r.text)
        assert r.json()["method"] == m["id"]
    for name in ("head", "magic", "SMT"):  # head: the command line's linear probe, not a service method
        r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, method=name, method_options={}))
        assert r.status_code == 422 and r.json()["error"]["param"] == "method", r.text
        assert ", ".join(m["id"] for m in listed) in r.json()["error"]["message"]


def _refused(opt: Option, max_steps: int) -> list:
    """Past each end (open ends included), off the enum, of the wrong type."""
    bad: list = ["text" if opt.type != "string" else 7]
    if opt.minimum is not None:
        bad += [opt.minimum - 1] + ([opt.minimum] if opt.exclusive_minimum else [])
    if opt.maximum is not None:
        bad += [opt.maximum + 1] + ([opt.maximum] if opt.exclusive_maximum else [])
    if opt.bounded_by_max_steps:
        bad.append(max_steps + 1)
    if opt.enum is not None:
        bad.append(f"not-{opt.enum[0]}")
    if opt.type == "integer":
        bad += [1.5, True]
    return bad


def _closed_ends(opt: Option, max_steps: int) -> list:
    ends = [opt.minimum] if opt.minimum is not None and not opt.exclusive_minimum else []
    if opt.maximum is not None and not opt.exclusive_maximum:
        ends.append(min(opt.maximum, max_steps) if opt.bounded_by_max_steps else opt.maximum)
    return ends


@pytest.mark.parametrize("method", [s.name for s in served_specs() if s.config.options()])
def test_each_listed_option_is_bounded_with_a_422_naming_it(client, auth, dataset, method):  # noqa: F811
    listed = next(m for m in _methods(client, auth) if m["id"] == method)
    options = get_spec(method).config.options()
    assert listed["options"] == [o.public() for o in options], "the listing is the definition the API checks"
    max_steps, before = 100_000, count_rows("jobs")
    for opt in options:
        for value in _refused(opt, max_steps):
            body = job_body(dataset, method=method, budget=0.05, method_options={opt.name: value})
            r = client.post("/v1/jobs", headers=auth, json=body)
            assert r.status_code == 422, (opt.name, value, r.text)
            assert r.json()["error"]["param"] == f"method_options.{opt.name}", (value, r.json())
        for value in _closed_ends(opt, max_steps):  # accepted (the estimate validates as job creation does)
            query = {"method": method, "budget": 0.5, "method_options": json.dumps({opt.name: value})}
            r = client.get("/v1/models/cfg-llama/estimate", headers=auth, params=query)
            assert r.status_code == 200, (opt.name, value, r.text)
    assert count_rows("jobs") == before


def test_smt_takes_block_sizes_that_leave_ragged_edges(client, auth, dataset):  # noqa: F811
    """The engine cuts sides a block size does not divide into ragged edge blocks; the API no longer
    refuses them (it asked for a power of two dividing every side)."""
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, method_options={"block_size": 24}))
    assert r.status_code == 201, r.text
    est = client.get("/v1/models/cfg-llama/estimate", headers=auth,
                     params={"method": "smt", "budget": 3000, "method_options": '{"block_size": 24}'}).json()
    assert est["trainable_params"] == 5 * 24 * 24
    # a budget below the smallest (ragged) block is what the engine refuses: so does the API, naming the budget
    small = client.post("/v1/jobs", headers=auth, json=job_body(dataset, budget=10, method_options={"block_size": 24}))
    assert small.status_code == 422 and small.json()["error"]["param"] == "budget", small.text
    assert "smaller than one block" in small.json()["error"]["message"]
