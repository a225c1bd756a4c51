"""Dependencies point one way: api, worker and inference use service, which uses smt_core's torch-free parts;
the worker runs without a web framework, the API without torch (it forwards to inference over HTTP), the
service core without either. Checked in a fresh interpreter per side, by what ends up in ``sys.modules`` after
importing every module of that side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ("fastapi", "starlette", "uvicorn", "sse_starlette")


def modules_of(package: str) -> list[str]:
    """Every module of a package, by file (``__main__`` included: it is what `python -m` runs)."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def loaded_after_importing(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(("side", "forbidden"), [
    ("worker", (*WEB, "api")),
    ("service", (*WEB, "api", "worker", "torch")),
    ("api", ("torch", "worker", "inference")),
    ("inference", ("api", "worker")),  # torch-side like the worker, but it serves HTTP itself
])
def test_each_side_imports_only_what_it_may(side, forbidden):
    loaded = loaded_after_importing(modules_of(side))
    assert side in loaded  # the check ran
    assert not loaded & set(forbidden), f"{side} pulled in {sorted(loaded & set(forbidden))}"


def test_the_check_sees_a_forbidden_import():
    """The helper is not blind: importing the API app does load a web framework."""
    assert "fastapi" in loaded_after_importing(["api.main"])
