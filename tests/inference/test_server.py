"""The inference process's internal HTTP app on a real engine and tiny random models, with adapters trained
here and stored as a job's artifact in the real (Postgres) database: the token guards every route, whole and
streamed answers agree, a job's adapter is served, refusals carry the API's status and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.engine import Engine
from inference.requests import Sampling, Target
from inference.server import create_app
from service.states import JobStatus
from tests.api.fixtures import config_only_model, environment, service_env  # noqa: F401 - fixtures
from tests.inference.service_rows import add_job, train_adapter

TOKEN = "internal-test-token-0123456789"
PROMPT = "the red fruit is"
GREEDY = {"max_tokens": 6, "temperature": 0}
SEEDED = {"max_tokens": 8, "temperature": 0.9, "top_p": 0.95, "seed": 7}


@pytest.fixture(scope="module")
def models(service_env, tiny_llama_dir, tiny_bert_dir):  # noqa: F811
    allowed = {**json.loads(service_env["SPARSETUNE_MODELS"]), "tiny-llama": str(tiny_llama_dir),
               "tiny-bert": str(tiny_bert_dir)}
    with environment({"SPARSETUNE_MODELS": json.dumps(allowed)}):
        yield allowed


@pytest.fixture(scope="module")
def engine(models):
    eng = Engine()
    eng.start()
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def http(engine):
    with TestClient(create_app(engine, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture(scope="module")
def smt_job(models, tiny_llama_dir, tmp_path_factory) -> tuple[str, Path]:
    out = train_adapter(tiny_llama_dir, tmp_path_factory.mktemp("srv-smt"))
    return add_job("tiny-llama", (out / "adapter.safetensors").read_bytes()), out


def _generate(http: TestClient, target: dict, sampling: dict = GREEDY, **inputs) -> dict:
    r = http.post("/internal/generate", json={"target": target, "sampling": sampling, **({"prompt": PROMPT} | inputs)})
    assert r.status_code == 200, r.text
    return r.json()


def _stream(http: TestClient, target: dict, sampling: dict = GREEDY) -> list[dict]:
    with http.stream("POST", "/internal/generate", json={"target": target, "prompt": PROMPT, "sampling": sampling,
                                                         "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in r.iter_lines() if line]


def test_every_route_needs_the_token(engine):
    bare = TestClient(create_app(engine, TOKEN))
    for method, path in (("GET", "/internal/health"), ("POST", "/internal/generate"), ("POST", "/internal/predict"),
                         ("GET", "/internal/nope"), ("GET", "/docs")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"bearer {TOKEN}"}):
            r = bare.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"] == {"status": 401, "code": "unauthorized", "param": "Authorization",
                                         "message": "missing or wrong inference token"}
    r = bare.get("/internal/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and set(r.json()) == {"models", "load"} and r.json()["load"] == 0


def test_whole_and_streamed_answers_agree_and_the_model_stays_loaded(http, tiny_llama_dir):
    target = {"base": "tiny-llama", "job_id": None}
    whole = _generate(http, target, SEEDED)
    assert whole["finish_reason"] in ("stop", "length") and whole["text"]
    usage = whole["usage"]
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= SEEDED["max_tokens"]
    assert _generate(http, target, SEEDED) == whole  # the seed fixes the sample
    lines = _stream(http, target, SEEDED)
    assert len(lines) > 2 and all(set(line) == {"text"} and line["text"] for line in lines[:-1])
    assert "".join(line["text"] for line in lines[:-1]) == whole["text"]
    assert lines[-1] == {"finish_reason": whole["finish_reason"], "usage": usage}

    greedy = _generate(http, target)  # the random model may well end at once: an empty text, still an answer
    assert "".join(line.get("text", "") for line in _stream(http, target)) == greedy["text"]
    assert http.get("/internal/health").json() == {"models": [str(tiny_llama_dir)], "load": 0}


def test_a_jobs_adapter_is_served_as_the_engine_serves_its_folder(http, engine, smt_job, tiny_llama_dir):
    job_id, out = smt_job
    served = _generate(http, {"base": "tiny-llama", "job_id": job_id}, SEEDED)
    direct = engine.generate(Target(str(tiny_llama_dir), "job_direct", out), Sampling(**SEEDED), prompt=PROMPT)
    assert served["text"] == direct.text() and served["usage"]["completion_tokens"] > 0
    by_job_only = _generate(http, {"job_id": job_id}, SEEDED)  # the base is the job's own
    assert by_job_only == served
    chat = _generate(http, {"job_id": job_id}, messages=[{"role": "user", "content": "hi"}], prompt=None)
    assert chat["usage"]["prompt_tokens"] > 0


def _error(r) -> tuple[int, str | None]:
    body = r.json()["error"]
    assert set(body) == {"status", "code", "message", "param"} and body["status"] == r.status_code
    return r.status_code, body["param"]


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"target": {"base": "no-such-model"}, "prompt": "x"}, 404, "target.base"),
    ({"target": {"job_id": "job_000000000000000000000000"}, "prompt": "x"}, 404, "target.job_id"),
    ({"target": {"base": "tiny-llama"}, "prompt": "x", "messages": [{"role": "user", "content": "x"}]}, 422,
     "prompt"),
    ({"target": {"base": "tiny-llama"}}, 422, "prompt"),
    ({"target": {"base": "tiny-llama"}, "prompt": "x", "sampling": {"temperature": 5}}, 422, "sampling.temperature"),
    ({"target": {"base": "tiny-llama"}, "prompt": "x", "sampling": {"max_tokens": 0}}, 422, "sampling.max_tokens"),
    ({"target": {"base": "tiny-llama"}, "prompt": "x", "stream": True, "n": 2}, 422, "n"),
    ({"target": {"base": "tiny-bert"}, "prompt": "x", "stream": True}, 422, "model"),  # an encoder: predict only
])
def test_refusals_carry_the_status_and_the_field(http, body, status, param):
    assert _error(http.post("/internal/generate", json=body)) == (status, param)


def test_a_job_not_finished_is_a_conflict(http, models):
    job_id = add_job("tiny-llama", b"x", status=JobStatus.running)
    r = http.post("/internal/generate", json={"target": {"job_id": job_id}, "prompt": "x"})
    assert _error(r) == (409, "target.job_id") and r.json()["error"]["code"] == "job_not_finished"


def test_a_classification_job_predicts_and_a_causal_one_does_not(http, smt_job, tiny_bert_dir, tmp_path_factory):
    out = train_adapter(tiny_bert_dir, tmp_path_factory.mktemp("srv-cls"), data="classification")
    job_id = add_job("tiny-bert", (out / "adapter.safetensors").read_bytes())
    r = http.post("/internal/predict", json={"target": {"job_id": job_id}, "texts": ["a great movie", "awful"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 2
    for row in data:
        assert row["label"] in row["probabilities"] and abs(sum(row["probabilities"].values()) - 1) < 1e-4
    causal = http.post("/internal/predict", json={"target": {"job_id": smt_job[0]}, "texts": ["x"]})
    assert _error(causal) == (422, "model")
    assert _error(http.post("/internal/predict", json={"target": {"job_id": job_id}, "texts": []})) == (422, "texts")
    chat = http.post("/internal/generate", json={"target": {"job_id": job_id}, "prompt": "x"})
    assert _error(chat) == (422, "model")


class Recording:
    """The engine, keeping each Generation it hands out (to see how a dropped client's generation ended)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.gens = engine, []

    def generate(self, *args, **kwargs):
        gen = self.engine.generate(*args, **kwargs)
        self.gens.append(gen)
        return gen

    def __getattr__(self, name: str):
        return getattr(self.engine, name)


@pytest.fixture(scope="module")
def live(engine):
    """The app served by uvicorn in a thread (a real socket: a client can really go away)."""
    import threading

    import uvicorn

    from tests.helpers import free_port, wait_for

    recording, port = Recording(engine), free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(recording, TOKEN), host="127.0.0.1", port=port,
                                          log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, 0.05, "uvicorn to start")
    yield f"http://127.0.0.1:{port}", recording
    server.should_exit = True
    thread.join(10)


LONG = {"max_tokens": 480, "temperature": 1.0, "seed": 3}  # far longer than the test waits


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_cancels_its_generation(live, stream):
    import httpx

    from tests.helpers import wait_for

    url, recording = live
    body = {"target": {"base": "tiny-llama"}, "prompt": PROMPT, "sampling": LONG, "stream": stream}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    before = len(recording.gens)
    if stream:
        with httpx.Client(base_url=url, headers=headers) as client, \
                client.stream("POST", "/internal/generate", json=body) as r:
            assert r.status_code == 200
            assert "text" in json.loads(next(r.iter_lines()))
        # leaving the blocks closed the connection mid-stream
    else:
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=url, headers=headers, timeout=1.0) as client:
            client.post("/internal/generate", json=body)
    (gen,) = recording.gens[before:]
    wait_for(lambda: gen.finish_reason is not None, 30, 0.05, "the generation to end")
    assert gen.finish_reason == "cancelled" and gen.completion_tokens < LONG["max_tokens"]
    wait_for(lambda: recording.load() == 0, 10, 0.05, "the engine to drop the request")
