"""One event poller per API process, carrying the events themselves to the live streams (api/routes/events.py).

A stream used to poll the database itself twice a second: 500 open streams meant 1,000 queries a second. Then
a hub woke the streams that had news and each read its own events: one event of a busy owner still meant one
query per open stream of that owner, all at once (500 queries, a pool exhausted, the rest of the API shed).
Now the hub reads the new events once per ``SPARSETUNE_SSE_POLL_SECONDS`` (one short query, only while some
stream is open) and hands each one, already serialised, to the streams it belongs to. A stream reads the
database only to catch up: when it opens (from Last-Event-ID), when it fell too far behind (its queue
overflowed), and once every ``REFETCH_SECONDS`` or so as a safety net (a deleted job ends its stream then).

What is handed to whom keeps the streams' ordering guarantees: a job's stream gets an event as soon as it
appears (one writer per job, in id order); an owner's stream only once the event is *settled* (every lower
id committed or an old gap, see :func:`api.routes.events.settled_upto`), so an event committed late below one
already seen still reaches its owner's stream. A stream skips what it already sent (ids at or below its
position), so a catch-up read and the hub may overlap without sending an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from anyio import to_thread
from sqlalchemy import func, select

from service.db import session_factory
from service.models import Event

log = logging.getLogger("sparsetune.api")
BATCH = 500
REFETCH_SECONDS = 30.0  # the safety net's period, spread over 1 to 2 times this so streams do not read together
MAX_PENDING = 2000  # events queued for one stream; past it the stream catches up from the database instead
# streams woken per turn of the event loop: one event of an owner with 500 open streams would otherwise run
# 500 sends (tens of ms) before the loop looks at any request again (the hostile mix's p99, bench/api_load.py)
WAKE_SLICE = 50


class Sent(NamedTuple):
    """One event as the streams send it: its id, its type and its ``data`` JSON, serialised once."""

    id: int
    type: str
    data: str


def refetch_delay() -> float:
    return REFETCH_SECONDS * (1 + random.random())


class Subscription:
    """One stream's share of the hub: the events handed to it, in id order, and a flag set with each."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()
        self.pending: deque[Sent] = deque()
        self.overflowed = False  # the queue was dropped: catch up from the database

    def push(self, payload: Sent) -> None:
        """Queue the event; the hub wakes the stream after (:meth:`EventHub._wake`)."""
        if len(self.pending) >= MAX_PENDING:
            self.pending.clear()
            self.overflowed = True
        else:
            self.pending.append(payload)


class EventHub:
    def __init__(self, poll_seconds: float, settle_seconds: float,
                 payload: Callable[[Event], Sent]) -> None:
        self.poll, self.settle, self.payload = poll_seconds, settle_seconds, payload
        self._loop = asyncio.get_running_loop()
        self._subs: dict[tuple[str, str], set[Subscription]] = {}
        self._task: asyncio.Task | None = None
        self._cursor: int | None = None  # every event up to here is settled and has woken its streams
        self._woken: set[int] = set()  # ids above the cursor whose job streams were already woken
        self.reads = 0  # queries made (tests and benchmarks look)

    @contextlib.contextmanager
    def subscribe(self, owner_id: str, job_id: str | None) -> Iterator[Subscription]:
        """The stream's subscription: events of the job (or the owner) from now on, as the hub reads them."""
        key = ("job", job_id) if job_id else ("owner", owner_id)
        woken = Subscription()
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

    def _hand(self, kind: str, ident: str | None, payload: Sent, woken: dict[Subscription, None]) -> None:
        for sub in self._subs.get((kind, ident or ""), ()):
            sub.push(payload)
            woken[sub] = None

    @staticmethod
    async def _wake(subs: Iterable[Subscription]) -> None:
        """Wake the streams with news ``WAKE_SLICE`` at a time, a turn of the event loop between slices, so
        the requests that arrived meanwhile are served between them."""
        for i, sub in enumerate(subs):
            if i and i % WAKE_SLICE == 0:
                await asyncio.sleep(0)
            sub.woken.set()

    async def _run(self) -> None:
        while self._subs:
            try:
                cursor, rows, upto = await to_thread.run_sync(self._read, self._cursor)
            except Exception as exc:  # noqa: BLE001 - a database outage: streams keep their safety refetch
                log.warning("event hub: read failed (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(max(self.poll, 1.0))
                continue
            self.reads += 1
            woken: dict[Subscription, None] = {}  # in order, each stream once
            for event_id, owner_id, job_id, payload in rows:
                if event_id not in self._woken:
                    self._hand("job", job_id, payload, woken)
                    self._woken.add(event_id)
                if event_id <= upto:
                    self._hand("owner", owner_id, payload, woken)
            self._woken = {i for i in self._woken if i > upto}
            self._cursor = upto
            await self._wake(woken)
            if not (len(rows) == BATCH and upto > cursor):  # a full batch that moved: read on at once
                await asyncio.sleep(self.poll)
        self._cursor, self._woken = None, set()  # no stream left: the next one starts from the newest events

    def _read(self, cursor: int | None) -> tuple[int, list, int]:
        """(the cursor read from, (id, owner, job, payload) after it, the new settled cursor): one short
        session; each event serialised once, for every stream it goes to."""
        with session_factory()() as session:
            if cursor is None:
                cursor = max(0, (session.scalar(select(func.max(Event.id))) or 0) - BATCH)
            events = list(session.scalars(select(Event).where(Event.id > cursor).order_by(Event.id).limit(BATCH)))
            rows = [(e.id, e.owner_id, e.job_id, self.payload(e)) for e in events]
            stamps = [(e.id, e.created_at) for e in events]
        upto = settled_through(cursor, stamps, self.settle, time.time())
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


def hub(poll_seconds: float, settle_seconds: float, payload: Callable[[Event], Sent]) -> EventHub:
    """This process's hub (one per event loop: uvicorn has one; each test client its own)."""
    global _hub
    if _hub is None or _hub._loop is not asyncio.get_running_loop():
        _hub = EventHub(poll_seconds, settle_seconds, payload)
    _hub.poll, _hub.settle = poll_seconds, settle_seconds
    return _hub
