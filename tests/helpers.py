"""Small helpers the test packages share: a free local port, waiting for a condition with a deadline, reading
`sparsetune up`'s banner, and an old-style SQLite database."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; a race with another process is unlikely)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn: Callable[[], T], timeout: float = 60, interval: float = 0.2, what: str = "condition") -> T:
    """``fn()``'s first truthy value, polled every ``interval`` seconds; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def read_up_banner(stdout: IO[str], timeout: float = 120) -> tuple[str | None, list[str]]:
    """What `sparsetune up` prints on stdout before it serves: (the first key, if it made one; the lines up to
    and including ``ready on http://…``). The caller asserts on them."""
    key, lines, deadline = None, [], time.time() + timeout
    while time.time() < deadline:
        line = stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("SPARSETUNE_API_KEY="):
            key = line.strip().split("=", 1)[1]
        if line.startswith("ready on http://"):
            break
    return key, lines


def sqlite_with_free_pages(db: Path, mib: int = 8) -> None:
    """A WAL-mode SQLite database as an older sparsetune left it: no auto-vacuum, ``mib`` MiB of free pages
    (a table filled, then dropped), the WAL checkpointed into the file."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE dropped (x BLOB)")
        conn.executemany("INSERT INTO dropped VALUES (?)", [(os.urandom(1 << 20),) for _ in range(mib)])
        conn.commit()
        conn.execute("DROP TABLE dropped")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
