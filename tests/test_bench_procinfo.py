"""bench/procinfo.py's CPU meter: the per-role CPU figures that bench/api_load.py reports beside its latencies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.bench_modules import bench_module


def load_procinfo():
    return bench_module("procinfo")


def test_cpu_meter_counts_a_busy_process_and_not_an_idle_one():
    procinfo = load_procinfo()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 30: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)  # both interpreters started
        meter = procinfo.CpuMeter({"busy": lambda: [busy.pid], "idle": lambda: [idle.pid]})
        time.sleep(1.0)
        used = meter.take()
        assert used["busy"] > 0.3, used  # a spinning process gets most of a core even on a loaded machine
        assert used["idle"] < 0.05, used
        assert used["machine_busy"] >= used["busy"] - 0.05, used  # the machine's busy time includes it
        assert 0.9 <= used["machine_capacity"] / (os.cpu_count() or 1) <= 2.0, used  # ≈ the 1 s window
        busy.kill()
        busy.wait()
        assert meter.take()["busy"] == 0.0  # a process gone since the last window adds nothing
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()


def test_pids_named_finds_this_interpreter():
    procinfo = load_procinfo()
    comm = Path("/proc/self/comm").read_text().strip()
    assert os.getpid() in procinfo.pids_named(comm)
