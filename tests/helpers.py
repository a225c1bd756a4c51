"""Small helpers every test package uses: a free local port, and waiting for a condition with a deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

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
