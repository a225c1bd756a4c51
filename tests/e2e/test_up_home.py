"""`sparsetune up` on a home made by an earlier version (world-readable, a database without incremental
auto-vacuum): it makes the home private, converts the database once, and everything a real job creates under
it stays private; the filesystem queue writes nothing into the working directory."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from cli.bootstrap import stop_process_group
from tests import factories, jobs
from tests.e2e.test_http import free_port
from tests.e2e.test_up_cli import BIN
from tests.helpers import read_up_banner, sqlite_with_free_pages

MIB = 1024 * 1024


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def old_home(home: Path) -> Path:
    """A home as earlier versions left it: 0755, a 0644 database made WAL-first (auto_vacuum NONE) holding
    8 MiB of free pages, and a readable file of the user's."""
    home.mkdir(mode=0o755)
    db = home / "sparsetune.db"
    sqlite_with_free_pages(db)
    db.chmod(0o644)
    (home / "notes.txt").write_text("mine")
    (home / "notes.txt").chmod(0o644)
    assert db.stat().st_size > 8 * MIB
    return db


class ModeWatch:
    """Lists the home every 0.1 s while a job runs and keeps whatever was readable or writable by others."""

    def __init__(self, home: Path) -> None:
        self.home, self.seen, self.exposed = home, set(), {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for folder, dirs, files in os.walk(self.home):
                for name in dirs + files:
                    path = Path(folder) / name
                    try:
                        bits = mode(path)
                    except FileNotFoundError:  # gone between the listing and the stat
                        continue
                    self.seen.add(str(path.relative_to(self.home)))
                    if bits & 0o077 and not path.is_symlink():
                        self.exposed[str(path)] = oct(bits)

    def __enter__(self) -> ModeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.timeout(420)
def test_up_makes_its_home_private_and_keeps_the_queue_out_of_the_working_directory(tiny_llama_dir, tmp_path):
    port, home, cwd = free_port(), tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    db = old_home(home)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "SPARSETUNE_QUEUE", "SPARSETUNE_API_KEY")}
    env.update({"SPARSETUNE_HOME": str(home), "SPARSETUNE_MODELS": json.dumps({"tiny-llama": str(tiny_llama_dir)}),
                "SPARSETUNE_CHECKPOINT_EVERY": "1", "HF_HUB_OFFLINE": "1"})
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115 - closed below
    up = subprocess.Popen([BIN, "up", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                          start_new_session=True, cwd=cwd, umask=0o022)
    try:
        key, lines = read_up_banner(up.stdout)
        assert key and lines[-1].startswith("ready on"), (lines, (tmp_path / "up.log").read_text()[-3000:])

        # at start-up: the old home made private, the database converted once and its free pages handed back
        assert mode(home) == 0o700 and mode(home / "notes.txt") == 0o600 and mode(db) == 0o600
        assert mode(home / "api_key") == 0o600
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
        assert db.stat().st_size < 4 * MIB

        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http, ModeWatch(home) as watch:
            data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(48)).encode()
            r = http.post("/v1/datasets", headers=auth, files={"file": ("train.jsonl", data)})
            assert r.status_code == 201, r.text
            job_id = jobs.create(http, auth, r.json()["id"], steps=2)
            deadline = time.time() + 300
            while (job := jobs.finished(http, auth, job_id)) is None and time.time() < deadline:
                time.sleep(0.5)
            assert job and job["status"] == "succeeded", (job, (tmp_path / "up.log").read_text()[-3000:])
        # the job's work folder (its copy of the data, its checkpoints) and the queue's files were seen, and
        # nothing under home was ever open to others
        assert any(p.startswith("work/job_") for p in watch.seen), sorted(watch.seen)
        assert any(p.startswith("broker/") for p in watch.seen), sorted(watch.seen)
        assert watch.exposed == {}
        for folder, dirs, files in os.walk(home):
            for name in dirs + files:
                path = Path(folder) / name
                assert path.is_symlink() or mode(path) & 0o077 == 0, (path, oct(mode(path)))

        # the worker's pidbox exchange table lives under home, not in the working directory
        assert list(cwd.iterdir()) == []
        assert any((home / "broker" / "control").iterdir())
    finally:
        stop_process_group(up, grace=90)
        log.close()
    assert up.returncode == 0
