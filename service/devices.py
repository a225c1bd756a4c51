"""What device a process sees, without torch: the trainer's and the inference process's heartbeats both say
it (``GET /v1/workers`` lists it; pool routing tells CPU from GPU workers by it), and neither may pay for a
torch import just to report it."""

from __future__ import annotations

import os
import subprocess


def detect_device(cap: int | None = None) -> tuple[str, int | None]:
    """The GPU this process sees (first of CUDA_VISIBLE_DEVICES, via nvidia-smi) and its memory, else the CPU
    ("<model> (N cores)") and its RAM, or ``cap`` (a memory cap the process runs under) if smaller."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    if visible not in ("", "-1"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits",
                                  "-i", visible], capture_output=True, text=True, timeout=10, check=True).stdout
            name, mib = out.strip().splitlines()[0].rsplit(",", 1)
            return name.strip(), int(float(mib)) * 2**20
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    name = "cpu"
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{name} ({os.cpu_count()} cores)", min(ram, cap) if cap else ram


def ram_bytes() -> int:
    """The machine's physical memory (the inference process's default memory budget is a share of it)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
