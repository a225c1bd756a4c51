"""Redis from the API's event loop, for reads made on every request (the rate limiter's buckets, the key
revocation mark): a client per event loop, and a pause after a failure so an unreachable Redis costs one
request its timeout, not every request."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("sparsetune.api")


class LoopRedis:
    def __init__(self, url: str, max_connections: int, retry_seconds: float = 5.0, clock=time.monotonic) -> None:
        self.url, self.max_connections, self.retry_seconds, self._clock = url, max_connections, retry_seconds, clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self._down_until = 0.0

    def client(self):
        """This loop's client: asyncio connections belong to the loop that opened them (uvicorn has one; each
        TestClient its own). A blocking pool with half-second timeouts: a burst of requests waits briefly for
        one of a few connections (the default pool raises MaxConnectionsError past its size)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            import redis.asyncio as aioredis

            pool = aioredis.BlockingConnectionPool.from_url(self.url, max_connections=self.max_connections,
                                                            timeout=0.5, socket_timeout=0.5,
                                                            socket_connect_timeout=0.5)
            self._client, self._loop = aioredis.Redis(connection_pool=pool), loop
        return self._client

    @property
    def down(self) -> bool:
        """A call failed less than ``retry_seconds`` ago: do not ask Redis yet."""
        return self._clock() < self._down_until

    def failed(self, what: str, exc: BaseException, meanwhile: str) -> None:
        log.warning("%s: redis unavailable (%s); %s for %.0f s", what, exc.__class__.__name__, meanwhile,
                    self.retry_seconds)
        self._down_until = self._clock() + self.retry_seconds
