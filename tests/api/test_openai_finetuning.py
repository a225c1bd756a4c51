"""OpenAI's fine-tuning API, driven by the pinned official ``openai`` package against the app (real Postgres and
Redis; a real Celery worker training a tiny random LLaMA for the workflow test).

The SDK does not validate what it parses, so every response is validated again, strictly, against the SDK's own
pydantic types (``Type.model_validate(obj.to_dict(), strict=True)``): a missing field, a wrong literal or a
float where an int is required fails here, as it would in a client that checks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import FileDeleted, FileObject, Model, ModelDeleted
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests import factories
from tests.api.fixtures import make_key, set_models, start_worker, stop_process, wait_for


def strict(cls: type, obj: Any) -> Any:
    """Validate an SDK object's data strictly against its SDK type (what the SDK itself never does)."""
    return cls.model_validate(obj.to_dict() if hasattr(obj, "to_dict") else obj, strict=True)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def weighted_chat_rows(n: int) -> list[dict]:
    """OpenAI's chat format with ``name`` and a weight-0 assistant draft before the trained answer."""
    return [{"messages": [{"role": "system", "content": "answer with one word", "name": "rules"},
                          *r["messages"][:1], {"role": "assistant", "content": "hmm", "weight": 0},
                          {"role": "user", "content": "one word"}, {**r["messages"][1], "weight": 1}]}
            for r in factories.chat_rows(n)]


@pytest.fixture()
def sdk(client) -> Iterator[tuple[openai.OpenAI, dict[str, str]]]:
    """The official client on the in-process app (Starlette's TestClient is an httpx.Client), and raw headers."""
    key, _ = make_key("openai-sdk")
    yield openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=client, max_retries=0), \
        {"Authorization": f"Bearer {key}"}


def test_files_are_datasets_seen_through_openais_type(sdk, client):
    oa, h = sdk
    f = oa.files.create(file=("chat.jsonl", jsonl(weighted_chat_rows(6))), purpose="fine-tune")
    strict(FileObject, f)
    assert f.id.startswith("ds_") and f.purpose == "fine-tune" and f.status == "processed" and f.filename == "chat.jsonl"
    ds = client.get(f"/v1/datasets/{f.id}", headers=h).json()  # one record, two views
    assert ds["format"] == "chat" and ds["rows"] == 6 and ds["bytes"] == f.bytes
    native = client.post("/v1/datasets", headers=h, files={"file": ("pc.jsonl", jsonl(factories.completion_rows(4)))})
    assert strict(FileObject, oa.files.retrieve(native.json()["id"])).purpose == "fine-tune"
    page = oa.files.list(limit=1)
    assert [x.id for x in page.data] == [native.json()["id"]] and page.has_more
    assert {x.id for x in oa.files.list().data} >= {f.id, native.json()["id"]}
    for x in oa.files.list().data:
        strict(FileObject, x)
    assert oa.files.content(f.id).content == jsonl(weighted_chat_rows(6))
    assert oa.files.list(purpose="fine-tune-results").data == []
    gone = oa.files.delete(native.json()["id"])
    strict(FileDeleted, gone)
    assert gone.deleted and client.get(f"/v1/datasets/{gone.id}", headers=h).status_code == 404


def test_file_refusals_are_openais_errors_with_our_message(sdk):
    oa, _ = sdk
    with pytest.raises(openai.BadRequestError) as exc:
        oa.files.create(file=("a.jsonl", jsonl(factories.chat_rows(2))), purpose="assistants")
    assert exc.value.body["param"] == "purpose" and exc.value.body["type"] == "invalid_request_error"
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    rows = [*factories.chat_rows(2), {"messages": [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": "", "tool_calls": [call]}]}]
    with pytest.raises(openai.BadRequestError) as exc:
        oa.files.create(file=("tools.jsonl", jsonl(rows)), purpose="fine-tune")
    body = exc.value.body
    assert body["param"] == "file" and "tool and function calling" in body["message"]
    assert body["details"] == [{"line": 3, "field": "messages[1].tool_calls", "message": body["details"][0]["message"]}]
    with pytest.raises(openai.NotFoundError):
        oa.files.retrieve("ds_missing")
    with pytest.raises(openai.NotFoundError):
        oa.files.content("file-job_missing-metrics")


def _validate_job(job: Any) -> FineTuningJob:
    out = strict(FineTuningJob, job)
    assert out.method.type == "supervised" and isinstance(out.hyperparameters.n_epochs, int)
    return out


def test_smts_learning_rate_multiplier_is_over_its_budgets_and_tasks_default_rate(sdk, client):
    """SMT's default rate falls with its budget (sqrt(1% / budget)) and is lower for text (1e-3 at 1%) than for
    a classification head (3e-3): the multiplier multiplies the rate for the training file's task."""
    oa, h = sdk
    for rows, rate_at_1pct in ((weighted_chat_rows(12), 1e-3), (factories.classification_rows(12), 3e-3)):
        f = oa.files.create(file=("train.jsonl", jsonl(rows)), purpose="fine-tune")
        big = oa.fine_tuning.jobs.create(model="cfg-llama", training_file=f.id, method={
            "type": "smt", "smt": {"budget": 0.04, "hyperparameters": {"learning_rate_multiplier": 2}}})
        native = client.get(f"/v1/jobs/{big.id}", headers=h).json()
        assert native["hyperparameters"]["learning_rate"] == pytest.approx(2 * rate_at_1pct / 2, rel=1e-4)
        assert oa.fine_tuning.jobs.retrieve(big.id).hyperparameters.learning_rate_multiplier == 2.0


def test_jobs_are_native_jobs_with_openais_shape_and_our_methods(sdk, client):
    oa, h = sdk
    f = oa.files.create(file=("chat.jsonl", jsonl(weighted_chat_rows(12))), purpose="fine-tune")
    job = oa.fine_tuning.jobs.create(model="cfg-llama", training_file=f.id, suffix="bot", seed=7,
                                     metadata={"team": "search"})
    _validate_job(job)
    assert job.status == "queued" and job.training_file == f.id and job.seed == 7 and job.user_provided_suffix == "bot"
    assert job.hyperparameters.model_dump() == {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1.0}
    smt = job.method.model_extra["smt"]
    assert smt["budget"] == 0.01 and smt["targets"] == ["q", "k", "v"] and job.organization_id
    native = client.get(f"/v1/jobs/{job.id}", headers=h).json()
    assert native["method"] == "smt" and native["metadata"] == {"team": "search"} and native["suffix"] == "bot"

    lora = oa.fine_tuning.jobs.create(model="cfg-llama", training_file=f.id, method={
        "type": "lora", "lora": {"budget": 4096, "targets": ["q", "v"], "options": {"alpha": 8},
                                 "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 2}}})
    _validate_job(lora)
    assert lora.hyperparameters.model_dump() == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 2.0}
    native = client.get(f"/v1/jobs/{lora.id}", headers=h).json()
    assert native["method"] == "lora" and native["hyperparameters"]["learning_rate"] == pytest.approx(2e-3)
    assert native["method_options"] == {"alpha": 8} and native["targets"] == ["q", "v"]
    assert lora.method.model_extra["lora"]["options"] == {"alpha": 8}

    page = oa.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in page.data] == [lora.id] and page.has_more
    assert [j.id for j in oa.fine_tuning.jobs.list(limit=1, after=lora.id).data] == [job.id]
    events = oa.fine_tuning.jobs.list_events(job.id)
    assert events.data and all(strict(FineTuningJobEvent, e).object == "fine_tuning.job.event" for e in events.data)
    assert oa.fine_tuning.jobs.checkpoints.list(job.id).data == []
    cancelled = oa.fine_tuning.jobs.cancel(job.id)
    assert _validate_job(cancelled).status == "cancelled" and cancelled.finished_at
    with pytest.raises(openai.ConflictError) as exc:
        oa.fine_tuning.jobs.cancel(job.id)
    assert "already cancelled" in exc.value.body["message"]
    # a native job is an OpenAI job too
    native_job = client.post("/v1/jobs", headers=h, json={"model": "cfg-llama", "training_dataset": f.id, "method": "snell",
                                                          "budget": 4096, "hyperparameters": {"steps": 3}}).json()
    seen = _validate_job(oa.fine_tuning.jobs.retrieve(native_job["id"]))
    assert seen.method.model_extra["snell"]["budget"] == 4096 and seen.hyperparameters.n_epochs == 3


@pytest.mark.parametrize("kwargs, param", [
    ({"training_file": "ds_nope"}, "training_file"),
    ({"validation_file": "ds_nope"}, "validation_file"),
    ({"model": "gpt-4o-mini"}, "model"),
    ({"suffix": "a:b"}, "suffix"),
    ({"suffix": "x" * 65}, "suffix"),
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"learning_rate_multiplier": 100000}}, "hyperparameters.learning_rate_multiplier"),
    ({"method": {"type": "dpo", "dpo": {}}}, "method.dpo"),
    ({"method": {"type": "reinforcement"}}, "method.type"),
    ({"method": {"type": "smt"}}, "method.smt"),
    ({"method": {"type": "smt", "smt": {"options": {"block_size": 0}}}}, "method.smt.options.block_size"),
    ({"method": {"type": "smt", "smt": {"budget": 10**12}}}, "method.smt.budget"),
    ({"method": {"type": "lora", "lora": {"targets": ["x"]}}}, "method.lora.targets"),
    ({"method": {"type": "smt", "smt": {"hyperparameters": {"batch_size": 3, "num_devices": 2}}}},
     "method.smt.hyperparameters"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "many"}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
])
def test_bad_job_requests_are_400s_naming_the_field_sent(sdk, kwargs, param):
    oa, _ = sdk
    f = oa.files.create(file=("pc.jsonl", jsonl(factories.completion_rows(8))), purpose="fine-tune")
    args = {"model": "cfg-llama", "training_file": f.id, **kwargs}
    with pytest.raises(openai.BadRequestError) as exc:
        oa.fine_tuning.jobs.create(**args)
    err = exc.value.body
    assert exc.value.status_code == 400 and err["type"] == "invalid_request_error"
    assert err["param"] is not None and err["param"].startswith(param), err
    assert err["message"].startswith(err["param"]) or param == "integrations", err


def test_not_found_and_native_routes_keep_their_422(sdk, client):
    oa, h = sdk
    with pytest.raises(openai.NotFoundError) as exc:
        oa.fine_tuning.jobs.retrieve("job_nope")
    assert exc.value.body["type"] == "invalid_request_error" and exc.value.body["code"] == "not_found"
    for call in (oa.fine_tuning.jobs.list_events, oa.fine_tuning.jobs.checkpoints.list, oa.fine_tuning.jobs.cancel):
        with pytest.raises(openai.NotFoundError):
            call("job_nope")
    with pytest.raises(openai.BadRequestError):
        oa.fine_tuning.jobs.list(after="job_nope")
    r = client.post("/v1/jobs", headers=h, json={"model": "cfg-llama"})
    assert r.status_code == 422 and "type" not in r.json()["error"]


def test_job_creation_honours_idempotency_key_as_the_native_route_does(sdk, client):
    oa, h = sdk
    f = oa.files.create(file=("pc.jsonl", jsonl(factories.completion_rows(8))), purpose="fine-tune")
    body = {"model": "cfg-llama", "training_file": f.id, "hyperparameters": {"n_epochs": "auto", "batch_size": "auto"}}
    key = {**h, "Idempotency-Key": "retry-1"}
    first, again = (client.post("/v1/fine_tuning/jobs", headers=key, json=body) for _ in range(2))
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
    assert strict(FineTuningJob, first.json()).hyperparameters.batch_size == 8  # auto: resolved, an integer
    clash = client.post("/v1/fine_tuning/jobs", headers=key, json={**body, "seed": 3})
    assert clash.status_code == 409 and clash.json()["error"]["type"] == "invalid_request_error"


def test_models_are_openai_model_objects_and_bases_cannot_be_deleted(sdk):
    oa, _ = sdk
    listed = oa.models.list().data
    assert listed and all(strict(Model, m).object == "model" for m in listed)
    base = strict(Model, oa.models.retrieve("cfg-llama"))
    assert base.id == "cfg-llama" and base.owned_by == "sparsetune" and base.created > 0
    with pytest.raises(openai.PermissionDeniedError):
        oa.models.delete("cfg-llama")
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("ft:cfg-llama:smt:job_nope")
    with pytest.raises(openai.NotFoundError):
        oa.models.delete("gpt-4o")


# ---- the workflow on a real worker ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trainer(service_env, tiny_llama_dir, config_only_model, tmp_path_factory) -> Iterator[None]:
    set_models({"tiny-llama": str(tiny_llama_dir), "cfg-llama": str(config_only_model)})
    _end_leftover_jobs()
    proc = start_worker({}, tmp_path_factory.mktemp("openai-worker") / "worker.log")
    try:
        yield
    finally:
        stop_process(proc, timeout=30)


def _end_leftover_jobs() -> None:
    """Jobs that earlier tests of this session created without a worker are still queued in the session's
    database and queue: this module's worker (one job at a time, oldest first) would train them before ours and
    the wait below would run out. They are not this module's: end them first."""
    from sqlalchemy import update

    from service.db import session_scope
    from service.models import Job
    from service.states import ACTIVE, JobStatus

    with session_scope() as s:
        s.execute(update(Job).where(Job.status.in_(ACTIVE)).values(status=JobStatus.cancelled,
                                                                   finished_at=time.time()))


def _wait_finished(oa: openai.OpenAI, job_id: str, seen: list[str]) -> FineTuningJob:
    """Poll as OpenAI's docs do, validating each retrieve and events page while the job runs."""
    deadline = time.time() + 300
    while time.time() < deadline:
        job = _validate_job(oa.fine_tuning.jobs.retrieve(job_id))
        seen.append(job.status)
        for e in oa.fine_tuning.jobs.list_events(job_id, limit=5).data:
            strict(FineTuningJobEvent, e)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {seen[-5:]}")


@pytest.mark.timeout(600)
def test_openai_sdk_workflow_on_a_real_worker(trainer, sdk, client):
    oa, h = sdk
    f = strict(FileObject, oa.files.create(file=("chat.jsonl", jsonl(weighted_chat_rows(20))), purpose="fine-tune"))
    sup = _validate_job(oa.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, suffix="helper",
                                                   hyperparameters={"n_epochs": 1, "batch_size": 6}))
    smt = _validate_job(oa.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id, method={
        "type": "smt", "smt": {"budget": 4096, "targets": ["q", "v"], "options": {"block_size": 16, "selection_steps": 1},
                               "hyperparameters": {"steps": 2, "batch_size": 4, "max_seq_len": 64}}}))
    other = _validate_job(oa.fine_tuning.jobs.create(model="tiny-llama", training_file=f.id))
    assert {j.id for j in oa.fine_tuning.jobs.list(limit=3).data} == {sup.id, smt.id, other.id}
    statuses: list[str] = []
    done = _wait_finished(oa, sup.id, statuses)
    assert done.status == "succeeded", (done.error, statuses)
    cancelled = _validate_job(oa.fine_tuning.jobs.cancel(other.id))  # queued behind smt, or running: it stops
    assert cancelled.status in ("cancelled", "queued", "running")
    assert done.fine_tuned_model == f"ft:tiny-llama:helper:{sup.id}" and done.trained_tokens
    assert done.finished_at and done.hyperparameters.n_epochs == 1 and done.hyperparameters.batch_size == 6
    assert done.hyperparameters.learning_rate_multiplier == 1.0  # the engine's default rate, reported back

    events = oa.fine_tuning.jobs.list_events(sup.id, limit=100).data
    assert [strict(FineTuningJobEvent, e).object for e in events] and {e.type for e in events} == {"message", "metrics"}
    assert events[0].created_at >= events[-1].created_at  # newest first
    first = oa.fine_tuning.jobs.list_events(sup.id, limit=2)
    assert first.has_more and oa.fine_tuning.jobs.list_events(sup.id, limit=2, after=first.data[-1].id).data[0].id \
        == events[2].id

    ckpts = oa.fine_tuning.jobs.checkpoints.list(sup.id).data
    assert len(ckpts) == 1
    ck = strict(FineTuningJobCheckpoint, ckpts[0])
    assert ck.fine_tuned_model_checkpoint == done.fine_tuned_model and ck.step_number == done_native_steps(client, h, sup.id)
    assert ck.metrics.train_loss is not None and ck.fine_tuning_job_id == sup.id

    models = {m.id: strict(Model, m) for m in oa.models.list().data}
    assert models[done.fine_tuned_model].owned_by == done.organization_id
    assert strict(Model, oa.models.retrieve(done.fine_tuned_model)).created == done.finished_at

    assert sorted(done.result_files) == sorted([f"file-{sup.id}-metrics", f"file-{sup.id}-adapter"])
    results = oa.files.list(purpose="fine-tune-results").data
    assert {r.id for r in results} >= set(done.result_files) and all(strict(FileObject, r) for r in results)
    assert all(r.purpose == "fine-tune-results" for r in results)
    assert not {r.id for r in oa.files.list().data} & set(done.result_files)  # only under their purpose
    csv = oa.files.content(f"file-{sup.id}-metrics").text.splitlines()
    assert csv[0].startswith("step,train_loss,eval_loss,eval_accuracy") and len(csv) > 1
    adapter = oa.files.content(f"file-{sup.id}-adapter").content
    assert len(adapter) == strict(FileObject, oa.files.retrieve(f"file-{sup.id}-adapter")).bytes
    assert adapter == client.get(f"/v1/jobs/{sup.id}/artifacts/adapter.safetensors", headers=h).content

    smt_done = _wait_finished(oa, smt.id, [])
    assert smt_done.status == "succeeded", smt_done.error
    assert smt_done.method.model_extra["smt"]["trainable_params"] and smt_done.hyperparameters.n_epochs >= 1
    assert _wait_finished(oa, other.id, []).status == "cancelled"

    gone = strict(ModelDeleted, oa.models.delete(done.fine_tuned_model))
    assert gone.deleted and gone.id == done.fine_tuned_model
    after = _validate_job(oa.fine_tuning.jobs.retrieve(sup.id))
    assert after.fine_tuned_model is None and after.status == "succeeded"
    assert client.get(f"/v1/jobs/{sup.id}", headers=h).json()["fine_tuned_model"] is None
    assert done.fine_tuned_model not in {m.id for m in oa.models.list().data}
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        oa.models.delete(done.fine_tuned_model)

    assert client.delete(f"/v1/jobs/{sup.id}", headers=h).status_code == 200  # its result files go with it
    with pytest.raises(openai.NotFoundError):
        oa.files.retrieve(f"file-{sup.id}-metrics")
    assert not {r.id for r in oa.files.list(purpose="fine-tune-results").data} & set(done.result_files)
    wait_for(lambda: True, 1, 0.1, "")


def done_native_steps(client, h: dict[str, str], job_id: str) -> int:
    return client.get(f"/v1/jobs/{job_id}", headers=h).json()["steps_completed"]
