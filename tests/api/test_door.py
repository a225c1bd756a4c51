"""The door (api/door.py), the in-flight cap and the body guard, over ASGI: keys are checked before any body
is read, chunked bodies are counted, slow or keyless requests hold no slot, and rate limits key on the
verified owner."""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import contextmanager

import httpx
from starlette.responses import JSONResponse

from api.inflight import InFlightCapMiddleware
from tests.api.fixtures import environment, make_key

MIB = 1024 * 1024


@contextmanager
def app_with(**env: str):
    """A second app built with these settings (the session's app keeps the defaults)."""
    from api.main import create_app

    with environment(env):
        yield create_app()


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=20)


class Body:
    """A chunked request body of ``total`` bytes in 64 KiB pieces that counts how much the server pulled."""

    def __init__(self, total: int, piece: bytes = b"x" * 65536, stall_after: int | None = None) -> None:
        self.total, self.piece, self.stall_after, self.sent = total, piece, stall_after, 0

    async def __aiter__(self):
        while self.sent < self.total:
            if self.stall_after is not None and self.sent >= self.stall_after:
                await asyncio.sleep(3600)
            self.sent += len(self.piece)
            yield self.piece


def test_a_keyless_chunked_body_is_refused_401_without_being_read(app):
    async def scenario() -> None:
        async with asgi_client(app) as client:
            for path in ("/v1/jobs", "/v1/datasets"):
                body = Body(50 * MIB)
                r = await client.post(path, content=body, headers={"Content-Type": "application/json"})
                assert r.status_code == 401 and r.json()["error"]["param"] == "Authorization", r.text
                assert body.sent <= 2 * 65536, f"{path}: the API read {body.sent} bytes of a keyless body"
                bad = Body(50 * MIB)
                r = await client.post(path, content=bad, headers={"Authorization": f"Bearer st_{'a' * 12}_nope"})
                assert r.status_code == 401 and bad.sent <= 2 * 65536

    asyncio.run(scenario())


def test_an_authenticated_chunked_json_body_over_the_limit_is_413_naming_the_limit(app, auth):
    async def scenario() -> None:
        async with asgi_client(app) as client:
            body = Body(20 * MIB, piece=b" " * 65536)  # whitespace: valid JSON so far, never ends
            r = await client.post("/v1/jobs", content=body, headers={**auth, "Content-Type": "application/json"})
            assert r.status_code == 413, r.text
            err = r.json()["error"]
            assert err["code"] == "payload_too_large" and err["param"] == "body"
            assert f"{MIB}-byte limit" in err["message"]
            assert body.sent <= MIB + 2 * 65536, f"read {body.sent} bytes, past the 1 MiB limit"
            sized = await client.post("/v1/jobs", content=b" " * (2 * MIB), headers={**auth,
                                                                                    "Content-Type": "application/json"})
            assert sized.status_code == 413 and sized.json()["error"]["param"] == "body"

    asyncio.run(scenario())


def test_a_stalled_body_is_cut_off_with_408(service_env):
    key, _ = make_key("door-slow")

    async def scenario(app) -> None:
        async with asgi_client(app) as client:
            body = Body(MIB, stall_after=65536)
            start = time.monotonic()
            r = await client.post("/v1/jobs", content=body, headers={"Authorization": f"Bearer {key}",
                                                                    "Content-Type": "application/json"})
            assert r.status_code == 408, r.text
            assert r.json()["error"]["code"] == "request_timeout" and r.headers["connection"] == "close"
            assert time.monotonic() - start < 5

    with app_with(SPARSETUNE_BODY_TIMEOUT_SECONDS="0.5") as app:
        asyncio.run(scenario(app))


def test_keyless_hanging_uploads_do_not_fill_the_in_flight_cap(service_env):
    key, _ = make_key("door-cap")

    async def scenario(app) -> None:
        async with asgi_client(app) as client:
            hanging = [asyncio.create_task(client.post("/v1/datasets", content=Body(MIB, stall_after=0)))
                       for _ in range(4)]
            await asyncio.sleep(0.3)
            r = await asyncio.wait_for(client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}), 10)
            assert r.status_code == 200, r.text
            done, pending = await asyncio.wait(hanging, timeout=5)
            for task in pending:
                task.cancel()
            assert not pending and all(t.result().status_code == 401 for t in done)

    with app_with(SPARSETUNE_MAX_IN_FLIGHT="2") as app:
        asyncio.run(scenario(app))


def test_accept_event_stream_on_a_route_that_is_no_stream_still_counts():
    async def scenario() -> None:
        release = asyncio.Event()

        async def held_app(scope, receive, send):
            await release.wait()
            await JSONResponse({"ok": True})(scope, receive, send)

        capped = InFlightCapMiddleware(held_app, max_in_flight=1)
        sse = {"Accept": "text/event-stream"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=capped), base_url="http://t") as client:
            held = asyncio.create_task(client.get("/v1/jobs", headers=sse))
            while capped.in_flight < 1:
                await asyncio.sleep(0.01)
            assert (await client.get("/v1/datasets", headers=sse)).status_code == 503
            stream = asyncio.create_task(client.get("/v1/jobs/job_1/events", headers=sse))  # a stream route
            await asyncio.sleep(0.1)
            assert capped.in_flight == 1 and not stream.done()
            release.set()
            assert [r.status_code for r in await asyncio.gather(held, stream)] == [200, 200]

    asyncio.run(scenario())


def test_random_key_prefixes_share_the_client_addresss_bucket(service_env):
    from fastapi.testclient import TestClient

    with app_with(SPARSETUNE_RATE_READS_PER_SECOND="0.5", SPARSETUNE_RATE_READS_BURST="5") as app, \
            TestClient(app) as c:
        codes = [c.get("/v1/jobs", headers={"Authorization": f"Bearer st_{secrets.token_hex(6)}_x"}).status_code
                 for _ in range(45)]
        assert codes[:5] == [401] * 5 and codes.count(429) >= 35, codes


def test_the_limit_is_per_owner_across_its_keys(service_env):
    from fastapi.testclient import TestClient

    first, owner = make_key("door-rl")
    second, _ = make_key("door-rl-2", owner)
    with app_with(SPARSETUNE_RATE_READS_PER_SECOND="0.1", SPARSETUNE_RATE_READS_BURST="3") as app, \
            TestClient(app) as c:
        codes = [c.get("/v1/jobs", headers={"Authorization": f"Bearer {k}"}).status_code
                 for k in (first, second, first, second)]
        assert codes == [200, 200, 200, 429], codes
