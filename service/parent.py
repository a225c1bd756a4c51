"""Processes that `sparsetune up` starts (the worker, the inference process) shut down warmly if `up` dies
without stopping them, instead of lingering: they serve nobody once `up`'s API is gone, and hold memory."""

from __future__ import annotations

import os
import signal
import threading
import time


def exit_with_parent() -> None:
    """When the parent process is gone (we are re-parented), SIGTERM ourselves: the process's own handler
    then stops it warmly (the worker hands its job back; the inference process says it stopped)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
