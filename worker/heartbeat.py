"""Each worker process says it is alive: host, pool, device and memory, current job, every few seconds.

The row is what ``GET /v1/workers`` lists and what routing reads (a pool with no recent heartbeat has no
live worker, so the reconciler moves its jobs to a larger pool that fits). The beat runs in a thread so a
long training job does not silence it; a worker killed outright simply stops beating and is shown as lost.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

from service import pools
from service.db import session_scope
from service.devices import detect_device
from service.models import Worker
from service.periodic import Periodic
from service.settings import get_settings
from service.states import WorkerKind, WorkerStatus

log = logging.getLogger("sparsetune.heartbeat")
WORKER_ID = f"wk_{socket.gethostname()[:40]}_{os.getpid()}_{secrets.token_hex(3)}"[:64]
_current_job: str | None = None


def set_current_job(job_id: str | None) -> None:
    """Called by the task around a run; the next beat (sent at once) reports it."""
    global _current_job
    _current_job = job_id
    try:
        beat()
    except Exception:  # noqa: BLE001 - the periodic beat will catch up; a job must not fail over this
        log.warning("heartbeat failed", exc_info=True)


_device: tuple[str, int | None] | None = None


def beat(status: WorkerStatus | None = None) -> None:
    """Upsert this worker's row."""
    global _device
    if _device is None:
        _device = detect_device(get_settings().child_memory_bytes)  # the training child's cap, if any
    pool = pools.worker_pool()
    now = time.time()
    with session_scope() as s:
        row = s.get(Worker, WORKER_ID)
        if row is None:
            row = Worker(id=WORKER_ID, host=socket.gethostname(), pid=os.getpid(), started_at=now)
            s.add(row)
        row.kind, row.pool, row.queue = WorkerKind.trainer, pool.name, pool.queue
        row.device, row.device_memory = _device
        row.current_job_id = _current_job
        row.status = status or (WorkerStatus.busy if _current_job else WorkerStatus.idle)
        row.last_seen_at = now


_periodic = Periodic("heartbeat", lambda: beat(), lambda: get_settings().heartbeat_seconds)


def start() -> None:
    beat()
    _periodic.start()


def stop() -> None:
    """A warm shutdown says so, so the listing tells a stopped worker from a lost one."""
    _periodic.stop()
    try:
        beat(WorkerStatus.stopped)
    except Exception:  # noqa: BLE001 - shutting down anyway
        log.warning("final heartbeat failed", exc_info=True)
