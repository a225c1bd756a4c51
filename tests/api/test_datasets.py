"""Dataset uploads: validation line by line, size limit, listing and ownership; bad input leaves no row."""

from __future__ import annotations

import hashlib
import json

from tests import factories
from tests.api.fixtures import count_rows


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(client, auth, data: bytes, name: str = "train.jsonl"):
    return client.post("/v1/datasets", headers=auth, files={"file": (name, data, "application/jsonl")})


def test_create_dataset_valid_returns_report_and_sha256(client, auth):
    data = _jsonl(factories.classification_rows(20))
    r = upload(client, auth, data)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["object"] == "dataset" and body["id"].startswith("ds_")
    assert body["format"] == "classification" and body["rows"] == 20 and body["bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["label_names"] == ["negative", "positive"]
    assert client.get(f"/v1/datasets/{body['id']}", headers=auth).json() == body


def test_create_dataset_malformed_line_names_line_and_leaves_nothing(client, auth):
    before = (count_rows("datasets"), count_rows("blobs"))
    data = _jsonl(factories.completion_rows(3)) + b'{"prompt": "x"\n' + _jsonl([{"prompt": "a", "label": 1}])
    r = upload(client, auth, data)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["param"] == "file"
    assert "line 4" in err["message"]
    assert err["details"][0]["line"] == 4 and err["total"] == 3  # line 5: completion missing, label unknown
    assert err["details"][1] == {"line": 5, "field": "completion", "message": "missing"}
    assert (count_rows("datasets"), count_rows("blobs")) == before


def test_create_dataset_empty_file_refused(client, auth):
    r = upload(client, auth, b"\n\n")
    assert r.status_code == 422 and "no rows" in r.json()["error"]["message"]


def test_create_dataset_oversized_refused_with_413(client, auth):
    before = count_rows("datasets")
    big = _jsonl(factories.completion_rows(1)) * 20000  # > the 256 KiB limit the tests set
    r = upload(client, auth, big)
    assert r.status_code == 413
    assert r.json()["error"]["param"] == "file" and "limit" in r.json()["error"]["message"]
    assert count_rows("datasets") == before


def test_create_dataset_missing_file_field_is_422(client, auth):
    r = client.post("/v1/datasets", headers=auth, data={"other": "x"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "file"


def test_list_datasets_newest_first_and_paginates(client, auth):
    ids = [upload(client, auth, _jsonl(factories.completion_rows(2, seed=i))).json()["id"] for i in range(3)]
    page1 = client.get("/v1/datasets?limit=2", headers=auth).json()
    assert page1["object"] == "list" and page1["has_more"] is True
    assert [d["id"] for d in page1["data"]] == ids[::-1][:2] and page1["last_id"] == ids[1]
    page2 = client.get(f"/v1/datasets?limit=2&after={page1['last_id']}", headers=auth).json()
    assert [d["id"] for d in page2["data"]] == [ids[0]] and page2["has_more"] is False


def test_read_dataset_of_other_owner_is_404(client, auth, other_auth):
    ds = upload(client, auth, _jsonl(factories.completion_rows(2))).json()["id"]
    for method in ("get", "delete"):
        r = getattr(client, method)(f"/v1/datasets/{ds}", headers=other_auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert ds not in [d["id"] for d in client.get("/v1/datasets", headers=other_auth).json()["data"]]
    assert client.get(f"/v1/datasets/{ds}", headers=auth).status_code == 200


def test_delete_dataset_removes_row_and_blob(client, auth):
    blobs = count_rows("blobs")
    ds = upload(client, auth, _jsonl(factories.completion_rows(2))).json()["id"]
    assert count_rows("blobs") == blobs + 1
    r = client.delete(f"/v1/datasets/{ds}", headers=auth)
    assert r.status_code == 200 and r.json() == {"id": ds, "object": "dataset", "deleted": True}
    assert client.get(f"/v1/datasets/{ds}", headers=auth).status_code == 404
    assert count_rows("blobs") == blobs
