"""Every function of the shipped packages reads in one sitting: none is longer than 80 lines (tests,
migrations and benchmarks are not scanned). Why: a long function is where phases hide — ``train()`` was one
239-line function doing seven jobs; nanoGPT's loop stays ~100 lines because loading, the optimizer and
evaluation live in named functions beside it (docs/STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("smt_core", "service", "api", "worker", "cli", "inference")
MAX_LINES = 80


def long_functions(folder: Path, limit: int = MAX_LINES) -> list[str]:
    """``file:line name (n lines)`` of every function or method in ``folder`` longer than ``limit`` lines,
    counted from its first decorator to its last line (a nested function counts in its parent too)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - first + 1
                if lines > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


@pytest.mark.parametrize("package", [p for p in PACKAGES if (ROOT / p).is_dir()])
def test_no_function_is_longer_than_80_lines(package):
    found = long_functions(ROOT / package)
    assert not found, (f"split these into named helpers (at most {MAX_LINES} lines a function):\n"
                       + "\n".join(found))


def test_the_scan_sees_a_long_function_and_counts_its_decorators(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    (pkg / "m.py").write_text(f"@staticmethod\ndef long():\n{body}\n\ndef short():\n    return 1\n")
    assert long_functions(pkg) == ["pkg/m.py:2 long (81 lines)"]
    assert long_functions(pkg, limit=81) == []
