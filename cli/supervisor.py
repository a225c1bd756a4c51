"""`sparsetune up` watches every process it starts. One that exits while `up` serves is reaped (no zombie),
logged (name, exit code or signal, the delay before its restart), its whole process group killed (a dead
worker's training child must not go on training and writing), its ``on_exit`` hook run (for the worker:
release its jobs and sweep its work folders) and started again. The delay doubles with each death that
follows a short life, up to a cap, and is back at its start once the process has stayed up for the cap, so a
process that cannot start does not spin and one that dies once a day restarts at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("sparsetune.supervisor")


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


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of a process group (its leader is already dead)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nobody left


def how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Supervised:
    """One process under watch: how to start it, and what to do once it died (``on_exit(pid, started_at)``)."""

    name: str
    start: Callable[[], subprocess.Popen]
    on_exit: Callable[[int, float], None] | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    delay: float = 0.0  # the last restart delay; 0 before the first death
    restart_at: float | None = None


class Supervisor:
    def __init__(self, backoff: float = 1.0, backoff_max: float = 60.0, poll: float = 0.2) -> None:
        self.backoff, self.backoff_max, self.poll = backoff, max(backoff, backoff_max), poll
        self.children: list[Supervised] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, start: Callable[[], subprocess.Popen],
            on_exit: Callable[[int, float], None] | None = None) -> Supervised:
        child = Supervised(name, start, on_exit)
        self.children.append(child)
        return child

    def start(self) -> None:
        """Start every process now, then watch them from a thread."""
        for child in self.children:
            self._launch(child)
        self._thread = threading.Thread(target=self._watch, name="sparsetune-supervisor", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 60) -> None:
        """No more restarts; then stop each process warmly (SIGTERM, SIGKILL after ``grace``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for child in self.children:
            if child.proc is not None:
                stop_process_group(child.proc, grace)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            for child in self.children:
                self.check(child)

    def check(self, child: Supervised) -> None:
        """Reap and handle a death, or restart a process whose delay is over."""
        now = time.time()
        if child.proc is not None and child.proc.poll() is not None:
            self._died(child, now)
        if child.proc is None and child.restart_at is not None and now >= child.restart_at:
            self._launch(child)

    def _died(self, child: Supervised, now: float) -> None:
        proc, uptime = child.proc, now - child.started_at
        assert proc is not None and proc.returncode is not None
        kill_group(proc.pid)  # start_new_session: the group is the process's own, with its training child
        child.delay = self.backoff if child.delay == 0 or uptime >= self.backoff_max else min(
            2 * child.delay, self.backoff_max)
        child.proc, child.restart_at = None, now + child.delay
        log.warning("%s (pid %d) %s after %.0f s; restarting in %.1f s", child.name, proc.pid,
                    how_it_ended(proc.returncode), uptime, child.delay,
                    extra={"supervised": child.name, "pid": proc.pid, "exit_code": proc.returncode,
                           "restart_in_seconds": child.delay})
        if child.on_exit is not None:
            try:
                child.on_exit(proc.pid, child.started_at)
            except Exception:  # noqa: BLE001 - the reconcilers catch up (leases expire, sweeps run)
                log.warning("after %s died: cleanup failed", child.name, exc_info=True)

    def _launch(self, child: Supervised) -> None:
        try:
            child.proc, child.started_at, child.restart_at = child.start(), time.time(), None
        except OSError:
            child.delay = min(max(self.backoff, 2 * child.delay), self.backoff_max)
            child.proc, child.restart_at = None, time.time() + child.delay
            log.warning("%s could not start; trying again in %.1f s", child.name, child.delay, exc_info=True)
