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
from collections.abc import Callable
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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used so far (its own threads; children not included)."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores (/proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


def pids_named(name: str) -> list[int]:
    """Live processes whose executable is called ``name`` (/proc/<pid>/comm, which a retitled backend
    keeps), e.g. the ``postgres`` server and every one of its backends."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


class CpuMeter:
    """CPU seconds used by named groups of processes between calls of :meth:`take`, and the machine's.

    Why: on a shared machine a latency target can be missed because something other than the service used the
    cores; a rate's row then says who used them (the API processes, the database, the load client, the hostile
    clients). ``groups`` maps a name to a function returning its pids now (backends come and go)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self._last: dict[str, dict[int, float]] = {}
        self._machine = machine_busy_seconds()
        self.take()

    def take(self) -> dict[str, float]:
        """Each group's CPU seconds since the last call, the machine's busy and elapsed core-seconds, rounded."""
        out: dict[str, float] = {}
        for name, pids_of in self.groups.items():
            now = {pid: c for pid in pids_of() if (c := cpu_seconds(pid)) is not None}
            before = self._last.get(name, {})
            # a process born in the window counts from zero; one that died in it is lost (short-lived backends)
            out[name] = round(sum(c - before.get(pid, 0.0) for pid, c in now.items()), 2)
            self._last[name] = now
        busy, total = machine_busy_seconds()
        out["machine_busy"] = round(busy - self._machine[0], 2)
        out["machine_capacity"] = round(total - self._machine[1], 2)
        self._machine = (busy, total)
        return out


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
