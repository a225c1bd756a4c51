"""Job events: a list, or a live SSE stream read from the events table (ids are the SSE ids)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Header, Request, Response
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import streams
from api.deps import CurrentOwner, JobDep, SessionDep
from api.errors import APIError
from api.routes.common import AfterQuery, LimitQuery, errors
from api.schemas import EventPublic, ListPage
from service.db import session_factory
from service.models import FINISHED, Event, Job
from service.security import bearer_token
from service.settings import get_settings
from service.states import EventType

router = APIRouter(tags=["events"])
log = logging.getLogger("sparsetune.api")
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)]
Accept = Annotated[str | None, Header()]


def _last_id(value: str | None, param: str = "Last-Event-ID") -> int:
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit() and len(value) <= 18):  # a bigint; "²".isdigit() is True
        raise APIError(422, f"{param}: must be an event id", param=param)
    return int(value)


SETTLE_SECONDS = 10.0  # far longer than an event-writing transaction stays open after its insert
BATCH = 500


def _fetch(job_id: str | None, owner_id: str, after: int) -> tuple[list[dict], int] | None:
    """Events after ``after`` and the position to read from next; None when the job was deleted meanwhile (the
    stream ends). A job's events come from one writer at a time, in id order; an owner's stream mixes jobs,
    so it reads only up to :func:`settled_upto`."""
    with session_factory()() as session:
        if job_id:
            if session.get(Job, job_id) is None:
                return None
            stmt = select(Event).where(Event.job_id == job_id, Event.id > after).order_by(Event.id).limit(BATCH)
            events = [_payload(e) for e in session.scalars(stmt)]
            return events, events[-1].id if events else after
        upto = settled_upto(session, after)
        stmt = (select(Event).where(Event.owner_id == owner_id, Event.id > after, Event.id <= upto)
                .order_by(Event.id).limit(BATCH))
        events = [_payload(e) for e in session.scalars(stmt)]
        return events, events[-1].id if len(events) == BATCH else upto


def _payload(e: Event) -> streams.Sent:
    """An event as its SSE frame carries it (``data`` is the list's EventPublic as JSON), serialised once
    however many streams it goes to."""
    return streams.Sent(e.id, e.type, json.dumps(EventPublic.model_validate(e).model_dump()))


def settled_upto(session: Session, after: int) -> int:
    """The highest event id up to which every id is settled: its event is committed, or it is a gap before an
    event written more than SETTLE_SECONDS ago (a rolled-back insert or a deleted job leaves a gap for good).

    Ids come from one sequence shared by every job, and two jobs' writers can commit out of id order: had the
    stream moved past id 11 while the transaction holding id 10 was still open, it would never send 10. So it
    stops before a fresh gap until the gap fills or grows old. (created_at is the writer's clock: skew between
    machines shortens or lengthens the wait, it does not lose an event unless it exceeds SETTLE_SECONDS.)"""
    rows = session.execute(select(Event.id, Event.created_at).where(Event.id > after).order_by(Event.id).limit(BATCH))
    return streams.settled_through(after, rows, SETTLE_SECONDS, time.time())


async def _catch_up(job_id: str | None, owner_id: str, after: int) -> AsyncIterator[streams.Sent | int]:
    """Events after ``after`` from the database, then the position read through (an int; -1 when the job was
    deleted). A database outage or a full pool is waited out, not raised: the stream stays open."""
    while True:
        try:
            fetched = await to_thread.run_sync(_fetch, job_id, owner_id, after)
        except (DBAPIError, PoolTimeout) as exc:
            log.warning("event stream: catch-up read failed (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(1.0)
            continue
        if fetched is None:
            yield -1
            return
        events, position = fetched
        for ev in events:
            yield ev
        after = max(after, position)
        if len(events) < BATCH:  # read through: what comes next, the hub hands over
            yield after
            return


async def _stream(request: Request, job_id: str | None, owner_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    """Each new event once, in order, as an SSE frame; a job's stream ends with its `end` event."""
    settings = get_settings()
    with streams.hub(settings.sse_poll_seconds, SETTLE_SECONDS, _payload).subscribe(owner_id, job_id) as sub:
        async for ev in _new_events(request, sub, job_id, owner_id, after):
            yield _sse(ev)
            if job_id and ev.type == EventType.end:
                return  # the job is over: close, and a reconnect gets 204


async def _new_events(request: Request, sub: streams.Subscription, job_id: str | None, owner_id: str,
                      after: int) -> AsyncIterator[streams.Sent]:
    """Catch up from the database (at once, after an overflow, and every REFETCH_SECONDS or so), else take what
    the event hub hands over, holding no database connection; ids at or below the position are skipped, so the
    two sources may overlap. The key is re-checked every ``SPARSETUNE_KEY_CHECK_SECONDS``: a revoked key's
    stream closes within that. A client that goes away cancels this loop (EventSourceResponse listens for the
    disconnect), so the loop does not ask: with 500 streams open, asking on every wake-up cost an API process
    about a tenth of its CPU (bench/api_load.py --hostile)."""
    settings = get_settings()
    keys, key = request.app.state.keys, bearer_token(request.scope) or ""
    refetch_at = 0.0  # catch up first
    while True:
        if sub.overflowed or time.monotonic() >= refetch_at:
            sub.overflowed = False
            async for item in _catch_up(job_id, owner_id, after):
                if isinstance(item, int):
                    if item < 0:
                        return  # the job was deleted
                    after = max(after, item)
                else:
                    yield item
                    after = item.id
            refetch_at = time.monotonic() + streams.refetch_delay()
        sub.woken.clear()
        while sub.pending:
            ev = sub.pending.popleft()
            if ev.id > after:
                yield ev
                after = ev.id
        if sub.overflowed:  # it overflowed while we sent: catch up now
            continue
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.key_check_seconds):  # no task of its own, unlike wait_for
                await sub.woken.wait()
        if await keys.recheck(key) is None:
            return  # revoked: end the stream


def _sse(ev: streams.Sent) -> ServerSentEvent:
    return ServerSentEvent(data=ev.data, event=ev.type, id=str(ev.id))


def _wants_stream(accept: str | None) -> bool:
    return bool(accept) and "text/event-stream" in accept


@router.get("/v1/jobs/{job_id}/events", response_model=ListPage[EventPublic],
            responses={**errors(404), 200: {"content": {"text/event-stream": {}}}, 204: {"description": "finished"}})
async def list_events(request: Request, session: SessionDep, job: JobDep, accept: Accept = None,
                      last_event_id: LastEventId = None, limit: LimitQuery = 100, after: AfterQuery = None) -> Any:
    """The job's events; with Accept: text/event-stream, a live stream that ends after `end`."""
    def respond() -> Any:
        if _wants_stream(accept):
            start = _last_id(last_event_id)
            end_id = session.scalar(select(func.max(Event.id)).where(Event.job_id == job.id, Event.type == EventType.end))
            if job.status in FINISHED and end_id is not None and start >= end_id:
                return Response(status_code=204)
            session.close()  # its connection back to the pool now, not when the stream ends hours later
            return EventSourceResponse(_stream(request, job.id, job.owner_id, start), ping=10)
        stmt = select(Event).where(Event.job_id == job.id)
        if after is not None:
            stmt = stmt.where(Event.id < _last_id(after, "after"))
        rows = list(session.scalars(stmt.order_by(Event.id.desc()).limit(limit + 1)))
        return ListPage[EventPublic].of([EventPublic.model_validate(e) for e in rows[:limit]], len(rows) > limit)

    # async with one explicit thread hop: a sync route would cost a second one to validate the page
    return await to_thread.run_sync(respond)


@router.get("/v1/events", responses={**errors(), 200: {"content": {"text/event-stream": {}}}})
def stream_events(request: Request, session: SessionDep, owner: CurrentOwner,
                  last_event_id: LastEventId = None) -> EventSourceResponse:
    """A live stream of all the owner's job events (for the dashboard); starts now unless Last-Event-ID."""
    start = _last_id(last_event_id) if last_event_id else (
        session.scalar(select(func.max(Event.id)).where(Event.owner_id == owner.id)) or 0)
    session.close()  # its connection back to the pool now, not when the stream ends hours later
    return EventSourceResponse(_stream(request, None, owner.id, start), ping=10)

