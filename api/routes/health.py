"""Liveness, readiness (database and broker reachable) and Prometheus metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select, text

from api.errors import APIError
from api.schemas import ErrorResponse, HealthPublic, ReadyPublic
from service import pools
from service.db import get_engine, session_factory
from service.models import Job, JobStatus
from service.queue import producer

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic)
def read_health() -> HealthPublic:
    """The process is up."""
    return HealthPublic(status="ok")


@router.get("/readyz", response_model=ReadyPublic,
            responses={503: {"model": ErrorResponse, "description": "database or broker unreachable"}})
def read_ready() -> ReadyPublic:
    """The database and the broker are reachable (503 if not); ``workers`` says whether any pool has a live
    worker (a recent heartbeat), which readiness does not require: jobs queue until one starts."""
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        with session_factory()() as session:
            live = pools.live_pools(session) & {p.name for p in pools.configured()}
    except Exception as exc:  # noqa: BLE001
        raise APIError(503, f"database unreachable: {exc.__class__.__name__}") from None
    try:
        with producer().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # noqa: BLE001
        raise APIError(503, f"broker unreachable: {exc.__class__.__name__}") from None
    return ReadyPublic(status="ok", database="ok", broker="ok", workers="ok" if live else "none_live")


class JobCollector:
    """Read at scrape time from the database, which every worker writes: one truth for all processes."""

    def collect(self):
        by_status = GaugeMetricFamily("sparsetune_jobs", "Jobs by status", labels=["status"])
        depth = GaugeMetricFamily("sparsetune_queue_depth", "Jobs waiting to start")
        # by method and pool, never by job id: /metrics needs no key, so it must not list anyone's jobs
        step = GaugeMetricFamily("sparsetune_step_seconds", "Mean seconds per training step of running jobs",
                                 labels=["method", "pool"])
        with session_factory()() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            running = session.execute(select(Job.method, Job.pool, Job.started_at, Job.steps_completed)
                                      .where(Job.status == JobStatus.running)).all()
        for st in JobStatus:
            by_status.add_metric([st.value], counts.get(st, 0))
        depth.add_metric([], counts.get(JobStatus.queued, 0))
        now = time.time()
        per: dict[tuple[str, str], list[float]] = {}
        for method, pool, started, steps in running:
            if started and steps:
                per.setdefault((method, pool or ""), []).append((now - started) / steps)
        for labels, values in sorted(per.items()):
            step.add_metric(list(labels), sum(values) / len(values))
        yield from (by_status, depth, step)


_registry = CollectorRegistry()
_registry.register(JobCollector())


@router.get("/metrics", response_class=Response, responses={503: {"description": "database unreachable"}})
def read_metrics() -> Response:
    """Prometheus metrics: jobs by status, queue depth, step times."""
    return Response(generate_latest(_registry), media_type=CONTENT_TYPE_LATEST)
