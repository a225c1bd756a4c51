"""Process facts the service benchmarks need, read from /proc (Linux): resident memory, parents and
children, and the open-file limit. No psutil: /proc says all of it, and the benchmarks need nothing else.

Used by bench/api_load.py (each API process's peak RSS under load) and bench/chaos.py (which processes are
workers and training children of the stack it started, so that it signals only its own processes).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``: resident now, ``VmHWM``: the peak); None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): [state, ppid, pgrp, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None




def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except (FileNotFoundError, ProcessLookupError):
        return []


def children(pid: int) -> list[int]:
    """Direct children that are alive (a scan of /proc: /proc/<pid>/task/*/children needs a kernel option)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def descends_from(pid: int, ancestors: set[int]) -> bool:
    """Whether ``pid`` is one of ``ancestors`` or below one of them (walks the ppid chain)."""
    seen = 0
    while pid > 1 and seen < 64:
        if pid in ancestors:
            return True
        fields = stat_fields(pid)
        if fields is None:
            return False
        pid, seen = int(fields[1]), seen + 1
    return False


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE towards ``needed`` (up to the hard limit); processes started
    afterwards inherit it. Returns (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class RssSampler:
    """Samples VmRSS of some processes every ``interval`` seconds in a thread and keeps each one's peak since
    the last :meth:`take`. Sampling can miss a short spike between samples, so :meth:`take` also reports the
    kernel's own high-water mark (VmHWM, the peak since the process started)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.pids, self.interval = pids, interval
        self.peak: dict[str, int] = {}
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                kib = status_kib(pid, "VmRSS")
                if kib is not None:
                    with self._lock:
                        self.peak[name] = max(self.peak.get(name, 0), kib)
            time.sleep(self.interval)

    def take(self) -> dict[str, dict[str, float | None]]:
        """Each process's sampled peak since the last call and its lifetime peak, in MiB; starts a new window."""
        with self._lock:
            peaks, self.peak = self.peak, {}
        out = {}
        for name, pid in self.pids.items():
            hwm = status_kib(pid, "VmHWM")
            out[name] = {"peak_rss_mib": round(peaks[name] / 1024, 1) if name in peaks else None,
                         "lifetime_peak_rss_mib": round(hwm / 1024, 1) if hwm is not None else None}
        return out
