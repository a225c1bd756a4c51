"""The in-flight cap (api/inflight.py), driven over real ASGI calls with an app that holds requests open."""

from __future__ import annotations

import asyncio

import httpx
from starlette.responses import JSONResponse

from api.inflight import InFlightCapMiddleware


def test_over_the_cap_is_503_at_once_streams_are_not_counted_and_slots_come_back():
    async def scenario() -> None:
        release = asyncio.Event()

        async def held_app(scope, receive, send):
            await release.wait()
            await JSONResponse({"ok": True})(scope, receive, send)

        capped = InFlightCapMiddleware(held_app, max_in_flight=2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=capped), base_url="http://t") as client:
            held = [asyncio.create_task(client.get("/v1/jobs")) for _ in range(2)]
            while capped.in_flight < 2:
                await asyncio.sleep(0.01)
            shed = await asyncio.wait_for(client.get("/v1/jobs"), 5)  # answered without waiting for a slot
            assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
            assert shed.json()["error"] == {"code": "unavailable", "message": "server busy, retry shortly",
                                            "param": None}
            stream = asyncio.create_task(client.get("/v1/events", headers={"Accept": "text/event-stream"}))
            await asyncio.sleep(0.1)
            assert capped.in_flight == 2 and not stream.done()  # let through, and not counted
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held, stream)] == [200, 200, 200]
            assert capped.in_flight == 0
            assert (await client.get("/v1/jobs")).status_code == 200

    asyncio.run(scenario())
