"""The embedded home (``SPARSETUNE_HOME``) and everything in it private to the user who runs the service.

It holds the database (every dataset, artifact and key hash), the queue's messages, the jobs' work folders
with their copies of the users' data, and the first key in plain text: on a shared machine none of it may be
readable by other accounts. So `sparsetune up` and the worker create files with a umask of 0o077 (files 0600,
folders 0700), `sparsetune up` repairs the modes of a home made before this, and the two files whose creator we
do not control (SQLite's database, the key) are created with their mode from the start.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("sparsetune")

PRIVATE_UMASK = 0o077
FOLDER_MODE, FILE_MODE = 0o700, 0o600


def restrict_umask() -> None:
    """Files and folders this process (and the processes it starts) creates from now on: 0600 / 0700."""
    os.umask(PRIVATE_UMASK)


def secure_home(home: Path) -> None:
    """Create ``home`` 0700 (and the umask for what follows), and take group and other access away from
    everything already in it. Symbolic links are left alone: their targets are not ours to change."""
    restrict_umask()
    home.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    _restrict(home)
    fixed = 0
    for folder, dirs, files in os.walk(home):  # does not descend into linked folders
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                fixed += _restrict(path)
    if fixed:
        log.warning("made %d files and folders under %s private to their user (mode 0600/0700)", fixed, home)


def _restrict(path: Path) -> int:
    """Clear the group and other bits, keeping the owner's (an executable stays executable for its owner)."""
    current = stat.S_IMODE(path.lstat().st_mode)
    if current & 0o077:
        path.chmod(current & 0o700)
        return 1
    return 0


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite gives the database's mode to its -wal
    and -shm files, so they are private too)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    except FileExistsError:
        pass


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that it is never readable by others, not even for a moment: a new file
    created 0600 (``O_EXCL``: never an existing file, never through a planted link), then renamed over
    ``path``, which replaces a link instead of writing through it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shared_secret(path: Path) -> str:
    """The secret kept in ``path``, made (32 random bytes, hex; 0600) the first time. Processes that share a
    home agree on it without a setting, even when two start at once: the secret is written whole to a private
    temporary file and hard-linked into place, which fails if another process got there first — then its
    secret is read and this one dropped, so nobody ever reads a half-written or a replaced secret."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()
