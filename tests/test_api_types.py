"""The dashboard knows the API only through the API itself: its TypeScript types are generated from the OpenAPI
document (a stale copy fails here, so a response field changed on the server cannot drift from the dashboard),
and it never names a method: what a method is comes from ``GET /v1/methods``, so a new method needs no
dashboard change."""

from __future__ import annotations

import difflib
import re
import subprocess
from pathlib import Path

from smt_core.registry import specs

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "frontend" / "src"
GENERATED = SRC / "generated" / "openapi.ts"


def test_generated_api_types_match_the_openapi_document(tmp_path):
    fresh = tmp_path / "openapi.ts"
    run = subprocess.run([str(ROOT / "scripts" / "gen_api_types.sh"), str(fresh)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"scripts/gen_api_types.sh failed:\n{run.stderr[-3000:]}"
    assert GENERATED.exists(), f"{GENERATED.relative_to(ROOT)} is missing: run scripts/gen_api_types.sh"
    diff = list(difflib.unified_diff(GENERATED.read_text().splitlines(), fresh.read_text().splitlines(),
                                     "committed", "regenerated", lineterm="", n=1))
    assert not diff, (
        f"{GENERATED.relative_to(ROOT)} is stale: the API's OpenAPI document changed. Run scripts/gen_api_types.sh "
        "and commit the result (then fix what the dashboard's typecheck reports).\n" + "\n".join(diff[:60]))


def dashboard_sources() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.ts*")) if GENERATED.parent not in p.parents]


def test_dashboard_sources_name_no_method():
    names = "|".join(re.escape(s.name) for s in specs())
    literal = re.compile(rf"""(["'`])({names})\1""")
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in dashboard_sources()
             for n, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, ("the dashboard names a method; take what it needs from GET /v1/methods or the job "
                       "instead:\n" + "\n".join(found))
