"""The API process dies while a client follows a job's SSE stream; a client that reconnects with
Last-Event-ID (as EventSource does) gets every event exactly once, in order, up to `end`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.api.fixtures import start_worker, stop_process, wait_for
from tests.jobs import create, events_of, job_of


def sse_events(response: httpx.Response) -> Iterator[dict]:
    """Complete events only: one cut off by the crash is not yielded (the client never saw its id)."""
    cur: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in cur:
                yield {**json.loads(cur["data"]), "sse_id": int(cur["id"]), "event": cur["event"]}
            cur = {}
        elif not line.startswith(":"):  # ": ping" keep-alive comments
            key, _, value = line.partition(":")
            cur[key] = value.removeprefix(" ")


@pytest.mark.timeout(300)
def test_api_restart_during_sse_stream_reconnect_with_last_event_id_misses_nothing(faults, api, http, auth,
                                                                                  dataset):
    worker = start_worker({}, faults.logs / "worker-sse.log")
    stream = {**auth, "Accept": "text/event-stream"}
    timeout = httpx.Timeout(10, read=120)
    try:
        job_id = create(http, auth, dataset, steps=30)
        seen: list[dict] = []
        with httpx.stream("GET", f"{api.url}/v1/jobs/{job_id}/events", headers=stream, timeout=timeout) as r:
            assert r.status_code == 200
            events = sse_events(r)
            for ev in events:
                seen.append(ev)
                if ev["event"] == "metric":  # training is under way: now the API dies mid-stream
                    break
            api.kill()
            try:
                for ev in events:  # whatever the server had sent before it died
                    seen.append(ev)
            except httpx.HTTPError:
                pass  # the connection was cut mid-stream
        assert seen[-1]["event"] != "end" and job_is_running(job_id)
        api.start()
        with httpx.stream("GET", f"{api.url}/v1/jobs/{job_id}/events", timeout=timeout,
                          headers={**stream, "Last-Event-ID": str(seen[-1]["sse_id"])}) as r:
            assert r.status_code == 200
            seen.extend(sse_events(r))  # until the server closes after `end`
        wait_for(lambda: job_of(http, auth, job_id)["status"] == "succeeded", 60, 0.5, "the job to succeed")
    finally:
        stop_process(worker, timeout=30)
    ids = [e["sse_id"] for e in seen]
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    assert ids == [int(e["id"]) for e in events_of(http, auth, job_id)], "the reconnect missed events"
    assert all(e["sse_id"] == int(e["id"]) for e in seen)  # the SSE id is the event's database id
    assert seen[-1]["event"] == "end" and seen[-1]["data"]["status"] == "succeeded"


def job_is_running(job_id: str) -> bool:
    """Read straight from the database: the API is down at this point."""
    from service.db import session_scope
    from service.models import Job

    with session_scope() as s:
        return s.get(Job, job_id).status == "running"
