"""Private servers the fault tests may stop and start: a PostgreSQL cluster, a Redis without persistence and
the API under uvicorn, each on its own free port, so restarting them disturbs no other test or helper.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psycopg
import redis

from tests.api.fixtures import ROOT, stop_process, wait_for
from tests.helpers import free_port


def _pg_bin(name: str) -> str:
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    found = shutil.which(name) or (versions[-1] if versions else None)
    if found is None:
        raise RuntimeError(f"{name} not found on PATH or under /usr/lib/postgresql/*/bin: install PostgreSQL")
    return found


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` on a temporary data directory, trust auth, listening on 127.0.0.1:<port>.

    PostgreSQL refuses to run as root; as root the cluster belongs to the ``postgres`` user (``runuser``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="st-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", opts,
                  "-w", "-t", "60", "start")
        wait_for(self.ready, 30, 0.1, "postgres to accept connections")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a real restart or failover."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def ready(self) -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                 connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def destroy(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """``redis-server`` with no persistence (no RDB, no AOF): a restart loses every queued message."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log_dir / "redis.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.log.parent)],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
        wait_for(self.ready, 30, 0.1, "redis to answer")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def ready(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_connect_timeout=1) as r:
                return bool(r.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class ApiServer:
    """The API as production runs it: a uvicorn process (restartable on the same port)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env, self.log = env, log_dir / "api.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env={**os.environ, **self.env}, start_new_session=True,
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait_for(self.healthy, 60, 0.2, "the API to serve")

    def kill(self) -> None:
        """A crash, not a shutdown: open streams are cut without a goodbye."""
        if self.proc is not None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
