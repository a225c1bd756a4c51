"""The event hub wakes the streams with news a slice at a time: one event of an owner with hundreds of open
streams must not hold the event loop for all of their sends before any request is looked at again (the hostile
mix's tail latency, bench/api_load.py --hostile)."""

from __future__ import annotations

import asyncio

from api import streams


def test_a_request_is_served_between_slices_of_a_large_wake_up():
    async def scenario() -> tuple[int, int]:
        subs = [streams.Subscription() for _ in range(10 * streams.WAKE_SLICE)]
        seen: list[int] = []
        # a request's turn, queued as the hub starts handing out one event
        asyncio.get_running_loop().call_soon(lambda: seen.append(sum(s.woken.is_set() for s in subs)))
        await streams.EventHub._wake(subs)
        return seen[0], sum(s.woken.is_set() for s in subs)

    before_the_request, in_the_end = asyncio.run(scenario())
    assert in_the_end == 10 * streams.WAKE_SLICE  # every stream woken
    assert before_the_request <= streams.WAKE_SLICE  # the request did not wait for the other nine slices


def test_the_hub_hands_each_stream_its_events_in_order_and_wakes_it_once():
    async def scenario() -> list[tuple[list[int], bool]]:
        hub = streams.EventHub(0.1, 10.0, lambda e: e)
        hub._task = asyncio.get_running_loop().create_future()  # its poller "running": no database read here
        with hub.subscribe("own_a", None) as a, hub.subscribe("own_a", "job_1") as b, \
                hub.subscribe("own_b", None) as c:
            woken: dict[streams.Subscription, None] = {}
            for i in (1, 2, 3):
                sent = streams.Sent(i, "log", "{}")
                hub._hand("job", "job_1", sent, woken)
                hub._hand("owner", "own_a", sent, woken)
            assert list(woken) == [b, a] and not any(s.woken.is_set() for s in (a, b, c))  # not yet
            await hub._wake(woken)
            return [([e.id for e in s.pending], s.woken.is_set()) for s in (a, b, c)]

    assert asyncio.run(scenario()) == [([1, 2, 3], True), ([1, 2, 3], True), ([], False)]
