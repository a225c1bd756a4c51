"""Which inference process serves a request, and the secret the API presents to it.

Inference processes heartbeat into the ``workers`` table like trainers (``kind`` inference) and say where they
listen (``address``), which base models they hold (``models``) and how many requests they have in hand
(``load``). A request goes first to a live process that already holds its base model (no load from disk),
the least loaded of those, else to the least loaded live process; the API tries them in this order and moves
on when one cannot be reached (it died since its last heartbeat). Live means: a heartbeat within three
intervals, not stopped or lost, and an address.

Torch-free, and free of HTTP too: the API does the forwarding (api/upstream.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Worker
from service.settings import Settings, get_settings
from service.states import GONE, WorkerKind


@dataclass(frozen=True)
class Endpoint:
    """One live inference process as its last heartbeat described it."""

    id: str
    address: str  # base URL, e.g. http://127.0.0.1:8123
    load: int
    holds: bool  # already holds the request's base model


def live_endpoints(session: Session, base: str, settings: Settings | None = None) -> list[Endpoint]:
    """Live inference processes in the order to try them: holders of ``base`` first, each group least
    loaded first (then the most recently seen)."""
    settings = settings or get_settings()
    since = time.time() - 3 * settings.heartbeat_seconds
    rows = session.scalars(select(Worker).where(Worker.kind == WorkerKind.inference, Worker.status.not_in(GONE),
                                                Worker.last_seen_at >= since, Worker.address.is_not(None))
                           .order_by(Worker.last_seen_at.desc())).all()
    found = [Endpoint(w.id, w.address.rstrip("/"), int(w.load or 0), base in (w.models or []))
             for w in rows if w.address]
    return sorted(found, key=lambda e: (not e.holds, e.load))  # stable: ties keep the freshest first


def internal_token(settings: Settings | None = None) -> str:
    """The bearer token inference processes accept (``Settings.inference_secret``: SPARSETUNE_INFERENCE_TOKEN,
    else the secret shared through ``$SPARSETUNE_HOME/inference_token``)."""
    return (settings or get_settings()).inference_secret()
