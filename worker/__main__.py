"""``python -m worker``: one Celery worker, solo pool (training runs in a spawned child per job).

It consumes the queue of its pool (SPARSETUNE_WORKER_POOL, else the largest configured pool). Run one per
GPU with CUDA_VISIBLE_DEVICES set; workers on other machines join by pointing at the same database and broker.
"""

from __future__ import annotations

import os
import sys

from service import pools, private
from service.parent import exit_with_parent
from service.settings import get_settings
from worker.celery_app import app


def main(argv: list[str] | None = None) -> None:
    private.restrict_umask()  # work folders hold copies of users' data; queue messages and models too: 0600
    settings = get_settings()
    try:
        pool = pools.worker_pool(settings)
    except ValueError as exc:
        raise SystemExit(f"sparsetune worker: {exc}") from None
    if os.environ.get("SPARSETUNE_EXIT_WITH_PARENT") == "1":
        exit_with_parent()  # started by `sparsetune up`: shut down warmly if `up` dies without stopping us
    args = ["worker", "--pool", "solo", "--concurrency", "1", "-Q", pool.queue,
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle", *(argv or [])]
    app.worker_main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
