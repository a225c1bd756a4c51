"""Artifact downloads that can be checked and resumed: HEAD, Range (206), 416, If-Range, and the CLI client
resuming a partial file (issue 14)."""

from __future__ import annotations

import hashlib
import os

import pytest

from api.ranges import Unsatisfiable, byte_range

DATA = os.urandom(3500)  # stored in 1000-byte chunks: ranges cross chunk edges
SHA = hashlib.sha256(DATA).hexdigest()
NAME = "adapter.safetensors"


@pytest.fixture()
def job_with_artifact(client, auth) -> str:
    """A job with an artifact stored as a worker stores it (in four chunks)."""
    from service.blobstore import DbBlobStore
    from service.db import session_scope
    from service.models import Artifact

    ds = client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", b'{"prompt": "p", "completion": "c"}\n')})
    body = {"model": "cfg-llama", "training_dataset": ds.json()["id"], "method": "smt", "budget": 0.05}
    job = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    with session_scope() as s:
        blob = DbBlobStore(chunk_bytes=1000).write_bytes(s, DATA)
        assert blob.chunks == 4
        s.add(Artifact(job_id=job, name=NAME, blob_id=blob.id, bytes=len(DATA), sha256=blob.sha256))
    return job


def test_head_gives_size_sha256_and_etag_without_a_body(client, auth, other_auth, job_with_artifact):
    url = f"/v1/jobs/{job_with_artifact}/artifacts/{NAME}"
    r = client.head(url, headers=auth)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(DATA)) and r.headers["x-checksum-sha256"] == SHA
    assert r.headers["etag"] == f'"{SHA}"' and r.headers["accept-ranges"] == "bytes"
    get = client.get(url, headers=auth)
    assert get.content == DATA and get.headers["etag"] == r.headers["etag"] and get.headers["accept-ranges"] == "bytes"
    assert client.head(url, headers=other_auth).status_code == 404  # another owner's: as if missing
    assert client.head(f"/v1/jobs/{job_with_artifact}/artifacts/merged.tar", headers=auth).status_code == 404
    assert client.head(url).status_code == 401


@pytest.mark.parametrize(("header", "start", "stop"), [
    ("bytes=0-0", 0, 1), ("bytes=999-1000", 999, 1001), ("bytes=500-2999", 500, 3000), ("bytes=1000-", 1000, 3500),
    ("bytes=3499-", 3499, 3500), ("bytes=-1", 3499, 3500), ("bytes=-600", 2900, 3500), ("bytes=-99999", 0, 3500),
    ("bytes=3000-99999", 3000, 3500), ("bytes=0-3499", 0, 3500),
])
def test_a_range_is_206_with_exactly_those_bytes_and_content_range(client, auth, job_with_artifact, header, start,
                                                                    stop):
    r = client.get(f"/v1/jobs/{job_with_artifact}/artifacts/{NAME}", headers={**auth, "Range": header})
    assert r.status_code == 206, r.status_code
    assert r.content == DATA[start:stop]
    assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"
    assert r.headers["content-length"] == str(stop - start) and r.headers["x-checksum-sha256"] == SHA


@pytest.mark.parametrize("header", ["bytes=3500-", "bytes=9000-9999", "bytes=-0"])
def test_a_range_past_the_end_is_416_with_the_size(client, auth, job_with_artifact, header):
    r = client.get(f"/v1/jobs/{job_with_artifact}/artifacts/{NAME}", headers={**auth, "Range": header})
    assert r.status_code == 416, r.status_code
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    err = r.json()["error"]
    assert err["code"] == "range_not_satisfiable" and err["param"] == "Range"


def test_a_range_it_does_not_understand_is_ignored_and_the_whole_artifact_sent(client, auth, job_with_artifact):
    url = f"/v1/jobs/{job_with_artifact}/artifacts/{NAME}"
    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=5-2", "bytes=-", "bytes=a-b", "bytes 0-5", "bytes=1 0-"):
        r = client.get(url, headers={**auth, "Range": header})
        assert r.status_code == 200 and r.content == DATA and "content-range" not in r.headers, header
    assert client.get(url, headers={**auth, "Range": "bytes=0-5"}).status_code == 206  # while one it does is used


def test_if_range_sends_the_range_only_while_the_etag_matches(client, auth, job_with_artifact):
    url = f"/v1/jobs/{job_with_artifact}/artifacts/{NAME}"
    same = client.get(url, headers={**auth, "Range": "bytes=100-", "If-Range": f'"{SHA}"'})
    assert same.status_code == 206 and same.content == DATA[100:]
    changed = client.get(url, headers={**auth, "Range": "bytes=100-", "If-Range": '"0000"'})
    assert changed.status_code == 200 and changed.content == DATA


def test_byte_range_parses_one_range_and_ignores_the_rest():
    assert byte_range(None, 10) is None
    assert byte_range("bytes=2-4", 10) == (2, 5)
    assert byte_range("bytes=2-4", 10, if_range='"x"', etag='"y"') is None
    with pytest.raises(Unsatisfiable):
        byte_range("bytes=0-", 0)  # nothing to send from an empty artifact


# -- the CLI's download ----------------------------------------------------------------------------------------

def cli_client(client, auth):
    """cli.client.Client speaking to the in-process app."""
    from cli.client import Client

    c = Client(url="http://testserver", key=auth["Authorization"].split()[1])
    c.http.close()
    client.headers.update(auth)
    c.http = client
    return c


def test_the_cli_resumes_a_partial_download_with_a_range(client, auth, job_with_artifact, tmp_path):
    out = tmp_path / NAME
    (tmp_path / f"{NAME}.part").write_bytes(DATA[:1234])  # an interrupted earlier download
    seen: list[str | None] = []
    client.event_hooks["request"] = [lambda req: seen.append(req.headers.get("range"))]
    info = cli_client(client, auth).download(job_with_artifact, NAME, out)
    assert out.read_bytes() == DATA and not (tmp_path / f"{NAME}.part").exists()
    assert info["resumed_from"] == 1234 and info["sha256"] == SHA and info["bytes"] == len(DATA)
    assert seen == ["bytes=1234-"]


def test_the_cli_checks_a_resumed_file_whole_and_removes_a_bad_partial_copy(client, auth, job_with_artifact,
                                                                         tmp_path):
    from cli.client import ApiError

    out = tmp_path / NAME
    part = tmp_path / f"{NAME}.part"
    part.write_bytes(b"\0" * 1234)  # not the artifact's first bytes
    with pytest.raises(ApiError, match="sha256 mismatch"):
        cli_client(client, auth).download(job_with_artifact, NAME, out)
    assert not part.exists() and not out.exists()
    info = cli_client(client, auth).download(job_with_artifact, NAME, out)  # the retry starts afresh
    assert out.read_bytes() == DATA and info["resumed_from"] == 0


def test_the_cli_finishes_a_partial_copy_that_is_already_whole(client, auth, job_with_artifact, tmp_path):
    out = tmp_path / NAME
    (tmp_path / f"{NAME}.part").write_bytes(DATA)
    info = cli_client(client, auth).download(job_with_artifact, NAME, out)  # 416: nothing left to fetch
    assert out.read_bytes() == DATA and info["sha256"] == SHA and info["resumed_from"] == len(DATA)
