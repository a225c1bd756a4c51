"""A daemon thread that calls a function every few seconds until stopped (the reconcilers, the heartbeat).

A failing call is logged and tried again next tick: a database hiccup must not kill the thread. While the
database is away the failure is one line a tick, not a traceback (the outage is already in the message).
It lives in api/ because the API process runs a reconciler too (service/reconcile.py); the worker imports it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.db import is_disconnect

log = logging.getLogger("sparsetune.periodic")


class Periodic:
    def __init__(self, name: str, fn: Callable[[], object], interval: Callable[[], float]) -> None:
        self.name, self.fn, self.interval = name, fn, interval  # interval read at start: settings may change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        interval = self.interval()
        while not self._stop.wait(interval):
            try:
                self.fn()
            except Exception as exc:  # noqa: BLE001 - try again next tick
                if is_disconnect(exc):
                    log.warning("%s skipped: database unavailable (%s)", self.name, exc.__class__.__name__)
                else:
                    log.warning("%s failed", self.name, exc_info=True)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"sparsetune-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, wait: float = 0) -> None:
        """Ask the thread to stop; ``wait`` > 0 also waits that long for a tick in progress to end."""
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(wait)
