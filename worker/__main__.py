"""``python -m worker``: one Celery worker, solo pool (training runs in a spawned child per job)."""

from __future__ import annotations

import sys

from api.settings import get_settings
from worker.celery_app import app


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    args = ["worker", "--pool", "solo", "--concurrency", "1", "-Q", settings.queue_name,
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle", *(argv or [])]
    app.worker_main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
