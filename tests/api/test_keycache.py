"""The per-process key cache: concurrent checks of one key share one database read (the hostile bench found
500 open streams re-checking one key at the moment its entry expired, each with its own read: the pool ran dry
and every other request waited)."""

from __future__ import annotations

import asyncio

from service.security import KeyCache
from tests.api.fixtures import make_key


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_checks_of_one_key_share_one_lookup(service_env):
    key, owner_id = make_key("many-checks")
    clock = Clock()
    cache = KeyCache(ttl=2.0, clock=clock)

    async def burst() -> list:
        return await asyncio.gather(*(cache.verify(key) for _ in range(200)))

    first = asyncio.run(burst())
    assert {i.owner_id for i in first} == {owner_id} and cache.lookups == 1
    clock.now += 1  # still fresh: no read at all
    assert asyncio.run(burst())[0].owner_id == owner_id and cache.lookups == 1
    clock.now += 5  # expired: the next burst reads once again, not 200 times
    assert {i.owner_id for i in asyncio.run(burst())} == {owner_id} and cache.lookups == 2


def test_a_failed_lookup_reaches_every_waiter_and_is_not_cached(service_env, monkeypatch):
    key, owner_id = make_key("failing-check")
    cache = KeyCache(ttl=2.0)
    import service.security as security

    real = security._lookup

    def broken(k: str):
        raise ConnectionError("database away")

    monkeypatch.setattr(security, "_lookup", broken)

    async def burst() -> list:
        return await asyncio.gather(*(cache.verify(key) for _ in range(20)), return_exceptions=True)

    results = asyncio.run(burst())
    assert all(isinstance(r, ConnectionError) for r in results) and cache.lookups == 1
    monkeypatch.setattr(security, "_lookup", real)
    assert asyncio.run(cache.verify(key)).owner_id == owner_id  # the failure was not remembered


def test_a_revoked_key_is_seen_after_its_entry_expires(service_env):
    from sqlalchemy import update

    from service.db import session_scope
    from service.models import ApiKey
    from service.security import hash_key

    key, _ = make_key("to-revoke")
    clock = Clock()
    cache = KeyCache(ttl=2.0, clock=clock)
    assert asyncio.run(cache.verify(key)) is not None
    with session_scope() as s:
        s.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key)).values(revoked_at=1.0))
    assert asyncio.run(cache.verify(key)) is not None  # cached for its ttl
    clock.now += 3
    assert asyncio.run(cache.verify(key)) is None
