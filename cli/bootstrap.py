"""What `sparsetune up` does: migrate (alembic upgrade head, never create_all), create a first key if none
exists, start one worker and one inference process as subprocesses (the api imports neither) under a supervisor
that restarts them if they die (cli/supervisor.py), and serve until stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from cli.supervisor import Supervisor, stop_process_group  # noqa: F401 - stop_process_group: used by tests
from service import private, sqlite_upkeep
from service.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


def ensure_first_key() -> str | None:
    """A key for a fresh install; None if any key exists. The embedded default keeps it under home (0600)."""
    from service.db import session_scope
    from service.models import ApiKey
    from service.security import create_key

    with session_scope() as s:
        if s.scalar(select(func.count()).select_from(ApiKey)):
            return None
        _, key = create_key(s, "first key")
    settings = get_settings()
    if settings.embedded:
        private.write_private(settings.home / "api_key", key + "\n")
    return key


def start_worker() -> subprocess.Popen:
    env = {**os.environ, "SPARSETUNE_EXIT_WITH_PARENT": "1"}
    # the worker logs to our stderr: stdout carries only the key line and the ready line, for scripts
    return subprocess.Popen([sys.executable, "-m", "worker"], env=env, start_new_session=True, stdout=sys.stderr)


def worker_exited(pid: int, started_at: float) -> None:
    """The supervisor saw the worker die and killed its group: its jobs need not wait out their lease (they
    are sent again now, or failed after their last attempt), and its work folders (users' data) go."""
    from service import reconcile, workdirs

    reconcile.release_worker(socket.gethostname(), pid, started_at)
    workdirs.sweep()


def start_inference() -> subprocess.Popen:
    """The inference process (`sparsetune serve`): a free port of its own, found by the API through its
    heartbeat; it logs to our stderr like the worker."""
    env = {**os.environ, "SPARSETUNE_EXIT_WITH_PARENT": "1"}
    return subprocess.Popen([sys.executable, "-m", "inference"], env=env, start_new_session=True, stdout=sys.stderr)


def inference_exited(pid: int, started_at: float) -> None:
    """The supervisor saw the inference process die: mark its row lost now, so the API stops routing to it
    at once instead of after three missed heartbeats."""
    from inference.heartbeat import mark_gone

    mark_gone(socket.gethostname(), pid, started_at)


def supervised_worker() -> Supervisor:
    """The worker, and the inference process unless SPARSETUNE_UP_INFERENCE is false, each restarted if it dies."""
    settings = get_settings()
    supervisor = Supervisor(settings.restart_backoff_seconds, settings.restart_backoff_max_seconds)
    supervisor.add("worker", start_worker, worker_exited)
    if settings.up_inference:
        supervisor.add("inference", start_inference, inference_exited)
    return supervisor


def serve(host: str, port: int) -> int:
    import uvicorn

    from service.db import get_engine

    settings = get_settings()
    private.secure_home(settings.home)  # and a umask of 0o077 for all that `up` and its processes create
    os.environ.setdefault("SPARSETUNE_HOME", str(settings.home))
    migrate()
    sqlite_upkeep.upkeep_at_start(get_engine())  # SQLite: made incremental once, free pages handed back
    key = ensure_first_key()
    settings.inference_secret()  # made once now (if unset), before the API and the inference process read it
    if key:
        print(f"SPARSETUNE_API_KEY={key}", flush=True)
    supervisor = supervised_worker()
    supervisor.start()
    server = uvicorn.Server(uvicorn.Config("api.main:app", host=host, port=port, log_level="warning",
                                           access_log=False, http="api.server:HttpToolsProtocol"))

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            print(f"ready on http://{host}:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal into the handler it found:
    # make that a no-op so the worker is stopped below and `up` exits 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        supervisor.stop()
    return 0
