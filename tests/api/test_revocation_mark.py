"""The revocation mark: routes trust the door's key check while no key was revoked since it was made, so a
request costs one key lookup per key per SPARSETUNE_KEY_CHECK_SECONDS instead of one more per request, and a key
revoked from another process is still refused on the very next request (Redis's mark on Postgres/Redis, a
file's in the embedded default; without a readable mark the routes look keys up themselves)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

import api.deps
from service.revocations import FileMark, NoMark, RedisMark, mark_for
from service.security import KeyCache
from tests.api.fixtures import environment, make_key

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from cli.commands import main; sys.exit(main())"]  # `sparsetune`


class SettableMark:
    def __init__(self, value: str | None = "0") -> None:
        self.value, self.reads = value, 0

    async def read(self) -> str | None:
        self.reads += 1
        return self.value

    def move(self) -> None:
        self.value = str(int(self.value or 0) + 1)


@pytest.fixture()
def route_lookups(monkeypatch) -> list[str]:
    """Every key lookup a route makes itself (the door's own lookups are not counted)."""
    calls: list[str] = []
    real = api.deps.authenticate

    def counting(session, key):
        calls.append(key)
        return real(session, key)

    monkeypatch.setattr(api.deps, "authenticate", counting)
    return calls


def test_a_file_mark_moves_with_every_revocation_even_within_one_clock_tick(tmp_path):
    mark = FileMark(tmp_path / "home" / "key_revocations")
    seen = [asyncio.run(mark.read())]
    assert seen == ["none"]
    for _ in range(30):
        mark.move()
        seen.append(asyncio.run(mark.read()))
    assert all(a != b for a, b in zip(seen, seen[1:], strict=False))
    assert list((tmp_path / "home").iterdir()) == [tmp_path / "home" / "key_revocations"]  # no temp file left


def test_the_mark_follows_the_installation(service_env, tmp_path):
    from service.settings import get_settings

    assert isinstance(mark_for(get_settings()), RedisMark)  # Postgres + Redis: every machine reads Redis's
    with environment({"DATABASE_URL": "", "BROKER_URL": "", "SPARSETUNE_HOME": str(tmp_path)}):
        mark = mark_for(get_settings())
        assert isinstance(mark, FileMark) and mark.path == tmp_path / "key_revocations"
    with environment({"BROKER_URL": "amqp://guest@127.0.0.1//"}):  # machines that share no file: no mark
        assert isinstance(mark_for(get_settings()), NoMark)


def test_redis_mark_is_shared_and_an_unreachable_one_reads_as_unknown(service_env):
    from service.settings import get_settings

    one, two = mark_for(get_settings()), mark_for(get_settings())
    before = asyncio.run(one.read())
    two.move()
    after = asyncio.run(one.read())
    assert before is not None and after is not None and after != before
    clock = [0.0]
    away = RedisMark("redis://127.0.0.1:1/0", "k", retry_seconds=5.0, clock=lambda: clock[0])
    asked: list[int] = []
    real = away.redis.client
    away.redis.client = lambda: asked.append(1) or real()
    assert asyncio.run(away.read()) is None and len(asked) == 1
    assert asyncio.run(away.read()) is None and len(asked) == 1  # not asked again while it is known down
    clock[0] += 6
    assert asyncio.run(away.read()) is None and len(asked) == 2


def test_a_remembered_key_is_checked_only_under_the_mark_it_was_read_under(service_env):
    key, owner_id = make_key("marked")
    mark = SettableMark()
    cache = KeyCache(ttl=60.0, mark=mark)
    identity = asyncio.run(cache.verify(key, "0"))
    assert identity.owner_id == owner_id and cache.lookups == 1
    assert cache.cached(key, "0") == (True, identity) and asyncio.run(cache.verify(key, "0")) == identity
    assert cache.lookups == 1  # remembered under the mark that stands
    assert cache.cached(key, "1") == (False, None)  # some key was revoked since: not trusted as it is
    assert asyncio.run(cache.verify(key, "1")) == identity and cache.lookups == 2  # looked up again, once
    assert cache.cached(key, "1") == (True, identity) and cache.cached(key) == (True, identity)


def test_an_open_streams_recheck_reads_the_mark_only_when_its_entry_expired(service_env):
    key, owner_id = make_key("rechecked")
    mark, clock = SettableMark(), [0.0]
    cache = KeyCache(ttl=2.0, mark=mark, clock=lambda: clock[0])
    assert asyncio.run(cache.recheck(key)).owner_id == owner_id and (mark.reads, cache.lookups) == (1, 1)
    for _ in range(5):
        assert asyncio.run(cache.recheck(key)).owner_id == owner_id
    assert (mark.reads, cache.lookups) == (1, 1)
    clock[0] += 3
    assert asyncio.run(cache.recheck(key)).owner_id == owner_id and (mark.reads, cache.lookups) == (2, 2)
    assert cache.cached(key, mark.value) == (True, cache.cached(key)[1])  # the door may trust this entry


def test_routes_trust_the_doors_check_and_look_keys_up_themselves_without_a_mark(app, client, auth, route_lookups,
                                                                                monkeypatch):
    for path in ("/v1/datasets", "/v1/jobs", "/v1/jobs/job_missing", "/v1/models"):
        assert client.get(path, headers=auth).status_code in (200, 404), path
    assert route_lookups == []

    async def unreadable() -> None:
        return None

    monkeypatch.setattr(app.state.keys.mark, "read", unreadable)
    for path in ("/v1/datasets", "/v1/jobs", "/v1/jobs/job_missing", "/v1/models"):
        assert client.get(path, headers=auth).status_code in (200, 404), path
    assert len(route_lookups) == 4  # one a request, as before the mark


def test_a_key_revoked_by_the_cli_in_another_process_is_refused_on_the_next_request(app, client, service_env,
                                                                                   route_lookups):
    from service.db import session_scope
    from service.models import ApiKey

    key, owner_id = make_key("cli-revoked")
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        assert client.get("/v1/jobs", headers=headers).status_code == 200
    with session_scope() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.prefix == key.split("_")[1]))
    subprocess.run([*CLI, "keys", "revoke", key_id], cwd=ROOT, check=True,
                   env={**os.environ, **service_env}, capture_output=True, timeout=120)
    r = client.get("/v1/jobs", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid or revoked API key"
    assert route_lookups == []  # refused at the door: the moved mark made it look the key up


@pytest.fixture()
def embedded(tmp_path) -> Iterator[Path]:
    from cli.bootstrap import migrate

    home = tmp_path / "home"
    with environment({"DATABASE_URL": "", "BROKER_URL": "", "SPARSETUNE_HOME": str(home),
                      "SPARSETUNE_ALLOWED_HOSTS": "testserver"}):
        migrate()
        yield home


def test_embedded_a_key_revoked_by_the_cli_in_another_process_is_refused_on_the_next_request(embedded,
                                                                                            route_lookups):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from service.db import session_scope
    from service.models import ApiKey

    key, _ = make_key("embedded-revoked")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app()) as client:
        for _ in range(3):
            assert client.get("/v1/jobs", headers=headers).status_code == 200
        assert route_lookups == []  # the file's mark made the door's check enough
        with session_scope() as s:
            key_id = s.scalar(select(ApiKey.id).where(ApiKey.prefix == key.split("_")[1]))
        env = {**os.environ, "DATABASE_URL": "", "BROKER_URL": "", "SPARSETUNE_HOME": str(embedded)}
        subprocess.run([*CLI, "keys", "revoke", key_id], cwd=ROOT, check=True, env=env,
                       capture_output=True, timeout=120)
        assert (embedded / "key_revocations").is_file()
        assert client.get("/v1/jobs", headers=headers).status_code == 401
