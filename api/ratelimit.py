"""Rate limits: a token bucket per owner (per client IP without a valid key), one for reads and one for writes.

Over the limit a request gets 429 in the one error shape with ``Retry-After`` (whole seconds until a token is
back). With a Redis broker the buckets live in Redis (one Lua script, Redis's clock), so every API process
shares them; otherwise (embedded mode) they live in this process. While Redis is unreachable each process
falls back to its own buckets and tries Redis again a few seconds later: the limiter protects the service, it
must not become the reason it is down (no 5xx, no half-second connect timeout on every request).

Written here rather than taken from ``limits``: that library has fixed and sliding windows but no token
bucket, and its Redis extra pins redis<8 (we ship redis 8).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from starlette.responses import JSONResponse
from starlette.types import Scope

from api.errors import error_body
from service.loop_redis import LoopRedis
from service.settings import Settings

log = logging.getLogger("sparsetune.api")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Rate:
    per_second: float  # sustained rate; <= 0 means unlimited
    burst: int  # bucket size: requests allowed at once after a quiet spell


class Bucket(Protocol):
    async def take(self, key: str, rate: Rate) -> float:
        """0 if a token was taken, else the seconds until one is available."""


class MemoryBuckets:
    """Buckets in this process (embedded mode): a dict of (tokens, last refill) under one lock."""

    def __init__(self, clock=time.monotonic, max_keys: int = 100_000) -> None:
        self._clock, self._max_keys = clock, max_keys
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def take(self, key: str, rate: Rate) -> float:
        now = self._clock()
        with self._lock:
            tokens, last = self._state.get(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate.per_second
            if wait == 0.0:
                tokens -= 1
            if len(self._state) >= self._max_keys and key not in self._state:
                self._state.clear()  # bounded memory under a flood of distinct keys; buckets start full again
            self._state[key] = (tokens, now)
        return wait


# KEYS[1] bucket; ARGV rate, burst. Returns {taken (1|0), wait seconds as a string (Lua floats are truncated)}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""


REDIS_CONNECTIONS = 16
KEY_LOOKUPS = Rate(20.0, 50)  # per client address: lookups of keys not verified lately (any key, valid or not)


class RedisBuckets:
    """Buckets shared by every API process through Redis; one round trip per request."""

    def __init__(self, url: str, namespace: str, retry_seconds: float = 5.0) -> None:
        self._redis = LoopRedis(url, REDIS_CONNECTIONS, retry_seconds)
        self._namespace = namespace
        self._script = None
        self._fallback = MemoryBuckets()

    def _script_for_this_loop(self):
        client = self._redis.client()
        if self._script is None or self._script.registered_client is not client:
            self._script = client.register_script(TOKEN_BUCKET_LUA)
        return self._script

    async def take(self, key: str, rate: Rate) -> float:
        if self._redis.down:
            return await self._fallback.take(key, rate)
        try:
            script = self._script_for_this_loop()
            wait = await script(keys=[f"{self._namespace}:{key}"], args=[rate.per_second, rate.burst])
        except Exception as exc:  # noqa: BLE001 - an unreachable Redis must not turn into 5xx
            self._redis.failed("rate limiter", exc, "in-process buckets")
            return await self._fallback.take(key, rate)
        return float(wait)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class RateLimiter:
    """Checks one bucket per request; used by the door (api/door.py) once it knows who is asking: the verified
    owner (``owner:<id>``, every key of the owner shares it), or the client address when no valid key was sent.
    A key is never trusted before it is verified (a random key prefix per request must not mean a fresh
    bucket per request)."""

    def __init__(self, buckets: Bucket, reads: Rate, writes: Rate) -> None:
        self.buckets, self.reads, self.writes = buckets, reads, writes

    async def check(self, scope: Scope, who: str) -> JSONResponse | None:
        """None if a token was taken (or this kind of request is unlimited), else the 429 to answer."""
        write = scope["method"] in WRITE_METHODS
        rate = self.writes if write else self.reads
        return await self._take(f"{'w' if write else 'r'}:{who}", rate, "writes" if write else "reads", who)

    async def check_lookup(self, scope: Scope) -> JSONResponse | None:
        """A token for a database lookup of a key this process has not verified lately, from the client
        address's own lookup bucket (``KEY_LOOKUPS``): made-up keys cannot buy a lookup each, while a valid key
        from a throttled address still gets through."""
        who = client_address(scope)
        return await self._take(f"k:{who}", KEY_LOOKUPS, "key lookups", who)

    async def _take(self, bucket: str, rate: Rate, kind: str, who: str) -> JSONResponse | None:
        if rate.per_second <= 0:
            return None
        wait = await self.buckets.take(bucket, rate)
        if wait <= 0:
            return None
        retry = max(1, math.ceil(wait))
        scope_word = "this owner's API keys" if who.startswith("owner:") else "this client address"
        body = error_body(429, f"rate limit exceeded: {rate.per_second:g} {kind} per second (bursts of "
                          f"{rate.burst}) for {scope_word}; retry after {retry} s")
        return JSONResponse(body, status_code=429, headers={"Retry-After": str(retry)})


def buckets_for(settings: Settings) -> Bucket:
    broker = settings.broker_url or ""
    if broker.startswith(("redis://", "rediss://")):
        return RedisBuckets(broker, f"sparsetune:ratelimit:{settings.queue_name}")
    return MemoryBuckets()


def limiter_for(settings: Settings) -> RateLimiter:
    reads = Rate(settings.rate_reads_per_second, settings.rate_reads_burst)
    writes = Rate(settings.rate_writes_per_second, settings.rate_writes_burst)
    return RateLimiter(buckets_for(settings), reads, writes)
