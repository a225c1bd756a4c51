"""The API side of trying a model: fine-tuned model names, /v1/models, /v1/chat/completions, /v1/completions and
/v1/jobs/{id}/predict — their errors, routing to inference processes, and OpenAI's shapes checked strictly
against the official openai SDK's own pydantic types (the SDK does not validate by itself).

The inference process here is a stand-in (tests/api/inference_standin.py): a real HTTP server on a real socket
that speaks the internal contract with canned answers. Only these API unit tests use it; everything on the API
side (routes, routing from the ``workers`` table, forwarding over HTTP, NDJSON → SSE) is the real code, on real
Postgres. The real inference process is tested end to end in tests/e2e.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from sqlalchemy import delete, update

from tests import factories
from tests.api.fixtures import make_key, set_models
from tests.api.inference_standin import PIECES, StandIn

TEXT = "".join(PIECES)


# ---- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standin(service_env) -> Iterator[StandIn]:
    from service.settings import get_settings

    server = StandIn(get_settings().inference_secret())
    server.start()
    yield server
    server.stop()


class Workers:
    """Inference process rows in the ``workers`` table, removed after the test."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def add(self, address: str, models: list[str] | None = None, load: int = 0, age: float = 0.0,
            status: str = "idle", kind: str = "inference") -> str:
        from service.db import session_scope
        from service.models import Worker

        wid = f"inf_{uuid.uuid4().hex[:10]}"
        now = time.time()
        with session_scope() as s:
            s.add(Worker(id=wid, host="test", pid=1, pool="inference", queue="", device="cpu", kind=kind,
                         address=address, models=models or [], load=load, status=status, started_at=now - age,
                         last_seen_at=now - age))
        self.ids.append(wid)
        return wid

    def clear(self) -> None:
        from service.db import session_scope
        from service.models import Worker

        with session_scope() as s:
            s.execute(delete(Worker).where(Worker.id.in_(self.ids)))
        self.ids.clear()


@pytest.fixture()
def workers(service_env) -> Iterator[Workers]:
    w = Workers()
    yield w
    w.clear()


@pytest.fixture()
def serving(workers, standin) -> StandIn:
    """One live inference process (the stand-in) holding cfg-llama."""
    workers.add(standin.url, ["cfg-llama"])
    standin.requests.clear()
    return standin


def _succeed(job_id: str) -> None:
    from service.db import session_scope
    from service.models import Job, JobStatus

    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.succeeded, finished_at=time.time(),
                                                             phase=None))


@pytest.fixture(scope="module")
def world(app) -> dict:
    """Alice's jobs: a succeeded completion job (suffix ``mybot``), a succeeded classification job and a queued
    one; and Mallory, another owner."""
    key, _ = make_key("inf-alice")
    other, _ = make_key("inf-mallory")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as c:
        def dataset(rows: list[dict]) -> str:
            body = "".join(json.dumps(r) + "\n" for r in rows).encode()
            r = c.post("/v1/datasets", headers=headers, files={"file": ("d.jsonl", body)})
            assert r.status_code == 201, r.text
            return r.json()["id"]

        def job(ds: str, **extra) -> str:
            r = c.post("/v1/jobs", headers=headers, json={"model": "cfg-llama", "training_dataset": ds,
                                                         "method": "smt", "hyperparameters": {"steps": 2}, **extra})
            assert r.status_code == 201, r.text
            return r.json()["id"]

        gen_ds, cls_ds = dataset(factories.completion_rows(8)), dataset(factories.classification_rows(8))
        gen, cls, queued = job(gen_ds, suffix="mybot"), job(cls_ds), job(gen_ds)
    _succeed(gen)
    _succeed(cls)
    return {"headers": headers, "other": {"Authorization": f"Bearer {other}"}, "key": key,
            "gen": gen, "cls": cls, "queued": queued,
            "gen_model": f"ft:cfg-llama:mybot:{gen}", "cls_model": f"ft:cfg-llama:smt:{cls}"}


def chat_body(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking each event is one ``data:`` line and a blank line."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


# ---- names and listing ------------------------------------------------------------------------------------

def test_fine_tuned_model_names_parse_back_to_the_job_id():
    from service import finetuned

    name = finetuned.fine_tuned_name("succeeded", "smollm2-135m", None, "smt", "job_abc")
    assert name == "ft:smollm2-135m:smt:job_abc" and finetuned.job_id_of(name) == "job_abc"
    assert finetuned.fine_tuned_name("succeeded", "org/m:v2", "my:bot", "lora", "job_x") == "ft:org/m:v2:my:bot:job_x"
    assert finetuned.job_id_of("ft:org/m:v2:my:bot:job_x") == "job_x"
    for status in ("queued", "running", "failed", "cancelled"):
        assert finetuned.fine_tuned_name(status, "b", None, "smt", "job_x") is None
    for bad in ("smollm2-135m", "ft:job_x", "ft:b:job_x", "ft:b:s:", "FT:b:s:job_x", "ft:b:s:job x\x00"):
        assert finetuned.job_id_of(bad) is None, bad


def test_a_job_gets_its_fine_tuned_model_only_once_it_succeeded(client, world):
    h = world["headers"]
    assert client.get(f"/v1/jobs/{world['gen']}", headers=h).json()["fine_tuned_model"] == world["gen_model"]
    assert client.get(f"/v1/jobs/{world['cls']}", headers=h).json()["fine_tuned_model"] == world["cls_model"]
    assert client.get(f"/v1/jobs/{world['queued']}", headers=h).json()["fine_tuned_model"] is None
    listed = {j["id"]: j["fine_tuned_model"] for j in client.get("/v1/jobs", headers=h).json()["data"]}
    assert listed[world["gen"]] == world["gen_model"] and listed[world["queued"]] is None


def test_models_lists_the_callers_fine_tuned_models_after_the_base_models(client, world):
    data = client.get("/v1/models", headers=world["headers"]).json()["data"]
    bases = [m for m in data if m["job"] is None]
    tuned = {m["id"]: m for m in data if m["job"] is not None}
    assert "cfg-llama" in {m["id"] for m in bases} and data[:len(bases)] == bases
    assert set(tuned) == {world["gen_model"], world["cls_model"]}
    gen = tuned[world["gen_model"]]
    assert gen["job"] == world["gen"] and gen["base"] == "cfg-llama" and gen["object"] == "model"
    assert gen["architecture"] == "LlamaForCausalLM" and isinstance(gen["created"], int) and gen["owned_by"] != "sparsetune"
    others = client.get("/v1/models", headers=world["other"]).json()["data"]
    assert all(m["job"] is None for m in others)
    # the estimate stays for base models only
    assert client.get(f"/v1/models/{world['gen_model']}/estimate", headers=world["headers"]).status_code == 404
    assert client.get("/v1/models/cfg-llama/estimate", headers=world["headers"]).status_code == 200


# ---- refusals ---------------------------------------------------------------------------------------------

def test_unknown_other_owners_and_unfinished_models(client, world, serving):
    h = world["headers"]
    for model in ("no-such-model", "ft:cfg-llama:smt:job_doesnotexist", f"ft:other-base:mybot:{world['gen']}"):
        r = client.post("/v1/chat/completions", headers=h, json=chat_body(model))
        assert r.status_code == 404 and r.json()["error"]["param"] == "model", r.text
    r = client.post("/v1/chat/completions", headers=world["other"], json=chat_body(world["gen_model"]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.post("/v1/completions", headers=h, json={"model": f"ft:cfg-llama:smt:{world['queued']}", "prompt": "x"})
    assert r.status_code == 409 and "queued" in r.json()["error"]["message"], r.text
    r = client.post(f"/v1/jobs/{world['cls']}/predict", headers=world["other"], json={"texts": ["a"]})
    assert r.status_code == 404
    r = client.post(f"/v1/jobs/{world['queued']}/predict", headers=h, json={"texts": ["a"]})
    assert r.status_code == 409
    assert serving.requests == []  # none of these reached an inference process


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"), ({"temperature": 2.5}, "temperature"), ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_completion_tokens": 10**6}, "max_completion_tokens"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
    ({"stream_options": {"include_usage": True}}, "stream_options"), ({"logit_bias": {}}, "logit_bias"),
    ({"messages": []}, "messages"), ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"), ({"seed": 2**64}, "seed"),
])
def test_bad_chat_parameters_are_422_naming_the_field(client, world, serving, extra, param):
    body = json.dumps(chat_body(world["gen_model"], **extra))  # ASCII JSON: a lone surrogate as its \u escape
    r = client.post("/v1/chat/completions", headers={**world["headers"], "Content-Type": "application/json"},
                    content=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] is not None and r.json()["error"]["param"].startswith(param), r.json()


def test_bad_completion_prompts_are_422(client, world, serving):
    for prompt in (["a", "b"], [], [1, 2, 3], None):
        r = client.post("/v1/completions", headers=world["headers"], json={"model": world["gen_model"], "prompt": prompt})
        assert r.status_code == 422 and r.json()["error"]["param"].startswith("prompt"), r.text
    r = client.post(f"/v1/jobs/{world['cls']}/predict", headers=world["headers"], json={"texts": []})
    assert r.status_code == 422 and r.json()["error"]["param"] == "texts"


def test_chat_on_a_classifier_says_use_predict_and_predict_on_a_generator_is_422(client, world, serving):
    r = client.post("/v1/chat/completions", headers=world["headers"], json=chat_body(world["cls_model"]))
    assert r.status_code == 422 and f"/v1/jobs/{world['cls']}/predict" in r.json()["error"]["message"], r.text
    r = client.post("/v1/completions", headers=world["headers"], json={"model": "minilm-l6", "prompt": "x"})
    assert r.status_code == 422 and "predict" in r.json()["error"]["message"], r.text
    r = client.post(f"/v1/jobs/{world['gen']}/predict", headers=world["headers"], json={"texts": ["a"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "job_id" and "chat" in r.json()["error"]["message"]
    assert serving.requests == []


def test_no_live_inference_process_is_503_with_retry_after(client, world, workers, standin):
    cases = [("/v1/chat/completions", chat_body(world["gen_model"])),
             ("/v1/chat/completions", chat_body(world["gen_model"], stream=True)),
             ("/v1/completions", {"model": "cfg-llama", "prompt": "x"}),
             (f"/v1/jobs/{world['cls']}/predict", {"texts": ["a"]})]
    workers.add(standin.url, ["cfg-llama"], age=3600)  # silent for an hour: not live
    workers.add(standin.url, ["cfg-llama"], status="stopped")
    workers.add(standin.url, ["cfg-llama"], kind="trainer")
    for path, body in cases:
        r = client.post(path, headers=world["headers"], json=body)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0, r.text
        assert "no inference process" in r.json()["error"]["message"]
    workers.add(f"http://127.0.0.1:{_closed_port()}", ["cfg-llama"])  # live by its heartbeat, but gone
    r = client.post("/v1/chat/completions", headers=world["headers"], json=chat_body(world["gen_model"]))
    assert r.status_code == 503 and r.headers["Retry-After"] and "could be reached" in r.json()["error"]["message"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_inference_processes_refusals_come_back_with_their_status(client, world, workers, standin):
    set_models({"cfg-llama": _cfg_llama(), "missing-base": "org/missing", "needs-predict": "org/encoder",
                "broken-base": "org/broken"})  # hub ids: no local config, so only the process can tell
    try:
        workers.add(standin.url)
        for model, status in (("missing-base", 404), ("needs-predict", 422), ("broken-base", 502)):
            for stream in (False, True):
                r = client.post("/v1/chat/completions", headers=world["headers"], json=chat_body(model, stream=stream))
                assert r.status_code == status, r.text
        r = client.post("/v1/completions", headers=world["headers"], json={"model": "needs-predict", "prompt": "x"})
        assert r.json()["error"] == {"code": "invalid_request", "message": "chat on an encoder: use /predict",
                                     "param": "model"}
    finally:
        set_models({"cfg-llama": _cfg_llama()})


def _cfg_llama() -> str:
    import os

    return json.loads(os.environ["SPARSETUNE_MODELS"])["cfg-llama"]


# ---- routing ----------------------------------------------------------------------------------------------

def test_routing_prefers_a_holder_of_the_base_then_the_least_loaded(service_env, workers):
    from service.db import session_scope
    from service.inference_routing import live_endpoints

    busy_holder = workers.add("http://10.0.0.1:1", ["cfg-llama"], load=5)
    idle_holder = workers.add("http://10.0.0.2:1", ["cfg-llama", "other"], load=1)
    idle_other = workers.add("http://10.0.0.3:1", ["other"], load=0)
    workers.add("http://10.0.0.4:1", [], load=2)
    workers.add("http://10.0.0.5:1", ["cfg-llama"], age=3600)
    with session_scope() as s:
        order = [e.id for e in live_endpoints(s, "cfg-llama")]
        assert order[:3] == [idle_holder, busy_holder, idle_other] and len(order) == 4
        assert [e.id for e in live_endpoints(s, "unheld")][0] == idle_other


def test_a_dead_process_is_skipped_for_the_next(client, world, workers, standin):
    workers.add(f"http://127.0.0.1:{_closed_port()}", ["cfg-llama"], load=0)  # preferred, but gone
    workers.add(standin.url, [], load=3)
    r = client.post("/v1/chat/completions", headers=world["headers"], json=chat_body(world["gen_model"]))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == TEXT


# ---- OpenAI's shapes --------------------------------------------------------------------------------------

def test_chat_completion_is_forwarded_and_validates_strictly(client, world, serving):
    body = chat_body(world["gen_model"], messages=[{"role": "developer", "content": "be brief"},
                                                   {"role": "user", "content": [{"type": "text", "text": "h"},
                                                                                {"type": "text", "text": "i"}]}],
                     temperature=0, top_p=0.5, stop="\n", seed=7, user="u1", n=1, max_completion_tokens=50)
    r = client.post("/v1/chat/completions", headers=world["headers"], json=body)
    assert r.status_code == 200, r.text
    out = ChatCompletion.model_validate(r.json(), strict=True)
    assert out.id.startswith("chatcmpl-") and out.object == "chat.completion" and out.model == world["gen_model"]
    assert out.choices[0].message.content == TEXT and out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens == len(PIECES) and out.usage.total_tokens == 5 + len(PIECES)
    path, sent = serving.requests[-1]
    assert path == "/internal/generate" and sent["stream"] is False and sent["prompt"] is None
    assert sent["target"] == {"base": "cfg-llama", "job_id": world["gen"]}
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert sent["sampling"] == {"max_tokens": 50, "temperature": 0, "top_p": 0.5, "stop": ["\n"], "seed": 7}


def test_completion_on_a_base_alias_and_the_length_finish(client, world, serving):
    r = client.post("/v1/completions", headers=world["headers"], json={"model": "cfg-llama", "prompt": ["Once"],
                                                                       "max_tokens": 2})
    assert r.status_code == 200, r.text
    out = Completion.model_validate(r.json(), strict=True)
    assert out.id.startswith("cmpl-") and out.object == "text_completion" and out.model == "cfg-llama"
    assert out.choices[0].text == "Hello," and out.choices[0].finish_reason == "length"
    sent = serving.requests[-1][1]
    assert sent["target"] == {"base": "cfg-llama", "job_id": None} and sent["prompt"] == "Once"
    client.post("/v1/completions", headers=world["headers"], json={"model": "cfg-llama", "prompt": "x"})
    assert serving.requests[-1][1]["sampling"]["max_tokens"] == 16  # OpenAI's default for completions


def test_chat_stream_chunks_with_usage_end_with_done(client, world, serving):
    body = chat_body(world["gen_model"], stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", headers=world["headers"], json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(e), strict=True) for e in events[:-1]]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == world["gen_model"] for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    *pieces, last_choice, usage = chunks
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in pieces)
    assert last_choice.choices[0].finish_reason == "stop" and last_choice.usage is None
    assert usage.choices == [] and usage.usage.completion_tokens == len(PIECES)
    assert serving.requests[-1][1]["stream"] is True


def test_completion_stream_without_usage(client, world, serving):
    body = {"model": world["gen_model"], "prompt": "x", "stream": True, "max_tokens": 3}
    with client.stream("POST", "/v1/completions", headers=world["headers"], json=body) as r:
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    for c in chunks:  # the SDK types finish_reason as never null; OpenAI's streams send null until the last
        assert_completion_chunk(c)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello, world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def assert_completion_chunk(chunk: dict) -> None:
    """Strict against the SDK's Completion; a non-final chunk's null finish_reason (as OpenAI streams it) is the
    one field the SDK's type cannot hold, so it is checked to be null and the rest validated strictly."""
    if chunk["choices"] and chunk["choices"][0]["finish_reason"] is None:
        chunk = {**chunk, "choices": [{**chunk["choices"][0], "finish_reason": "stop"}]}
    Completion.model_validate(chunk, strict=True)


def test_predict_returns_a_list_of_label_probabilities(client, world, serving):
    r = client.post(f"/v1/jobs/{world['cls']}/predict", headers=world["headers"], json={"texts": ["good", "bad"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "list" and [p["label"] for p in out["data"]] == ["pos", "neg"]
    assert out["data"][0]["probabilities"] == {"pos": 0.9, "neg": 0.1}
    assert serving.requests[-1] == ("/internal/predict", {"target": {"base": "cfg-llama", "job_id": world["cls"]},
                                                          "texts": ["good", "bad"]})


# ---- the official client, and clients that go away (a real API server) -------------------------------------

@pytest.fixture(scope="module")
def live_api(service_env) -> Iterator[str]:
    """The API served by uvicorn on a real port (the openai client, and disconnects, need a real server)."""
    import uvicorn

    from api.main import create_app

    port = _closed_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_openai_client_chat_and_completions_streamed_and_not(live_api, world, serving):
    client = openai.OpenAI(base_url=f"{live_api}/v1", api_key=world["key"], max_retries=0)
    chat = client.chat.completions.create(model=world["gen_model"], messages=[{"role": "user", "content": "hi"}],
                                          temperature=0, seed=1, max_tokens=20, user="someone")
    chat = ChatCompletion.model_validate(chat.to_dict(), strict=True)
    assert chat.choices[0].message.content == TEXT and chat.usage.total_tokens == 5 + len(PIECES)

    stream = client.chat.completions.create(model=world["gen_model"], messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = [ChatCompletionChunk.model_validate(c.to_dict(), strict=True) for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(PIECES)

    done = client.completions.create(model=world["gen_model"], prompt="x", max_tokens=20)
    done = Completion.model_validate(done.to_dict(), strict=True)
    assert done.choices[0].text == TEXT and done.choices[0].finish_reason == "stop"

    streamed = list(client.completions.create(model="cfg-llama", prompt="x", max_tokens=20, stream=True))
    for c in streamed:
        assert_completion_chunk(c.to_dict())
    assert "".join(c.choices[0].text for c in streamed) == TEXT and streamed[-1].choices[0].finish_reason == "stop"

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=world["gen_model"], messages=[{"role": "user", "content": "hi"}], n=2)


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_cancels_the_upstream_answer(live_api, world, serving, stream):
    serving.cut.clear()
    body = chat_body(world["gen_model"], messages=[{"role": "user", "content": "slow"}], stream=stream)
    with httpx.Client(base_url=live_api, headers=world["headers"], timeout=httpx.Timeout(5.0, read=0.5)) as c:
        if stream:
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
                next(line for line in lines if line.startswith("data: "))  # a piece arrived: it is streaming
        else:
            with pytest.raises(httpx.ReadTimeout):  # the answer would take a minute: give up after half a second
                c.post("/v1/chat/completions", json=body)
    assert serving.cut.wait(10), "the inference process kept answering a client that had gone"
