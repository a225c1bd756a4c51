"""The inference process says it is alive, where the API reaches it and what it holds, every few seconds.

Its row in ``workers`` (``kind`` inference, pool ``inference``) is what ``GET /v1/workers`` lists and what the
API routes by: a live process that already holds the request's base model, else the least loaded one. The
beat runs in a thread so a long generation does not silence it; a process killed outright stops beating and
is shown as lost (and `sparsetune up` marks it lost at once: :func:`mark_gone`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

from sqlalchemy import update

from service.catalog import allowed_models
from service.db import session_scope
from service.devices import detect_device
from service.models import Worker
from service.periodic import Periodic
from service.settings import get_settings
from service.states import WorkerKind, WorkerStatus

log = logging.getLogger("sparsetune.heartbeat")
POOL = "inference"
WORKER_ID = f"in_{socket.gethostname()[:40]}_{os.getpid()}_{secrets.token_hex(3)}"[:64]


class Heartbeat:
    """Upserts this process's row: ``address`` fixed at start, ``models`` (as aliases) and ``load`` read from
    the engine at each beat (``held`` and ``load`` are the engine's ``held_models`` and ``load``)."""

    def __init__(self, address: str, held: Callable[[], list[str]], load: Callable[[], int],
                 device: tuple[str, int | None] | None = None, worker_id: str = WORKER_ID) -> None:
        self.address, self.held, self.load, self.id = address, held, load, worker_id
        self.device = device or detect_device()
        self._periodic = Periodic("heartbeat", self.beat, lambda: get_settings().heartbeat_seconds)

    def beat(self, status: WorkerStatus | None = None) -> None:
        load = int(self.load()) if status is None else 0
        now = time.time()
        with session_scope() as s:
            row = s.get(Worker, self.id)
            if row is None:
                row = Worker(id=self.id, host=socket.gethostname(), pid=os.getpid(), started_at=now)
                s.add(row)
            row.kind, row.pool, row.queue, row.address = WorkerKind.inference, POOL, "", self.address
            row.device, row.device_memory = self.device
            row.models, row.load, row.current_job_id = held_aliases(self.held()), load, None
            row.status = status or (WorkerStatus.busy if load else WorkerStatus.idle)
            row.last_seen_at = now

    def start(self) -> None:
        """The first beat now (a failure is logged: the periodic beat catches up), then one every interval."""
        try:
            self.beat()
        except Exception:  # noqa: BLE001 - e.g. the database is away for a moment; the next tick retries
            log.warning("first heartbeat failed", exc_info=True)
        self._periodic.start()

    def stop(self) -> None:
        """A warm shutdown says so, so the API stops routing here at once and the listing says stopped."""
        self._periodic.stop()
        try:
            self.beat(WorkerStatus.stopped)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.warning("final heartbeat failed", exc_info=True)


def held_aliases(sources: list[str]) -> list[str]:
    """The aliases (what requests and the API name) of the base models the engine holds by source (a folder,
    a hub id). A source no alias names any more (SPARSETUNE_MODELS changed) is left out: it serves no request,
    and a local path is not for the public listing."""
    held = set(sources)
    return sorted(alias for alias, source in allowed_models().items() if source in held)


def mark_gone(host: str, pid: int, since: float) -> int:
    """The inference process ``pid`` on ``host``, started at ``since``, is known dead (`sparsetune up` saw it
    exit): mark its row ``lost`` now, so the API stops routing to it without waiting three heartbeats. A
    process that said it stopped keeps ``stopped``. Returns the rows changed."""
    with session_scope() as s:
        result = s.execute(update(Worker).where(
            Worker.kind == WorkerKind.inference, Worker.host == host, Worker.pid == pid,
            Worker.started_at >= since - 5, Worker.status != WorkerStatus.stopped,
        ).values(status=WorkerStatus.lost, load=0))
        return result.rowcount or 0
