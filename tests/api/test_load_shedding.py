"""Overload sheds requests: with every pooled database connection busy, a request waits at most the pool
timeout and gets a 503 with Retry-After (a client retries it), never a 500 or a 30-second hang."""

from __future__ import annotations

import time

from service.db import POOL_TIMEOUT_SECONDS, get_engine


def test_an_exhausted_connection_pool_answers_503_busy_with_retry_after(client, auth):
    engine = get_engine()
    held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]  # every connection
    try:
        start = time.monotonic()
        r = client.get("/v1/jobs", headers=auth)
        waited = time.monotonic() - start
    finally:
        for conn in held:
            conn.close()
    assert r.status_code == 503, r.text
    assert r.json()["error"] == {"code": "unavailable", "message": "server busy, retry shortly", "param": None}
    assert r.headers["retry-after"] == "1"
    assert POOL_TIMEOUT_SECONDS - 0.5 <= waited < POOL_TIMEOUT_SECONDS + 5
    assert client.get("/v1/jobs", headers=auth).status_code == 200  # connections back: served again
