"""``scripts/gpu_check.sh --cpu``: the GPU check's CPU mode, as CI runs it — the CUDA tests on the CPU under
the bf16 policy, then the engine benchmark on a tiny shape with the memory estimate beside each row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = [("smt", False), ("lora", False), ("dora", False), ("full", False), ("snell", False), ("floor", False),
        ("smt", True), ("lora", True), ("floor", True)]


def test_gpu_check_cpu_mode_tables_every_method_with_its_estimate(tmp_path):
    out = tmp_path / "out"
    cmd = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--time-limit", "600", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=720,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = {p.name for p in out.iterdir()}
    assert len(files) <= 8 and {"summary.md", "engine.json", "pytest-gpu.log", "environment.json"} <= files

    summary = (out / "summary.md").read_text()
    assert " passed" in summary and " failed" not in summary, summary
    header = next(line for line in summary.splitlines() if line.startswith("| method |"))
    assert "est train MB" in header and "est peak MB" in header and "train/est" in header
    for method, ck in ROWS:
        assert f"| {method} | {'yes' if ck else 'no'} |" in summary, f"no {method} row (checkpointing {ck})"

    rows = json.loads((out / "engine.json").read_text())["rows"]
    assert {(r["method"], r["checkpointing"]) for r in rows} == set(ROWS)
    for r in rows:
        assert r["precision"] == "bf16", "--cpu runs the GPU precision policy"
        if r["method"] != "floor":
            assert r["estimate"]["train_bytes"] > 0 and r["estimate"]["peak"] > 0
