"""Hostile input: broken uploads, hostile JSON bodies, artifact names that try to leave the fixed set, and
model ids outside the allowlist. Each is a 4xx naming the field or line and writes nothing.

Pickled weights and trust_remote_code are the engine's: tests/core/test_models.py
(test_bin_only_folder_is_refused, test_loaders_never_trust_remote_code) checks them where they are loaded.
"""

from __future__ import annotations

import json

import pytest

from tests.api.fixtures import count_rows

PC_LINE = b'{"prompt": "p", "completion": "c"}\n'
TABLES = ("datasets", "blobs", "blob_chunks")


def upload(client, auth, data: bytes):
    return client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", data, "application/jsonl")})


@pytest.mark.parametrize("data, line, words", [
    (PC_LINE + b'{"prompt": "caf\xe9", "completion": "c"}\n', 2, "not valid UTF-8"),
    (b"\xff\xfe" + '{"prompt": "p", "completion": "c"}\n'.encode("utf-16-le"), 1, "not valid UTF-8"),
    (b"\xef\xbb\xbf" + PC_LINE, 1, "byte order mark"),
    (PC_LINE + b'{"prompt": ' + b"[" * 30_000 + b"]" * 30_000 + b', "completion": "c"}\n', 2, "nested too deeply"),
    (PC_LINE + b'{"text": "t", "label": NaN}\n', 2, "NaN is not a JSON number"),
    (PC_LINE + b'{"prompt": "p", "completion": "c", "x": -Infinity}\n', 2, "-Infinity is not a JSON number"),
    (b'{"text": "t", "label": 1e999}\n', 1, "out of range"),
    (b'{"text": "t", "label": ' + b"9" * 5000 + b"}\n", 1, "not valid JSON"),
    (PC_LINE * 2 + b'{"prompt": "' + b"x" * 70_000 + b'", "completion": "c"}\n', 3, "over the 65536-byte limit"),
])
def test_create_dataset_hostile_file_is_422_naming_the_line_and_writes_nothing(client, auth, monkeypatch,
                                                                                data, line, words):
    from service.settings import get_settings

    monkeypatch.setenv("SPARSETUNE_MAX_LINE_BYTES", "65536")
    get_settings.cache_clear()
    before = [count_rows(t) for t in TABLES]
    try:
        r = upload(client, auth, data)
    finally:
        monkeypatch.delenv("SPARSETUNE_MAX_LINE_BYTES")
        get_settings.cache_clear()
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["param"] == "file"
    assert err["message"].startswith(f"file: line {line}:") and words in err["message"], err["message"]
    assert err["details"][0]["line"] == line
    assert [count_rows(t) for t in TABLES] == before, "nothing half-written"


@pytest.mark.parametrize("data", [b"", b"\n\n\n", b"  \r\n\t\r\n \n"], ids=["empty", "blank-lines", "whitespace"])
def test_create_dataset_without_rows_is_422(client, auth, data):
    before = [count_rows(t) for t in TABLES]
    r = upload(client, auth, data)
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "invalid_request", "message": "file: no rows", "param": "file"}
    assert [count_rows(t) for t in TABLES] == before


def test_create_dataset_just_over_the_size_limit_is_413_and_writes_nothing(client, auth):
    """Under the middleware's multipart slack, so the route's own bounded read refuses it."""
    limit = 256 * 1024  # the tests' SPARSETUNE_MAX_UPLOAD_BYTES
    data = PC_LINE * (limit // len(PC_LINE) + 1)
    assert limit < len(data) < limit + 1024
    before = [count_rows(t) for t in TABLES]
    r = upload(client, auth, data)
    assert r.status_code == 413 and r.json()["error"]["param"] == "file", r.text
    assert [count_rows(t) for t in TABLES] == before
    assert upload(client, auth, data[:limit - limit % len(PC_LINE)]).status_code == 201, "at the limit it fits"


def test_create_dataset_at_the_line_limit_is_accepted(client, auth, monkeypatch):
    from service.settings import get_settings

    line = b'{"prompt": "' + b"x" * (1000 - 33) + b'", "completion": "c"}'
    assert len(line) == 1000
    monkeypatch.setenv("SPARSETUNE_MAX_LINE_BYTES", "1000")
    get_settings.cache_clear()
    try:
        assert upload(client, auth, line + b"\n").status_code == 201
        assert upload(client, auth, line[:-1] + b' }\n').status_code == 422
    finally:
        monkeypatch.delenv("SPARSETUNE_MAX_LINE_BYTES")
        get_settings.cache_clear()


def job_body(dataset: str, **over) -> dict:
    return {"model": "cfg-llama", "training_dataset": dataset, "method": "smt", "budget": 0.05,
            "hyperparameters": {"steps": 2}, **over}


@pytest.fixture()
def dataset(client, auth) -> str:
    return upload(client, auth, PC_LINE).json()["id"]


@pytest.mark.parametrize("raw, status, param", [
    ('{"metadata": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}", 400, None),
    ('{"metadata": {"a": NaN}}', 422, "metadata"),
    ('{"metadata": {"a": Infinity}}', 422, "metadata"),
    ('{"metadata": {"a": 1e999}}', 422, "metadata"),
    ('{"seed": ' + "9" * 5000 + "}", 400, None),
    ('{"hyperparameters": {"learning_rate": NaN, "steps": 2}}', 422, "hyperparameters.learning_rate"),
    ('{"budget": NaN}', 422, "budget"),
    ('{"metadata": {"a": "\\ud800"}}', 422, "metadata"),
    ('{"metadata": {"a": "x\\u0000y"}}', 422, "metadata"),
    ('{"suffix": "x\\u0000y"}', 422, "suffix"),
])
def test_create_job_hostile_json_is_4xx_and_writes_nothing(client, auth, dataset, raw, status, param):
    """Python's JSON parser accepts NaN, Infinity, lone surrogates and NUL; Postgres refuses them (a 500)."""
    body = json.loads(raw, parse_constant=lambda c: c) if "[[[" not in raw and "9999" not in raw else None
    text = raw if body is None else json.dumps({**job_body(dataset), **body}, allow_nan=True)
    if body is not None:
        for c in ("NaN", "Infinity"):
            text = text.replace(f'"{c}"', c)
        text = text.replace('"1e999"', "1e999")
    before = count_rows("jobs"), count_rows("events")
    r = client.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=text)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    assert (count_rows("jobs"), count_rows("events")) == before


def test_create_job_deep_but_parseable_metadata_is_refused(client, auth, dataset):
    """Nesting Python parses (below its recursion limit) but Postgres' jsonb parser would choke on."""
    deep: dict = {}
    for _ in range(200):
        deep = {"a": deep}
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, metadata={"x": deep}))
    assert r.status_code == 422 and r.json()["error"]["param"] == "metadata", r.text


@pytest.mark.parametrize("name", [
    "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "adapter.safetensors%2F..", "..%5Cadapter.safetensors",
    "%2e%2e", "ADAPTER.SAFETENSORS", "adapter.safetensors%00.json", "adapter.bin", "model.pt", "metrics.json",
    "adapter_config.json.bak", "%252e%252e%252fpasswd",
])
def test_download_artifact_outside_the_fixed_names_is_404(client, auth, dataset, name):
    job = client.post("/v1/jobs", headers=auth, json=job_body(dataset)).json()["id"]
    r = client.get(f"/v1/jobs/{job}/artifacts/{name}", headers=auth)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["../../../etc/passwd", "/etc/passwd", "artifacts/../../x"])
def test_download_artifact_with_raw_slashes_never_leaves_the_route(client, auth, dataset, path):
    """Unencoded slashes and dot segments either miss the route or are normalised away: never a file."""
    job = client.post("/v1/jobs", headers=auth, json=job_body(dataset)).json()["id"]
    r = client.get(f"/v1/jobs/{job}/artifacts/{path}", headers=auth)
    assert r.status_code == 404 and "root:" not in r.text


@pytest.mark.parametrize("model", ["../../etc", "/tmp", "gpt2", "cfg-llama/../cfg-llama", "CFG-LLAMA",
                                   "hf-internal-testing/tiny-random-gpt2", "cfg-llama\u0000"])
def test_create_job_model_outside_the_allowlist_is_422(client, auth, dataset, model):
    before = count_rows("jobs")
    r = client.post("/v1/jobs", headers=auth, json=job_body(dataset, model=model))
    assert r.status_code == 422 and r.json()["error"]["param"] == "model", r.text
    assert any(w in r.json()["error"]["message"] for w in ("unknown model", "NUL")) and count_rows("jobs") == before


def test_estimate_for_model_outside_the_allowlist_is_404(client, auth):
    for model in ("gpt2", "..%2F..%2Fetc", "%2Ftmp"):
        r = client.get(f"/v1/models/{model}/estimate", headers=auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", model


@pytest.mark.parametrize("path, status, param", [
    ("/v1/jobs/job_%00x", 404, "id"),
    ("/v1/datasets/ds_%00x", 404, "id"),
    ("/v1/jobs?after=job_%00x", 422, "after"),
    ("/v1/jobs/JOB/events?after=%C2%B2", 422, "after"),
    ("/v1/jobs/JOB/events?after=" + "9" * 30, 422, "after"),
    ("/v1/models/cfg-llama/estimate?budget=inf", 422, "budget"),
    ("/v1/models/cfg-llama/estimate?budget=nan", 422, "budget"),
])
def test_ids_and_numbers_the_database_cannot_hold_are_4xx_not_500(client, auth, dataset, path, status, param):
    """NUL never reaches the driver, '²' is a digit to str.isdigit but not to int(), 10**29 overflows bigint."""
    job = client.post("/v1/jobs", headers=auth, json=job_body(dataset)).json()["id"]
    r = client.get(path.replace("JOB", job), headers=auth)
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text


def test_last_event_id_that_is_not_an_event_id_is_422(client, auth, dataset):
    job = client.post("/v1/jobs", headers=auth, json=job_body(dataset)).json()["id"]
    for bad in ("\u00b2", "9" * 30, "-1"):
        r = client.get(f"/v1/jobs/{job}/events", headers={**auth, "Accept": "text/event-stream",
                                                          "Last-Event-ID": bad.encode("latin-1")})
        assert r.status_code == 422 and r.json()["error"]["param"] == "Last-Event-ID", (bad, r.text)


def test_upload_filename_with_control_characters_is_stored_clean(client, auth):
    """Raw multipart (httpx would percent-encode the name): NUL cannot be stored in a text column."""
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a\x00b\x07c.jsonl"\r\n'
            b"Content-Type: application/jsonl\r\n\r\n" + PC_LINE + b"\r\n--XyZ--\r\n")
    r = client.post("/v1/datasets", headers={**auth, "Content-Type": "multipart/form-data; boundary=XyZ"},
                    content=body)
    assert r.status_code in (201, 422), r.text
    if r.status_code == 201:
        assert "\x00" not in r.json()["filename"] and "\x07" not in r.json()["filename"]
