"""What `sparsetune up` does: migrate (alembic upgrade head, never create_all), create a first key if none
exists, start one worker as a subprocess (the api never imports the worker), and serve until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from api.settings import get_settings

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
    from api.db import session_scope
    from api.models import ApiKey
    from api.security import create_key

    with session_scope() as s:
        if s.scalar(select(func.count()).select_from(ApiKey)):
            return None
        _, key = create_key(s, "first key")
    settings = get_settings()
    if settings.embedded:
        path = settings.home / "api_key"
        path.write_text(key + "\n")
        path.chmod(0o600)
    return key


def start_worker() -> subprocess.Popen:
    env = {**os.environ, "SPARSETUNE_EXIT_WITH_PARENT": "1"}
    # the worker logs to our stderr: stdout carries only the key line and the ready line, for scripts
    return subprocess.Popen([sys.executable, "-m", "worker"], env=env, start_new_session=True, stdout=sys.stderr)


def stop_process_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM to the process's group, SIGKILL after ``grace`` seconds. For the worker, SIGTERM lets it hand
    its running job back (it resumes from its checkpoint next time)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def serve(host: str, port: int) -> int:
    import uvicorn

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SPARSETUNE_HOME", str(settings.home))
    migrate()
    key = ensure_first_key()
    if key:
        print(f"SPARSETUNE_API_KEY={key}", flush=True)
    worker = start_worker()
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
        stop_process_group(worker)
    return 0
