"""One event poller per API process, waking the live event streams (api/routes/events.py) that have news.

A stream used to poll the database itself twice a second: 500 open streams meant 1,000 queries a second,
each holding a pooled connection while it ran. Now the hub reads the events table once per
``SPARSETUNE_SSE_POLL_SECONDS`` (one short query, only while some stream is open) and wakes the streams of
the owners and jobs it saw events for; a woken stream reads its own events in one short session (the same
:func:`api.routes.events._fetch` as before, so the ordering rules are unchanged) and then waits again,
holding no connection. An idle stream costs no query at all, except its key re-check (cached per key).

What wakes whom keeps the streams' ordering guarantees: a job's stream is woken as soon as an event of the
job appears (one writer per job, in id order); an owner's stream only once the event is *settled* (every
lower id committed or an old gap, see :func:`api.routes.events.settled_upto`), so an event committed late
below one already seen still wakes its owner's stream. A stream also reads once every ``REFETCH_SECONDS``
whatever happens, a safety net (a deleted job ends its stream then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator

from anyio import to_thread
from sqlalchemy import func, select

from service.db import session_factory
from service.models import Event

log = logging.getLogger("sparsetune.api")
BATCH = 500
REFETCH_SECONDS = 30.0


class EventHub:
    def __init__(self, poll_seconds: float, settle_seconds: float) -> None:
        self.poll, self.settle = poll_seconds, settle_seconds
        self._loop = asyncio.get_running_loop()
        self._subs: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._task: asyncio.Task | None = None
        self._cursor: int | None = None  # every event up to here is settled and has woken its streams
        self._woken: set[int] = set()  # ids above the cursor whose job streams were already woken
        self.reads = 0  # queries made (tests and benchmarks look)

    @contextlib.contextmanager
    def subscribe(self, owner_id: str, job_id: str | None) -> Iterator[asyncio.Event]:
        """An event set whenever the stream may have something new to read; the caller clears it before
        each read."""
        key = ("job", job_id) if job_id else ("owner", owner_id)
        woken = asyncio.Event()
        self._subs.setdefault(key, set()).add(woken)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name="sse-event-hub")
        try:
            yield woken
        finally:
            subs = self._subs.get(key)
            if subs is not None:
                subs.discard(woken)
                if not subs:
                    del self._subs[key]

    @property
    def streams(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def _wake(self, kind: str, ident: str | None) -> None:
        for woken in self._subs.get((kind, ident or ""), ()):
            woken.set()

    async def _run(self) -> None:
        while self._subs:
            try:
                cursor, rows, upto = await to_thread.run_sync(self._read, self._cursor)
            except Exception as exc:  # noqa: BLE001 - a database outage: streams keep their safety refetch
                log.warning("event hub: read failed (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(max(self.poll, 1.0))
                continue
            self.reads += 1
            for event_id, owner_id, job_id, _ in rows:
                if event_id not in self._woken:
                    self._wake("job", job_id)
                    self._woken.add(event_id)
                if event_id <= upto:
                    self._wake("owner", owner_id)
            self._woken = {i for i in self._woken if i > upto}
            self._cursor = upto
            if not (len(rows) == BATCH and upto > cursor):  # a full batch that moved: read on at once
                await asyncio.sleep(self.poll)
        self._cursor, self._woken = None, set()  # no stream left: the next one starts from the newest events

    def _read(self, cursor: int | None) -> tuple[int, list, int]:
        """(the cursor read from, rows after it, the new settled cursor): one short session."""
        with session_factory()() as session:
            if cursor is None:
                cursor = max(0, (session.scalar(select(func.max(Event.id))) or 0) - BATCH)
            rows = list(session.execute(select(Event.id, Event.owner_id, Event.job_id, Event.created_at)
                                        .where(Event.id > cursor).order_by(Event.id).limit(BATCH)))
        upto = settled_through(cursor, ((r[0], r[3]) for r in rows), self.settle, time.time())
        return cursor, rows, upto


def settled_through(after: int, rows: Iterable[tuple[int, float]], settle_seconds: float, now: float) -> int:
    """The highest id of ``rows`` ((id, created_at) in id order, all above ``after``) up to which every id is
    settled: present, or a gap before an event older than ``settle_seconds`` (the rule and its reason:
    :func:`api.routes.events.settled_upto`)."""
    upto = after
    for event_id, created_at in rows:
        if event_id > upto + 1 and created_at > now - settle_seconds:
            break
        upto = event_id
    return upto


_hub: EventHub | None = None


def hub(poll_seconds: float, settle_seconds: float) -> EventHub:
    """This process's hub (one per event loop: uvicorn has one; each test client its own)."""
    global _hub
    if _hub is None or _hub._loop is not asyncio.get_running_loop():
        _hub = EventHub(poll_seconds, settle_seconds)
    _hub.poll, _hub.settle = poll_seconds, settle_seconds
    return _hub
