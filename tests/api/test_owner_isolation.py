"""Every route in the OpenAPI schema, walked with another owner's key and with a just-revoked key.

The routes are read from the schema when the tests are collected, so a new route is walked without anyone
remembering to add it; a route with a path parameter this file does not know fails until it is taught the
owner's value for it. Another owner gets 404 for the owner's ids and never sees them in any response; a
revoked key is refused (401) on the very next request, on every route that takes a key.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from tests.api.fixtures import make_key

PC = b'{"prompt": "p", "completion": "c"}\n'
# path parameters that name the owner's rows (a file is a dataset; a fine-tuning job is a job)
OWNED_PARAMS = {"job_id", "dataset_id", "webhook_id", "file_id", "fine_tuning_job_id"}
OWNED_MODEL = "/v1/models/{model_id}"  # GET/DELETE one model: the owner's fine-tuned model (a base is shared)
SHARED_VALUES = {"model_id": "cfg-llama", "name": "adapter.safetensors"}  # not owned: the same for everyone
STREAMS = {"/v1/events"}  # never end on their own: read one event, then disconnect
GENERATE = {"/v1/chat/completions", "/v1/completions"}  # the model named is the owner's job's fine-tuned model
WEBHOOK = {"url": "https://93.184.215.14/hook", "events": ["fine_tuning.job.succeeded"]}  # a public address


def _schema_operations() -> list[tuple[str, str, bool]]:
    """(method, path, needs a key) for every operation; built from the app without touching the database."""
    os.environ.setdefault("SPARSETUNE_HOME", "/tmp")
    from api.main import create_app

    ops = create_app().openapi()["paths"]
    return [(m.upper(), path, bool(spec.get("security"))) for path, methods in ops.items()
            for m, spec in methods.items()]


OPERATIONS = _schema_operations()
AUTHED = [(m, p) for m, p, secured in OPERATIONS if secured]


def _succeed(job_id: str) -> str:
    """Mark a job succeeded in the database (no worker here): it then has a fine-tuned model and result files."""
    from service.db import session_scope
    from service.finetuned import name_of
    from service.models import Job, JobStatus

    with session_scope() as s:
        job = s.get(Job, job_id)
        job.status, job.finished_at = JobStatus.succeeded, job.created_at + 1
        s.flush()
        return name_of(job) or ""


@pytest.fixture(scope="module")
def alice(app, service_env) -> dict[str, str]:
    """An owner with a dataset, a queued job, a cancelled job (a finished one, so DELETE would work), a
    succeeded one (its fine-tuned model and result files) and a webhook."""
    from fastapi.testclient import TestClient

    key, owner = make_key("iso-alice")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as c:
        ds = c.post("/v1/datasets", headers=headers, files={"file": ("a.jsonl", PC)}).json()["id"]
        body = {"model": "cfg-llama", "training_dataset": ds, "method": "smt", "hyperparameters": {"steps": 2}}
        queued = c.post("/v1/jobs", headers=headers, json=body).json()["id"]
        done = c.post("/v1/jobs", headers=headers, json=body).json()["id"]
        assert c.post(f"/v1/jobs/{done}/cancel", headers=headers).status_code == 200
        hook = c.post("/v1/webhooks", headers=headers, json=WEBHOOK).json()["id"]
        tuned = c.post("/v1/jobs", headers=headers, json=body).json()["id"]
    model = _succeed(tuned)
    return {"owner": owner, "dataset_id": ds, "job_id": queued, "done_job_id": done, "webhook_id": hook,
            "tuned_job_id": tuned, "model": model, **headers}


def request_for(method: str, path: str, ids: dict[str, str]) -> tuple[str, dict]:
    """The URL (path parameters filled in with the owner's values) and the request's body, if any."""
    url = path
    for name in [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]:
        if path == OWNED_MODEL:
            url = url.replace("{model_id}", ids["model"])
        elif name in OWNED_PARAMS:
            url = url.replace(f"{{{name}}}", ids[name])
        elif name in SHARED_VALUES:
            url = url.replace(f"{{{name}}}", SHARED_VALUES[name])
        else:
            pytest.fail(f"{method} {path}: unknown path parameter {name!r}; teach this test whether it is owned")
    kwargs: dict = {}
    if (method, path) == ("POST", "/v1/jobs"):  # a job on the owner's dataset
        kwargs["json"] = {"model": "cfg-llama", "training_dataset": ids["dataset_id"], "method": "smt",
                          "hyperparameters": {"steps": 2}}
    elif (method, path) == ("POST", "/v1/datasets"):
        kwargs["files"] = {"file": ("b.jsonl", PC)}
    elif (method, path) == ("POST", "/v1/files"):
        kwargs.update(files={"file": ("b.jsonl", PC)}, data={"purpose": "fine-tune"})
    elif (method, path) == ("POST", "/v1/fine_tuning/jobs"):  # OpenAI's job on the owner's file
        kwargs["json"] = {"model": "cfg-llama", "training_file": ids["dataset_id"]}
    elif (method, path) == ("POST", "/v1/webhooks"):
        kwargs["json"] = WEBHOOK
    elif path in GENERATE:
        kwargs["json"] = {"model": f"ft:cfg-llama:smt:{ids['job_id']}", "prompt": "p",
                          "messages": [{"role": "user", "content": "p"}]}
        kwargs["json"].pop("prompt" if path.endswith("/chat/completions") else "messages")
    elif path.endswith("/predict"):
        kwargs["json"] = {"texts": ["p"]}
    return url, kwargs


def first_stream_event(app, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Drive the ASGI app directly: send the request, wait for the first body bytes, then disconnect."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 1234), "server": ("testserver", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    status, body = 0, b""

    async def run() -> None:
        got = asyncio.Event()

        async def receive() -> dict:
            await got.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
                if status != 200:
                    got.set()
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")
                if b"data:" in body or not message.get("more_body"):
                    got.set()

        await asyncio.wait_for(app(scope, receive, send), 20)

    asyncio.run(run())
    return status, body


@pytest.mark.parametrize("method, path", AUTHED, ids=[f"{m} {p}" for m, p in AUTHED])
def test_another_owner_gets_404_or_nothing_of_the_owners(client, app, alice, method, path):
    ids = {"job_id": alice["done_job_id"] if method == "DELETE" else alice["job_id"], "dataset_id": alice["dataset_id"],
           "webhook_id": alice["webhook_id"], "file_id": alice["dataset_id"], "fine_tuning_job_id": alice["job_id"],
           "model": alice["model"]}
    key, bob_owner = make_key("iso-bob")
    bob = {"Authorization": f"Bearer {key}"}
    url, kwargs = request_for(method, path, ids)
    if path in STREAMS:
        # bob's own job makes his first event, after alice's (and everyone else's so far): from event 0 he
        # must get his own first
        ds = client.post("/v1/datasets", headers=bob, files={"file": ("b.jsonl", PC)}).json()["id"]
        mine = client.post("/v1/jobs", headers=bob, json={"model": "cfg-llama", "training_dataset": ds,
                                                          "method": "smt", "hyperparameters": {"steps": 2}}).json()
        status, text = first_stream_event(app, url, {**bob, "Last-Event-ID": "0"})
        assert status == 200 and b"data:" in text
        event = json.loads(text.split(b"data:", 1)[1].split(b"\n", 1)[0])
        assert event["job_id"] == mine["id"], "the first event from 0 is bob's own, not any other owner's"
        body = text.decode()
    else:
        r = client.request(method, url, headers=bob, **kwargs)
        body = r.text
        if any(f"{{{p}}}" in path for p in OWNED_PARAMS) or path == OWNED_MODEL:
            assert r.status_code == 404, (method, url, r.text)
            assert method == "HEAD" or r.json()["error"]["code"] == "not_found"  # a HEAD answer has no body
        elif (method, path) == ("POST", "/v1/jobs"):
            assert r.status_code == 422 and r.json()["error"]["param"] == "training_dataset", r.text
        elif (method, path) == ("POST", "/v1/fine_tuning/jobs"):  # OpenAI's status for the same refusal
            assert r.status_code == 400 and r.json()["error"]["param"] == "training_file", r.text
        elif path in GENERATE:
            assert r.status_code == 404 and r.json()["error"]["param"] == "model", r.text
        else:
            assert r.status_code < 400, (method, url, r.text)
    sent = url + json.dumps(kwargs.get("json"))  # an error may echo what the caller sent, nothing more
    for own in (alice["owner"], alice["dataset_id"], alice["job_id"], alice["done_job_id"], alice["webhook_id"],
                alice["tuned_job_id"], alice["model"]):
        assert own in sent or own not in body, f"{method} {path} shows another owner's {own}"
    assert client.get(f"/v1/jobs/{alice['job_id']}", headers={"Authorization": alice["Authorization"]}).json()[
        "status"] == "queued", "nothing another owner did changed the owner's job"


@pytest.mark.parametrize("method, path", AUTHED, ids=[f"{m} {p}" for m, p in AUTHED])
def test_revoked_key_is_refused_at_once(client, app, alice, method, path):
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import ApiKey
    from service.security import revoke_key

    key, owner = make_key("iso-revoked", alice["owner"])  # a second key of the same owner
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/datasets", headers=headers).status_code == 200, "the key works before"
    with session_scope() as s:
        revoke_key(s, s.scalar(select(ApiKey).where(ApiKey.prefix == key.split("_")[1])).id)
    url, kwargs = request_for(method, path, {"job_id": alice["job_id"], "dataset_id": alice["dataset_id"],
                                             "webhook_id": alice["webhook_id"], "file_id": alice["dataset_id"],
                                             "fine_tuning_job_id": alice["job_id"], "model": alice["model"]})
    if path in STREAMS:
        status, text = first_stream_event(app, url, headers)
        assert status == 401 and b"invalid or revoked API key" in text
        return
    r = client.request(method, url, headers=headers, **kwargs)
    assert r.status_code == 401, (method, url, r.text)
    # the OpenAI routes add OpenAI's error type (api/openai_errors.py) when the route itself refuses the key
    err = {} if method == "HEAD" else r.json()["error"]
    assert err.pop("type", "authentication_error") == "authentication_error"
    assert method == "HEAD" or err == {"code": "unauthorized", "message": "invalid or revoked API key",
                                       "param": "Authorization"}
    assert client.get("/v1/datasets", headers={"Authorization": alice["Authorization"]}).status_code == 200, \
        "revoking one key leaves the owner's other keys working"


def test_walk_covers_every_route_and_only_health_is_public():
    public = sorted(p for _, p, secured in OPERATIONS if not secured)
    assert public == ["/healthz", "/metrics", "/readyz"], public
    assert len(AUTHED) >= 18
