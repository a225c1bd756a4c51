"""Schema fuzzing: schemathesis generates valid and invalid requests for every operation in the OpenAPI schema
and sends them to the app in-process (real Postgres, no worker). No response may be a 5xx, and every response
must match what the schema documents for that operation (status code, content type, body).

Bounded: a fixed number of examples per operation, derandomized so a failure reproduces. The live stream of
all events (GET /v1/events) never ends by design, so it is left out.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.fixtures import make_key

EXAMPLES = int(os.environ.get("SPARSETUNE_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def fuzz_app(service_env):
    """The app without rate limits (so the fuzzer explores rather than collecting 429s)."""
    from api.main import create_app
    from service.settings import get_settings

    saved = {k: os.environ.get(k) for k in ("SPARSETUNE_RATE_READS_PER_SECOND", "SPARSETUNE_RATE_WRITES_PER_SECOND")}
    os.environ.update(dict.fromkeys(saved, "0"))
    get_settings.cache_clear()
    try:
        return create_app()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.fixture(scope="module")
def fuzz_owner(fuzz_app) -> tuple[dict[str, str], dict[str, str]]:
    """A key whose owner has a dataset, a queued job and a webhook; their ids are fed to one strategy in three,
    so the fuzzer reaches real rows and not only 404s."""
    from fastapi.testclient import TestClient

    key, _ = make_key("fuzz")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(fuzz_app) as c:
        ds = c.post("/v1/datasets", headers=headers,
                    files={"file": ("t.jsonl", b'{"prompt": "p", "completion": "c"}\n')}).json()["id"]
        r = c.post("/v1/jobs", headers=headers, json={"model": "cfg-llama", "training_dataset": ds,
                                                     "method": "smt", "hyperparameters": {"steps": 2}})
        assert r.status_code == 201, r.text
        hook = c.post("/v1/webhooks", headers=headers, json={"url": "https://93.184.215.14/hook",
                                                              "events": ["fine_tuning.job.failed"]})
        assert hook.status_code == 201, hook.text
    return headers, {"job_id": r.json()["id"], "dataset_id": ds, "model_id": "cfg-llama",
                     "webhook_id": hook.json()["id"], "file_id": ds, "fine_tuning_job_id": r.json()["id"]}


def strategies(op, ids: dict[str, str]):
    """Valid requests, invalid ones (where the operation has something to get wrong), and valid ones on real ids."""
    names = {p.name for p in op.path_parameters}
    found = [op.as_strategy(GenerationMode.POSITIVE)]
    try:
        found.append(op.as_strategy(GenerationMode.NEGATIVE))
    except Exception:  # noqa: BLE001 - nothing to negate (no parameters, no body)
        pass
    if names and names <= set(ids) | {"name"}:
        fixed = {n: ids[n] for n in names if n in ids}
        found.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
    if op.method.upper() == "POST" and op.path == "/v1/jobs":
        found.append(op.as_strategy(GenerationMode.POSITIVE).map(lambda case: _past_the_lookups(case, ids)))
    if op.method.upper() == "POST" and op.path == "/v1/fine_tuning/jobs":
        found.append(op.as_strategy(GenerationMode.POSITIVE).map(lambda case: _past_the_openai_lookups(case, ids)))
    return st.one_of(found)


def _past_the_openai_lookups(case, ids: dict[str, str]):
    """OpenAI's job body on a real model and file, without a method object that cannot match its type."""
    if isinstance(case.body, dict):
        case.body.update(model=ids["model_id"], training_file=ids["dataset_id"], validation_file=None)
        case.body.pop("method", None)
    return case


def _past_the_lookups(case, ids: dict[str, str]):
    """A job body whose model, dataset, method and targets exist, so the fuzzed rest (budget,
    hyperparameters, seed, suffix, metadata) gets past validation to the insert."""
    if isinstance(case.body, dict):
        case.body.update(model=ids["model_id"], training_dataset=ids["dataset_id"], validation_dataset=None,
                         method="smt", method_options={}, targets=["q", "k", "v"])
    return case


def test_fuzz_every_operation_no_5xx_and_responses_match_the_schema(fuzz_schema, fuzz_owner):
    """One test walks the operations (schemathesis' lazy pytest fixture loader does not run on pytest 9)."""
    headers, ids = fuzz_owner
    failures, statuses = [], Counter()
    operations = [r.ok() for r in fuzz_schema.get_all_operations()]
    operations = [op for op in operations if op.path != "/v1/events"]
    assert len(operations) >= 15, [op.label for op in operations]
    for op in operations:
        @given(case=strategies(op, ids))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            statuses[response.status_code // 100 * 100] += 1

        try:
            fuzz()
        except BaseException as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{op.label}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    assert statuses[200] and statuses[400], f"the fuzzer should reach both successes and refusals: {statuses}"
