"""A job's work folder on the worker's host: its copy of the user's data, the unpacked checkpoint and the
run's output, at ``<home>/work/<job id>@<host>@<pid>``, made by the training child.

The child removes its folder when it ends, but a child killed outright (SIGKILL, the OOM killer, the group
of a dead worker) cannot. The name says which process made the folder, so any process on the same host can
tell a live run's folder from a dead one's and remove it (:func:`sweep`: the worker after each run and on
each reconciler tick, ``sparsetune up`` when a worker it started dies); a folder whose job has ended, or is
gone, is removed whoever made it. Lives in api/ so ``sparsetune up`` (which never imports the worker) can
sweep too.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

from sqlalchemy import select

from service.db import session_scope
from service.models import Job
from service.settings import get_settings
from service.states import ACTIVE

SEP = "@"  # in neither job ids nor host names


def root() -> Path:
    return get_settings().home / "work"


def host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"


def create(job_id: str) -> Path:
    """This process's work folder for ``job_id`` (private to the user: it holds their data)."""
    folder = root() / f"{job_id}{SEP}{host()}{SEP}{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)  # our name on a folder: left by a dead process with our pid
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=0o700)
    return folder


def alive(pid: int) -> bool:
    """Running or sleeping; not gone and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def _dead_maker(name: str) -> bool:
    parts = name.split(SEP)
    return len(parts) == 3 and parts[1] == host() and parts[2].isdigit() and not alive(int(parts[2]))


def sweep(job_id: str | None = None) -> list[Path]:
    """Remove the work folders (of ``job_id``, or all) whose maker on this host is dead or whose job is no
    longer queued or running; returns what was removed."""
    base = root()
    if not base.is_dir():
        return []
    folders = [p for p in base.iterdir() if p.is_dir() and (job_id is None or p.name.split(SEP)[0] == job_id)]
    if not folders:
        return []
    ids = {p.name.split(SEP)[0] for p in folders}
    with session_scope() as s:
        active = set(s.scalars(select(Job.id).where(Job.id.in_(ids),
                                                    Job.status.in_(ACTIVE))))
    removed = []
    for folder in folders:
        if folder.name.split(SEP)[0] not in active or _dead_maker(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
