"""The broker side the api needs: send "look at job X" after the row is committed. Shared Celery settings
live here too, so the worker (which imports api, never the reverse) configures itself the same way."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery

from service.settings import Settings, get_settings

TASK_RUN_JOB = "sparsetune.run_job"
TASK_MERGE_JOB = "sparsetune.merge_job"
log = logging.getLogger("sparsetune.queue")


def celery_config(settings: Settings) -> dict[str, Any]:
    """JSON only (no pickle), late acks, prefetch 1: a redelivered message is a no-op or a resume."""
    return {
        "broker_url": settings.broker,
        "broker_transport_options": settings.broker_transport_options(),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_always_eager": False,
        "task_default_queue": settings.queue_name,
        "worker_hijack_root_logger": False,
        "broker_connection_timeout": 5,
    }


@lru_cache
def producer() -> Celery:
    app = Celery("sparsetune-api", set_as_current=False)
    app.conf.update(celery_config(get_settings()))
    return app


def send(task: str, job_id: str, queue: str) -> bool:
    """Best effort: if the broker is down the reconciler re-enqueues queued jobs later."""
    try:
        producer().send_task(task, args=[job_id], queue=queue)
        return True
    except Exception:  # noqa: BLE001 - the job row is already committed; the reconciler catches up
        log.warning("enqueue failed for %s; the reconciler will retry", job_id, exc_info=True)
        return False


def queue_depth(queue: str | None = None) -> int | None:
    """Messages waiting in a broker queue (not those being worked on), or None if it cannot tell."""
    try:
        with producer().connection_for_read() as conn:
            ok = conn.default_channel.queue_declare(queue=queue or get_settings().queue_name, passive=True)
            return int(ok.message_count)
    except Exception:  # noqa: BLE001 - unknown is a valid answer; callers fall back to re-sending
        return None


def enqueue(job_id: str, queue: str | None = None) -> bool:
    """Send the job to ``queue``, or to the queue of the pool it is routed to now (see service.pools)."""
    from service import pools

    return send(TASK_RUN_JOB, job_id, queue or pools.queue_of(job_id))


def enqueue_merge(job_id: str) -> bool:
    from service import pools

    return send(TASK_MERGE_JOB, job_id, pools.queue_of(job_id))
