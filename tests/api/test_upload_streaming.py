"""Uploads (issue 14): text that cannot be stored is a per-line 422 naming the field and leaves nothing; labels
are bounded; duplicate ``file`` parts are refused; memory stays flat whatever the upload's size."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import pytest

from tests.api.fixtures import count_rows, environment

TABLES = ("datasets", "blobs", "blob_chunks")
PC_LINE = b'{"prompt": "p", "completion": "c"}\n'


def upload(client, auth, data: bytes):
    return client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", data, "application/jsonl")})


@pytest.mark.parametrize("line, field, words", [
    (b'{"text": "t", "label": "\\ud800"}', "label", "lone surrogate"),
    (b'{"text": "t", "label": "a\\u0000b"}', "label", "NUL"),
    (b'{"text": "x\\udfff", "label": "a"}', "text", "lone surrogate"),
    (b'{"prompt": "p\\u0000", "completion": "c"}', "prompt", "NUL"),
    (b'{"messages": [{"role": "user", "content": "\\ud83d"}, {"role": "assistant", "content": "a"}]}',
     "messages[0].content", "lone surrogate"),
    (b'{"prompt": "p", "choices": ["a", "b\\u0000"], "label": 0}', "choices[1]", "NUL"),
    (b'{"prompt": "p", "completion": "c", "\\ud800": 1}', None, "field name"),
])
def test_text_that_cannot_be_stored_is_422_naming_line_and_field_and_writes_nothing(client, auth, line, field,
                                                                                    words):
    before = [count_rows(t) for t in TABLES]
    ok = b'{"text": "t", "label": "a"}\n' if b'"text"' in line or b"label\": \"" in line else PC_LINE
    if b"choices" in line:
        ok = b'{"prompt": "p", "choices": ["a", "b"], "label": 0}\n'
    if b"messages" in line:
        ok = b'{"messages": [{"role": "assistant", "content": "a"}]}\n'
    r = upload(client, auth, ok + line + b"\n")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == "file" and err["details"][0] == {"line": 2, "field": field, "message": err["details"][0][
        "message"]} and words in err["details"][0]["message"], err
    assert [count_rows(t) for t in TABLES] == before, "nothing half-written"
    listed = client.get("/v1/datasets", headers=auth)
    assert listed.status_code == 200, "listing the owner's datasets still works"


def test_a_stored_lone_surrogate_label_still_lists():
    """A dataset saved before uploads refused them: it serialises with the label escaped, not a 500."""
    from api.schemas import DatasetPublic
    from service.models import Dataset

    old = Dataset(id="ds_x", filename="f", format="classification", rows=1, bytes=1, sha256="0" * 64,
                  truncated_rows=0, label_names=["\ud800", "ok"], created_at=0)
    public = DatasetPublic.model_validate(old)
    assert public.label_names == ["\\ud800", "ok"]
    public.model_dump_json().encode("utf-8")


def test_more_distinct_labels_than_the_limit_are_refused(client, auth):
    from smt_core.dataformats import MAX_LABELS

    data = b"".join(b'{"text": "t", "label": "l%d"}\n' % i for i in range(MAX_LABELS + 5))
    before = [count_rows(t) for t in TABLES]
    r = upload(client, auth, data)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["details"][0]["line"] == MAX_LABELS + 1 and err["details"][0]["field"] == "label"
    assert err["total"] == 5 and [count_rows(t) for t in TABLES] == before
    at_limit = upload(client, auth, b"".join(b'{"text": "t", "label": "l%d"}\n' % i for i in range(MAX_LABELS)))
    assert at_limit.status_code == 201 and len(at_limit.json()["label_names"]) == MAX_LABELS


def test_an_overlong_label_is_refused(client, auth):
    r = upload(client, auth, b'{"text": "t", "label": "' + b"x" * 201 + b'"}\n')
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "label", r.text
    r = upload(client, auth, b'{"text": "t", "label": ' + b"9" * 300 + b"}\n")
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "label", r.text


def test_duplicate_file_parts_are_refused_and_write_nothing(client, auth):
    before = [count_rows(t) for t in TABLES]
    r = client.post("/v1/datasets", headers=auth, files=[("file", ("a.jsonl", PC_LINE, "application/jsonl")),
                                                         ("file", ("b.jsonl", PC_LINE * 2, "application/jsonl"))])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "file" and "one file part" in r.json()["error"]["message"]
    assert [count_rows(t) for t in TABLES] == before


# -- memory ------------------------------------------------------------------------------------------------

def _asgi_post(app, path: str, headers: list[tuple[bytes, bytes]], pieces, length: int) -> tuple[int, bytes]:
    """POST through the ASGI app as a server would deliver it (64 KiB body messages), without a client that
    holds the whole body in memory (TestClient does)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-length", str(length).encode()), *headers],
             "client": ("127.0.0.1", 40000), "server": ("testserver", 80)}
    it = iter(pieces)
    sent: dict = {"status": None, "body": b""}

    async def receive():
        piece = next(it, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return sent["status"], sent["body"]


def test_upload_memory_is_independent_of_its_size(service_env, auth):
    """A 40 MiB upload: the API's Python allocations stay bounded by the blob chunk size, well below the file's
    size (the old route held the whole file, its lines and every parsed row: 159 MiB for this one)."""
    from service.settings import get_settings

    size_mib = 40
    line = json.dumps({"prompt": "p" * 900, "completion": "c" * 90}).encode() + b"\n"
    lines = size_mib * 2**20 // len(line)
    boundary = b"sparsetune-test-boundary"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            b"Content-Type: application/jsonl\r\n\r\n")
    tail = b"\r\n--" + boundary + b"--\r\n"
    per_piece = 64 * 1024 // len(line)

    def pieces():
        yield head
        for start in range(0, lines, per_piece):
            yield line * min(per_piece, lines - start)
        yield tail

    length = len(head) + len(line) * lines + len(tail)
    with environment({"SPARSETUNE_MAX_UPLOAD_BYTES": str(64 * 2**20), "SPARSETUNE_RATE_WRITES_PER_SECOND": "0"}):
        from api.main import create_app

        app = create_app()
        headers = [(b"authorization", auth["Authorization"].encode()),
                   (b"content-type", b"multipart/form-data; boundary=" + boundary)]
        _asgi_post(app, "/v1/datasets", headers, iter([head, line, tail]), len(head) + len(line) + len(tail))  # warm
        tracemalloc.start()
        try:
            status, body = _asgi_post(app, "/v1/datasets", headers, pieces(), length)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert status == 201, body[:2000]
    assert json.loads(body)["rows"] == lines and json.loads(body)["bytes"] == len(line) * lines
    # a few blob chunks at a time (the chunk, and the driver's escaped copy of it), whatever the file's size
    chunk = get_settings().chunk_bytes
    assert peak < min(size_mib * 2**20 / 2, 5 * chunk), \
        f"peak {peak / 2**20:.1f} MiB of Python allocations for a {size_mib} MiB upload ({chunk} B chunks)"
