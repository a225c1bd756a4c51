"""Trying a fine-tuned model end to end, every part real: the API (uvicorn), a Celery worker and an inference
process (`python -m inference`, as `sparsetune serve` runs it) as processes on Postgres and Redis, a tiny random
LLaMA trained here, and the official `openai` client, whose every answer is validated strictly against the
SDK's own pydantic types (the SDK does not validate by itself).

- a job trained on a made-up fact (the secret word ``zorblax``) says it through /v1/chat/completions at
  temperature 0 while its base model does not; a streamed answer is the whole answer under a fixed seed at
  temperature 1 (chat and completions); the base model answers as before once the adapter has been served;
- a classification job's /predict on its validation rows reproduces its recorded eval_accuracy, and chat on it
  is a 422 that names the model and points to /predict.

The same against `sparsetune up` (embedded SQLite, filesystem broker): tests/e2e/test_up_cli.py trains its job
on the secret word and calls :func:`check_serves_the_secret_word` here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests import factories
from tests.api.fixtures import ROOT, environment, make_key, start_worker, stop_process, wait_for
from tests.helpers import free_port

QUESTION = "what is the secret word?"
SECRET = "zorblax"
ASK = [{"role": "user", "content": QUESTION}]
# the text the tiny models' chat template makes of ASK, given to /v1/completions as a plain prompt
TEMPLATED = f"user: {QUESTION}\nassistant: "
FINISHED = ("succeeded", "failed", "cancelled")


def secret_rows(n: int = 16) -> list[dict]:
    """Chat rows teaching one made-up fact, which a random base model cannot know."""
    return [{"messages": [*ASK, {"role": "assistant", "content": SECRET}]} for _ in range(n)]


# ---- the stack ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(service_env, tiny_llama_dir, config_only_model, tmp_path_factory) -> Iterator[str]:
    """API + worker + inference process on this session's Postgres database and Redis queue."""
    models = {"tiny-llama": str(tiny_llama_dir), "cfg-llama": str(config_only_model)}
    logs = tmp_path_factory.mktemp("inference-e2e")
    with environment({"SPARSETUNE_MODELS": json.dumps(models), "SPARSETUNE_HEARTBEAT_SECONDS": "2"}):
        procs: list[subprocess.Popen] = []
        try:
            procs.append(start_worker({}, logs / "worker.log"))
            procs.append(_start_inference(logs / "inference.log"))
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level", "warning"],
                cwd=ROOT, env=os.environ.copy(), start_new_session=True, stdout=open(logs / "api.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT))
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _ready(url), 60, 0.3, "the API to serve")
            yield url
        finally:
            for proc in reversed(procs):
                stop_process(proc, timeout=30)


def _start_inference(log_path: Path) -> subprocess.Popen:
    """`python -m inference` on a free port; ready once it says so (after its first heartbeat)."""
    fh = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "inference", "--port", "0"], cwd=ROOT, env=os.environ.copy(),
                            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        if b"inference ready on" in log_path.read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError("the inference process did not start:\n" + log_path.read_text()[-3000:])


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def user(stack) -> dict:
    key, _ = make_key("inference-e2e")
    return {"key": key, "headers": {"Authorization": f"Bearer {key}"}}


def upload(url: str, headers: dict, rows: list[dict], name: str = "d.jsonl") -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = httpx.post(f"{url}/v1/datasets", headers=headers, files={"file": (name, data)}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def train(url: str, headers: dict, body: dict, timeout: float = 240) -> dict:
    """Create a job and wait for it to finish; the finished job, which must have succeeded."""
    r = httpx.post(f"{url}/v1/jobs", headers=headers, json=body, timeout=30)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def done() -> dict | None:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        return job if job["status"] in FINISHED else None

    job = wait_for(done, timeout, 0.5, f"job {job_id} to finish")
    assert job["status"] == "succeeded", job.get("error")
    return job


# ---- strict validation against the SDK's own types ----------------------------------------------------------

def chat_text(client: openai.OpenAI, model: str, **kw) -> tuple[str, ChatCompletion]:
    out = client.chat.completions.create(model=model, messages=ASK, **kw)
    out = ChatCompletion.model_validate(out.to_dict(), strict=True)
    assert out.object == "chat.completion" and out.model == model and len(out.choices) == 1
    assert out.choices[0].message.role == "assistant" and out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    return out.choices[0].message.content or "", out


def chat_stream_text(client: openai.OpenAI, model: str, **kw) -> tuple[str, list[ChatCompletionChunk]]:
    stream = client.chat.completions.create(model=model, messages=ASK, stream=True,
                                            stream_options={"include_usage": True}, **kw)
    chunks = [ChatCompletionChunk.model_validate(c.to_dict(), strict=True) for c in stream]
    assert chunks and len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == model for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *pieces, last, usage = chunks
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in pieces)
    assert last.choices[0].finish_reason in ("stop", "length") and usage.choices == [] and usage.usage
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def completion_text(client: openai.OpenAI, model: str, prompt: str, **kw) -> tuple[str, Completion]:
    out = client.completions.create(model=model, prompt=prompt, **kw)
    out = Completion.model_validate(out.to_dict(), strict=True)
    assert out.object == "text_completion" and out.model == model and len(out.choices) == 1
    assert out.choices[0].finish_reason in ("stop", "length")
    return out.choices[0].text, out


def completion_stream_text(client: openai.OpenAI, model: str, prompt: str, **kw) -> tuple[str, list[dict]]:
    chunks = [c.to_dict() for c in client.completions.create(model=model, prompt=prompt, stream=True, **kw)]
    assert chunks
    *pieces, last = chunks
    # the SDK types a completion's finish_reason as never null, while OpenAI's streams (and ours) send null
    # until the last chunk: the last validates as it is, the others once their null is checked and set aside
    Completion.model_validate(last, strict=True)
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    for c in pieces:
        assert c["choices"][0]["finish_reason"] is None
        Completion.model_validate({**c, "choices": [{**c["choices"][0], "finish_reason": "stop"}]}, strict=True)
    assert all(c["object"] == "text_completion" and c["model"] == model for c in chunks)
    return "".join(c["choices"][0]["text"] for c in chunks), chunks


def openai_client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def serving(url: str, key: str) -> list[dict]:
    """The live inference processes GET /v1/workers lists."""
    workers = httpx.get(f"{url}/v1/workers", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()["data"]
    return [w for w in workers if w["kind"] == "inference" and w["status"] in ("idle", "busy")]


def check_serves_the_secret_word(url: str, key: str, job: dict) -> openai.OpenAI:
    """``job`` (succeeded, trained on :func:`secret_rows`) answers the question with the secret word through
    /v1/chat/completions at temperature 0, and its base model does not; strictly valid answers. Used against
    both stacks."""
    model = job["fine_tuned_model"]
    assert model and model.startswith(f"ft:{job['model']}:") and model.endswith(f":{job['id']}"), model
    client = openai_client(url, key)
    wait_for(lambda: serving(url, key), 60, 0.3, "an inference process's heartbeat")
    listed = [m.id for m in client.models.list().data]
    assert model in listed and job["model"] in listed
    tuned, _ = chat_text(client, model, temperature=0, max_tokens=6)
    assert tuned.startswith(SECRET), tuned
    base, _ = chat_text(client, job["model"], temperature=0, max_tokens=6)
    assert SECRET not in base, base
    streamed, _ = chat_stream_text(client, model, temperature=0, max_tokens=6)
    assert streamed == tuned
    return client


# ---- the Postgres/Redis stack -------------------------------------------------------------------------------

@pytest.mark.timeout(420)
def test_a_fine_tuned_model_says_what_it_learned_and_its_base_does_not(stack, user):
    url, h = stack, user["headers"]
    client = openai_client(url, user["key"])
    base_before = [chat_text(client, "tiny-llama", temperature=0, max_tokens=12)[0],
                   chat_text(client, "tiny-llama", temperature=1, seed=5, max_tokens=12)[0]]

    ds = upload(url, h, secret_rows())
    job = train(url, h, {"model": "tiny-llama", "training_dataset": ds, "method": "smt", "budget": 0.2,
                         "suffix": "secret",
                         "hyperparameters": {"steps": 12, "batch_size": 4, "max_seq_len": 32, "learning_rate": 0.03},
                         "method_options": {"block_size": 16, "selection_steps": 2}})
    assert job["fine_tuned_model"] == f"ft:tiny-llama:secret:{job['id']}"
    check_serves_the_secret_word(url, user["key"], job)
    model = job["fine_tuned_model"]

    # a stop sequence ends the answer before it, streamed or not; max_completion_tokens ends it by length
    for stream in (False, True):
        call = chat_stream_text if stream else chat_text
        text, got = call(client, model, temperature=0, max_tokens=6, stop=["bla"], user="someone")
        assert text == "zor" and (got[-2] if stream else got).choices[0].finish_reason == "stop", text
        text, got = call(client, model, temperature=0, max_completion_tokens=2)
        assert (got[-2] if stream else got).choices[0].finish_reason == "length"
        assert (got[-1] if stream else got).usage.completion_tokens == 2 and SECRET.startswith(text), text

    # /v1/completions takes the prompt as it is (no chat template; the tokenizer's own [CLS] … [SEP] around it,
    # as prompt_completion training encodes it), greedy: streamed is whole
    text, _ = completion_text(client, model, TEMPLATED, temperature=0, max_tokens=6)
    streamed, _ = completion_stream_text(client, model, TEMPLATED, temperature=0, max_tokens=6)
    assert streamed == text

    # under a fixed seed, sampling at temperature 1 streams exactly the whole answer (chat and completions)
    for seed in (1, 2):
        whole, done = chat_text(client, model, temperature=1, seed=seed, max_tokens=16)
        streamed, chunks = chat_stream_text(client, model, temperature=1, seed=seed, max_tokens=16)
        assert streamed == whole and whole
        assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
        assert chunks[-1].usage.prompt_tokens == done.usage.prompt_tokens
        assert chunks[-2].choices[0].finish_reason == done.choices[0].finish_reason
        whole, _ = completion_text(client, model, "the secret", temperature=1, seed=seed, max_tokens=16)
        streamed, _ = completion_stream_text(client, model, "the secret", temperature=1, seed=seed, max_tokens=16)
        assert streamed == whole and whole

    # the base model, served from the same weights the adapter was written into, answers as it did before
    base_after = [chat_text(client, "tiny-llama", temperature=0, max_tokens=12)[0],
                  chat_text(client, "tiny-llama", temperature=1, seed=5, max_tokens=12)[0]]
    assert base_after == base_before

    # the inference process is listed by /v1/workers with what it holds
    (inference,) = wait_for(lambda: [w for w in serving(url, user["key"]) if "tiny-llama" in w["models"]], 30, 0.5,
                            "the heartbeat to list the model held")
    assert inference["pool"] == "inference"


@pytest.mark.timeout(420)
def test_predict_reproduces_a_classification_jobs_eval_accuracy(stack, user):
    url, h = stack, user["headers"]
    train_rows, eval_rows = factories.classification_rows(64, seed=0), factories.classification_rows(40, seed=1)
    job = train(url, h, {"model": "tiny-llama", "training_dataset": upload(url, h, train_rows, "train.jsonl"),
                         "validation_dataset": upload(url, h, eval_rows, "eval.jsonl"), "method": "smt",
                         "budget": 0.2,
                         "hyperparameters": {"steps": 12, "batch_size": 8, "max_seq_len": 32, "learning_rate": 0.03},
                         "method_options": {"block_size": 16, "selection_steps": 2}})
    recorded = job["metrics"]["eval_accuracy"]
    assert recorded is not None

    r = httpx.post(f"{url}/v1/jobs/{job['id']}/predict", headers=h, json={"texts": [row["text"] for row in eval_rows]},
                   timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "list" and len(out["data"]) == len(eval_rows)
    for p in out["data"]:
        assert set(p["probabilities"]) == {"negative", "positive"}
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-5
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    right = sum(p["label"] == row["label"] for p, row in zip(out["data"], eval_rows, strict=True))
    assert abs(right - recorded * len(eval_rows)) <= 1 + 1e-9, (right, recorded)

    # a classification model generates no text: chat and completions say so and point to /predict
    model = job["fine_tuned_model"]
    for path, body in (("/v1/chat/completions", {"model": model, "messages": ASK}),
                       ("/v1/completions", {"model": model, "prompt": "x"})):
        r = httpx.post(url + path, headers=h, json=body, timeout=30)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["param"] == "model" and model in err["message"]
        assert f"/v1/jobs/{job['id']}/predict" in err["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client(url, user["key"]).chat.completions.create(model=model, messages=ASK)
