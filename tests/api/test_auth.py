"""API keys: missing, malformed, wrong and revoked keys are 401 in the one error shape; keys are hashed."""

from __future__ import annotations

from sqlalchemy import select

from tests.api.fixtures import make_key

PROTECTED = [("get", "/v1/datasets"), ("get", "/v1/jobs"), ("post", "/v1/jobs"), ("get", "/v1/models"),
             ("get", "/v1/jobs/job_x"), ("get", "/v1/jobs/job_x/events"), ("get", "/v1/jobs/job_x/artifacts"),
             ("get", "/v1/models/cfg-llama/estimate")]


def test_protected_routes_without_key_are_401(client):
    for method, path in PROTECTED:
        r = getattr(client, method)(path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "unauthorized" and "API key" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"


def test_wrong_and_malformed_keys_are_401(client, auth):
    key = auth["Authorization"].split()[1]
    scheme, prefix, secret = key.split("_", 2)
    for bad in (f"{scheme}_{prefix}_{'A' * len(secret)}", "nonsense", f"{scheme}_ffffffffffff_{secret}"):
        r = client.get("/v1/datasets", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid or revoked API key"


def test_revoked_key_is_401(client):
    from service.db import session_scope
    from service.models import ApiKey
    from service.security import revoke_key

    key, owner = make_key("temp")
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with session_scope() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.owner_id == owner))
        revoke_key(s, row.id)
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_keys_are_stored_only_as_sha256(service_env):
    import hashlib

    from service.db import session_scope
    from service.models import ApiKey

    key, owner = make_key("hash-check")
    with session_scope() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.owner_id == owner))
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert key not in (row.key_hash, row.prefix, row.name) and key.split("_")[1] == row.prefix


def test_second_key_for_same_owner_sees_same_rows(client, auth):
    from service.db import session_scope
    from service.security import authenticate

    with session_scope() as s:
        owner = authenticate(s, auth["Authorization"].split()[1])
        owner_id = owner.id
    key2, same = make_key("second", owner_id)
    assert same == owner_id
    files = {"file": ("a.jsonl", b'{"prompt": "p", "completion": "c"}\n')}
    ds = client.post("/v1/datasets", headers=auth, files=files).json()["id"]
    assert client.get(f"/v1/datasets/{ds}", headers={"Authorization": f"Bearer {key2}"}).status_code == 200
