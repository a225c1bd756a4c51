"""Engines and sessions: one engine per process and URL; SQLite gets its pragmas from service/sqlite_upkeep.py.
Also the one rule for riding out a database restart: which errors mean "the connection went away" and how
long a worker keeps retrying a write before it gives up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache, wraps
from typing import Any, ParamSpec, TypeVar

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service import private, sqlite_upkeep
from service.settings import get_settings

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("sparsetune.db")


POOL_TIMEOUT_SECONDS = 5  # longest wait for a pooled connection before the request is shed
IDLE_PING_SECONDS = 1.0  # a pooled connection idle this long is pinged before use


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        from pathlib import Path

        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            private.create_private_file(Path(path))  # before SQLite creates it 0644
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", sqlite_upkeep.apply_pragmas)
        return engine
    # pool_timeout: under overload a request waits at most this long for a connection, then gets a 503 it can
    # retry (load shedding) instead of queueing for the default 30 s; a connect timeout keeps a request from
    # hanging on an unreachable host
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_timeout=POOL_TIMEOUT_SECONDS,
                           connect_args={"connect_timeout": 5}, json_deserializer=_json_loads)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _json_loads(data: str | bytes) -> Any:
    """JSON columns (a job list decodes six per row) through orjson; json.loads for what orjson refuses, such
    as integers beyond 64 bits that Postgres stores without complaint."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _note_checkin(_dbapi_conn, record) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_conn, record, _proxy) -> None:
    """Ping a connection that sat idle in the pool, so one left dead by a database restart is replaced before a
    request uses it (the api then recovers by itself).

    Not ``pool_pre_ping``: that pings on every checkout, a round trip per request that cost about a fifth of
    the api's CPU under load (bench/api_load.py). A busy pool's connections are never idle that long, and if the
    database goes away under load the first failed statement invalidates the whole pool anyway."""
    last = record.info.get("checked_in_at")
    if last is None or time.monotonic() - last < IDLE_PING_SECONDS:
        return
    try:
        dbapi_conn.execute("SELECT 1")
        dbapi_conn.rollback()
    except Exception as exc:  # noqa: BLE001 - any failure means: throw this connection away, get a new one
        raise DisconnectionError("idle connection failed its ping") from exc



@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    return _engine_for(get_settings().db_url)


def session_factory() -> sessionmaker[Session]:
    return _sessionmaker_for(get_engine())


@lru_cache
def _sessionmaker_for(engine: Engine) -> sessionmaker[Session]:
    """One per engine: building a sessionmaker defines a Session subclass, about 0.13 ms a time."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error (nothing half-written)."""
    session = session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engines() -> None:
    """Forget cached engines (tests switch databases; a spawned child starts fresh anyway)."""
    _engine_for.cache_clear()
    _sessionmaker_for.cache_clear()


def is_disconnect(exc: BaseException) -> bool:
    """The database went away (restart, failover, network) or refuses connections for now: worth retrying.
    A bad statement or a constraint violation is not."""
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated
                                            or isinstance(exc, OperationalError | InterfaceError))


def retry_on_disconnect(fn: Callable[[], T], what: str, seconds: float | None = None) -> T:
    """Run ``fn`` (one whole transaction) again with backoff while the database is away, for up to ``seconds``
    (default: the lease, since past it another worker may take the job anyway); then re-raise.

    Retrying is safe because ``fn`` opens its own session: a transaction cut by the outage was rolled back,
    and its fencing-token check runs again on each attempt."""
    budget = get_settings().lease_seconds if seconds is None else seconds
    deadline, delay = time.monotonic() + budget, 0.1
    while True:
        try:
            return fn()
        except DBAPIError as exc:
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable during %s; retrying in %.1fs", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def retried(what: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator form of :func:`retry_on_disconnect` for a function that is one whole transaction."""
    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        @wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return retry_on_disconnect(lambda: fn(*args, **kwargs), what)
        return call
    return wrap
