"""A state's string is written once, in ``service/states.py``: the service, the API and the worker compare
against the enum members. A comparison with the bare literal still works today, but it is the copy that
silently stops matching when a value is renamed, so none is allowed."""

from __future__ import annotations

import ast
from pathlib import Path

from service import states

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("service", "api", "worker")
DEFINITIONS = ("service/states.py",)
VALUES = {member.value for enum_ in states.ALL for member in enum_}
SQL_MEMBERSHIP = {"in_", "not_in", "notin_"}  # SQLAlchemy's column.in_((...)): a membership test too


def _literals(node: ast.AST | None) -> set[str]:
    """State values written as a string literal, or inside a literal tuple/list/set."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & VALUES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_literals(e) for e in node.elts)) if node.elts else set()
    return set()


def state_literal_tests(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of each comparison (== != in, not in, is) or SQL membership test against a state literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, v) for v in _literals(operand)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_MEMBERSHIP:
            found += [(node.lineno, v) for arg in node.args for v in _literals(arg)]
    return found


def test_no_code_compares_a_state_with_a_string_literal():
    offenders = []
    for package in CHECKED:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in DEFINITIONS:
                continue
            offenders += [f"{rel}:{line} {v!r}" for line, v in state_literal_tests(ast.parse(path.read_text()))]
    assert not offenders, "compare with the enum member (service/states.py) instead:\n" + "\n".join(offenders)


def test_the_state_check_sees_each_kind_of_test():
    code = ('a == "running"\n"lost" != b\nc in ("idle", "x")\nd not in ["end"]\nWorker.status.not_in(("stopped",))\n'
            'Job.merge_status.in_({"requested"})\ne = "failed"\nf(g="done")\nh == "not-a-state"\n')
    assert sorted(v for _, v in state_literal_tests(ast.parse(code))) == [
        "end", "idle", "lost", "requested", "running", "stopped"]


def test_the_enums_keep_the_values_stored_and_served():
    """Rows written before the enums, and the REST responses, hold these exact strings."""
    assert [s.value for s in states.JobStatus] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert [s.value for s in states.MergeStatus] == ["requested", "running", "done", "failed"]
    assert [s.value for s in states.WorkerStatus] == ["idle", "busy", "stopped", "lost"]
    assert [s.value for s in states.EventType] == ["status", "metric", "log", "end"]
    assert [s.value for s in states.JobPhase] == ["selection", "training", "evaluating", "saving"]
    assert states.JobPhase.shown("loading") is None and states.JobPhase.shown("selection") is states.JobPhase.selection
