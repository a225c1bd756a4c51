"""Rate limits: token buckets per owner (per IP without a valid key), reads and writes apart, 429 with Retry-After,
shared through Redis by every API process, in-process in embedded mode."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import contextmanager

import pytest
import redis

from api.ratelimit import MemoryBuckets, Rate, RedisBuckets, buckets_for
from service.settings import Settings
from tests.api.fixtures import make_key


@contextmanager
def limited_app(**env: str):
    """A second app built with these limits (the session's app keeps the generous defaults)."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from service.settings import get_settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        app = create_app()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        get_settings.cache_clear()
    with TestClient(app) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_writes_over_the_limit_get_429_with_retry_after_per_key(service_env):
    # a slow refill (one token in 4 s): a loaded machine must not hand a token back during the burst
    with limited_app(SPARSETUNE_RATE_WRITES_PER_SECOND="0.25", SPARSETUNE_RATE_WRITES_BURST="3") as c:
        alice, bob = bearer(make_key("rl-alice")[0]), bearer(make_key("rl-bob")[0])
        codes = [c.post("/v1/jobs", headers=alice, json={}).status_code for _ in range(3)]
        assert codes == [422, 422, 422], "the burst passes through to validation"
        r = c.post("/v1/jobs", headers=alice, json={})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited" and "writes per second" in r.json()["error"]["message"]
        assert r.headers["Retry-After"] == "4"
        assert c.get("/v1/jobs", headers=alice).status_code == 200, "reads have their own bucket"
        assert c.post("/v1/jobs", headers=bob, json={}).status_code == 422, "another owner has its own bucket"
        time.sleep(4.05)  # one token back at 0.25/s
        assert c.post("/v1/jobs", headers=alice, json={}).status_code == 422
        assert c.post("/v1/jobs", headers=alice, json={}).status_code == 429


def test_requests_without_a_key_are_limited_per_client_address(service_env):
    with limited_app(SPARSETUNE_RATE_READS_PER_SECOND="0.5", SPARSETUNE_RATE_READS_BURST="2") as c:
        assert [c.get("/v1/jobs").status_code for _ in range(2)] == [401, 401]
        r = c.get("/v1/jobs", headers={"Authorization": "Bearer not-a-key"})  # no key shape: same address
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert c.get("/healthz").status_code == 200, "health checks are never limited"
        assert c.get("/v1/jobs", headers=bearer(make_key("rl-carol")[0])).status_code == 200


def test_buckets_live_in_redis_and_are_shared_by_api_processes(service_env):
    env = {"SPARSETUNE_RATE_WRITES_PER_SECOND": "0.1", "SPARSETUNE_RATE_WRITES_BURST": "2"}
    key, owner_id = make_key("rl-shared")
    with limited_app(**env) as first, limited_app(**env) as second:
        assert first.post("/v1/jobs", headers=bearer(key), json={}).status_code == 422
        assert second.post("/v1/jobs", headers=bearer(key), json={}).status_code == 422
        r = first.post("/v1/jobs", headers=bearer(key), json={})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) == 10
    r = redis.Redis.from_url(service_env["BROKER_URL"])
    stored = r.keys(f"sparsetune:ratelimit:{service_env['SPARSETUNE_QUEUE']}:w:owner:{owner_id}")
    assert len(stored) == 1 and 0 < r.pttl(stored[0]) <= 21_000, "buckets expire once they would be full again"


def test_default_limits_leave_room_for_the_dashboard_and_the_benchmark():
    s = Settings(_env_file=None)
    assert s.rate_reads_per_second >= 100 and s.rate_writes_per_second >= 20
    assert isinstance(buckets_for(Settings(_env_file=None, BROKER_URL=None)), MemoryBuckets)


def test_memory_bucket_refills_at_its_rate_and_caps_at_its_burst():
    now = [100.0]
    buckets = MemoryBuckets(clock=lambda: now[0])
    rate = Rate(per_second=2.0, burst=3)
    take = lambda: asyncio.run(buckets.take("k", rate))  # noqa: E731
    assert [take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert take() == pytest.approx(0.5), "empty: the next token is half a second away at 2/s"
    now[0] += 0.5
    assert take() == 0.0 and take() == pytest.approx(0.5)
    now[0] += 60  # a long pause refills to the burst, not beyond
    assert [take() for _ in range(4)][-1] == pytest.approx(0.5)
    assert asyncio.run(buckets.take("other", rate)) == 0.0


def test_unreachable_redis_falls_back_to_in_process_buckets_without_waiting_each_time():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    buckets = RedisBuckets(f"redis://127.0.0.1:{port}/0", "test", retry_seconds=60)
    rate = Rate(per_second=1.0, burst=2)

    async def takes() -> tuple[list[float], float]:
        first = [await buckets.take("k", rate)]
        start = time.perf_counter()
        rest = [await buckets.take("k", rate) for _ in range(2)]
        return first + rest, time.perf_counter() - start

    waits, seconds = asyncio.run(takes())
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0, "still limited, by this process's own buckets"
    assert seconds < 0.05, "no connection attempt while Redis is known to be down"
