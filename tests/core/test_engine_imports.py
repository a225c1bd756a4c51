"""The engine is a library: ``smt_core`` imports no web framework, database, queue or HTTP client, so it runs
in a training child, a notebook or another service without them (docs/STYLE.md: the engine reports through
callbacks and the worker subscribes). Checked twice: by what a fresh interpreter holds after importing every
module, and by every import statement in the source, lazy ones inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_layering import ROOT, loaded_after_importing, modules_of

SERVICE_LIBRARIES = ("fastapi", "starlette", "sqlalchemy", "celery", "kombu", "redis", "psycopg", "uvicorn",
                     "httpx", "alembic")


def imported_names(folder: Path) -> dict[str, set[str]]:
    """Top-level package of every absolute import statement under ``folder`` → the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(folder.parent)))
    return found


def test_importing_every_engine_module_loads_no_service_library():
    loaded = loaded_after_importing(modules_of("smt_core"))
    assert "smt_core" in loaded and "torch" in loaded  # the check ran, the engine's own modules included
    assert not loaded & set(SERVICE_LIBRARIES), f"smt_core pulled in {sorted(loaded & set(SERVICE_LIBRARIES))}"


def test_no_engine_source_names_a_service_library():
    found = imported_names(ROOT / "smt_core")
    bad = {lib: sorted(found[lib]) for lib in SERVICE_LIBRARIES if lib in found}
    assert not bad, f"smt_core imports service libraries: {bad}"


def test_the_source_scan_sees_lazy_and_from_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    import sqlalchemy.orm\n    from celery import Celery\n")
    (pkg / "b.py").write_text("from . import a\nimport os, redis\n")
    found = imported_names(pkg)
    assert found["sqlalchemy"] == {"pkg/a.py"} and found["celery"] == {"pkg/a.py"}
    assert found["redis"] == {"pkg/b.py"} and "a" not in found
