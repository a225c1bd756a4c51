"""The Celery app and its configuration (shared with the api's producer in service.queue): JSON only, late acks,
prefetch 1, explicit task names, never eager. Each worker also runs the reconciler, heartbeat and webhook
delivery threads."""

from __future__ import annotations

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_ready, worker_shutdown

from service import logs
from service.queue import celery_config
from service.settings import get_settings

settings = get_settings()
logs.configure(settings.log_level)
app = Celery("sparsetune", include=["worker.tasks"])
app.conf.update(celery_config(settings))


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_: object) -> None:
    """Celery's own log lines in the same one-JSON-object-a-line shape as ours."""
    for handler in logger.handlers:
        handler.setFormatter(logs.JsonFormatter())


@worker_ready.connect
def _start_reconciler(**_: object) -> None:
    from worker import heartbeat, reconciler, webhooks

    heartbeat.start()
    reconciler.start()
    webhooks.start()  # the outbox's delivery loop: worker processes send webhooks, never the API


@worker_shutdown.connect
def _stop_reconciler(**_: object) -> None:
    from worker import heartbeat, reconciler, webhooks

    webhooks.stop()
    reconciler.stop()
    heartbeat.stop()
