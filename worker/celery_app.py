"""The Celery app and its configuration (shared with the api's producer in api.queue): JSON only, late acks,
prefetch 1, explicit task names, never eager. Each worker also runs the reconciler thread."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from api import logs
from api.queue import celery_config
from api.settings import get_settings

settings = get_settings()
logs.configure(settings.log_level)
app = Celery("sparsetune", include=["worker.tasks"])
app.conf.update(celery_config(settings))


@worker_ready.connect
def _start_reconciler(**_: object) -> None:
    from worker import reconciler

    reconciler.start()


@worker_shutdown.connect
def _stop_reconciler(**_: object) -> None:
    from worker import reconciler

    reconciler.stop()
