"""The worker fleet as the heartbeats describe it: trainers and inference processes (``kind``), host, pool,
device, status, the job in hand, the models an inference process holds."""

from __future__ import annotations

import time

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import CurrentOwner, SessionDep
from api.routes.common import errors
from api.schemas import ListPage, WorkerPublic
from service import pools
from service.models import Job, Worker
from service.settings import get_settings
from service.states import WorkerKind, WorkerStatus

router = APIRouter(prefix="/v1/workers", tags=["workers"])
SHOWN_FOR = 24 * 3600  # stopped or lost workers stay listed this long, then drop off


@router.get("", response_model=ListPage[WorkerPublic], responses=errors())
def list_workers(session: SessionDep, owner: CurrentOwner) -> ListPage[WorkerPublic]:
    """Workers seen in the last day, newest first. Another owner's job in hand shows only as ``busy``."""
    now = time.time()
    lost_after = 3 * get_settings().heartbeat_seconds
    rows = session.scalars(select(Worker).where(Worker.last_seen_at >= now - SHOWN_FOR)
                           .order_by(Worker.started_at.desc(), Worker.id.desc()).limit(500)).all()
    job_ids = {w.current_job_id for w in rows if w.current_job_id}
    mine = set(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.owner_id == owner.id))) if job_ids else set()
    memory = {p.name: p.memory for p in pools.configured()}
    return ListPage[WorkerPublic].of([_public(w, now - lost_after, memory, mine) for w in rows])


def _public(w: Worker, lost_before: float, memory: dict[str, int | None], mine: set[str]) -> WorkerPublic:
    """A worker as the caller may see it: ``lost`` once its heartbeat is older than ``lost_before`` (unless it
    said it stopped), its pool's promised memory, and the job in hand only when it is the caller's own."""
    stopped = w.status == WorkerStatus.stopped
    return WorkerPublic(id=w.id, host=w.host, pid=w.pid, pool=w.pool, pool_memory=memory.get(w.pool),
                        device=w.device, device_memory=w.device_memory,
                        status=w.status if stopped or w.last_seen_at >= lost_before else WorkerStatus.lost,
                        current_job=w.current_job_id if w.current_job_id in mine else None,
                        started_at=w.started_at, last_seen_at=w.last_seen_at,
                        kind=w.kind or WorkerKind.trainer, models=list(w.models or []))
