"""The method registry is the one source of truth for what a method is: torch-free specs, read by the engine,
the estimate and the API; nothing else branches on a method's name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from smt_core.methods.options import ConfigError
from smt_core.registry import available_methods, get_method, get_spec, served_specs, specs
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"smt", "snell", "lora", "dora", "full", "head"}
# where a method's name may be branched on: its own package, the registry, tests and benchmarks
ALLOWED = ("smt_core/methods/", "smt_core/registry.py", "tests/", "bench/")
SKIPPED = (".venv", "node_modules", "frontend", ".git")


def test_the_service_offers_the_methods_it_offered_before_the_registry():
    assert [s.name for s in served_specs()] == ["smt", "snell", "lora", "dora", "full"]
    assert set(available_methods()) == NAMES  # head: the command line's linear probe


def test_every_offered_method_has_its_test_matrix_row():
    assert factories.METHODS == [s.name for s in served_specs()]
    assert set(factories.MATRIX) == set(factories.METHODS), "a new method needs its row in tests/factories.MATRIX"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_the_engine_class_is_built_from_its_spec(name):
    spec = get_spec(name)
    engine = get_method(name)
    assert engine.spec is spec and engine.name == name
    assert engine.config_class is spec.config and engine.uses_budget == spec.uses_budget
    assert isinstance(engine.from_options({}).config, spec.config)


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="method: unknown 'nope'; expected one of .*smt"):
        get_method("nope")


def test_importing_the_registry_and_every_spec_imports_no_torch():
    code = ("import sys\nimport smt_core.estimate, smt_core.registry as r\n"
            "specs = r.specs()\nassert len(specs) == 6, specs\n"
            "assert [s.public() for s in r.served_specs()]\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('clean')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "clean", out.stderr[-2000:]


@pytest.mark.parametrize("spec", specs(), ids=lambda s: s.name)
def test_every_option_is_checked_against_its_own_definition(spec):
    for opt in spec.config.options():
        assert opt.check(opt.default) == opt.default  # the default is valid
        bad = []
        if opt.minimum is not None:
            bad.append(opt.minimum - 1)
            if opt.exclusive_minimum:
                bad.append(opt.minimum)
        if opt.maximum is not None:
            bad.append(opt.maximum + 1)
            if opt.exclusive_maximum:
                bad.append(opt.maximum)
        bad += ["nonsense", [1]] if opt.type != "string" else [3]
        for value in bad:
            with pytest.raises(ConfigError) as exc:
                spec.parse({opt.name: value})
            assert exc.value.field == opt.name, (opt.name, value)
    with pytest.raises(ConfigError) as exc:
        spec.parse({"colour": 1})
    assert exc.value.field == "colour"


def test_cli_strings_are_parsed_by_the_option_type_json_values_are_not():
    assert get_spec("smt").parse({"block_size": "32"}, parse_strings=True).block_size == 32
    with pytest.raises(ConfigError, match="block_size"):
        get_spec("smt").parse({"block_size": "32"})  # a JSON body's string is not an integer
    assert get_spec("snell").parse({"learn_coefficients": "true"}, parse_strings=True).learn_coefficients is True


def _method_name_branches(tree: ast.AST) -> list[tuple[int, str]]:
    """Comparisons (== != in, not in), and dict keys, whose operand is a method-name literal (or a literal
    tuple/list/set holding one)."""
    def names(node: ast.AST | None) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value} & NAMES
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return set().union(*(names(e) for e in node.elts)) if node.elts else set()
        return set()

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, n) for n in names(operand)]
        elif isinstance(node, ast.Dict):
            found += [(node.lineno, n) for key in node.keys for n in names(key)]
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            found += [(node.lineno, n) for n in names(node.slice)]
    return found


def test_no_code_outside_the_method_packages_branches_on_a_method_name():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(ALLOWED) or any(part in SKIPPED for part in path.relative_to(ROOT).parts):
            continue
        offenders += [f"{rel}:{line} {name!r}" for line, name in _method_name_branches(ast.parse(path.read_text()))]
    assert not offenders, "read the method's spec (smt_core.registry.get_spec) instead:\n" + "\n".join(offenders)


def test_the_name_check_sees_each_kind_of_branch():
    code = 'a == "smt"\nb in ("lora", "x")\n{"full": 1}\nd["dora"]\n"snell" != e\nf = "head"\n'
    assert sorted(n for _, n in _method_name_branches(ast.parse(code))) == ["dora", "full", "lora", "smt", "snell"]


@pytest.mark.parametrize("name", sorted(NAMES))
def test_the_specs_torch_free_learning_rates_are_the_engines(name):
    """The API computes a method's default rate from the spec (OpenAI's learning_rate_multiplier multiplies it)
    without torch; the engine runs the same rate at every model size, budget and task because it keeps no rate
    of its own: the spec is the one place a default rate is written."""
    spec, engine = get_spec(name), get_method(name)
    for cls in engine.__mro__[:-1]:
        own = {"default_learning_rate", "causal_lm_learning_rate", "large_model_learning_rate"} & set(vars(cls))
        assert not own, f"{cls.__name__} sets {sorted(own)}: set them on {type(spec).__name__} alone"
    for params in (1_000, 135_000_000, 1_200_000_000, 7_000_000_000, 70_000_000_000):
        for budget in (None, params // 400, params // 25):
            for classification in (True, False):
                assert (spec.learning_rate_for(params, budget, classification=classification)
                        == engine.learning_rate_for(params, budget, classification=classification))


def test_the_methods_folder_is_scanned_once_per_process(monkeypatch):
    """Job creation looks methods up several times (validation, two memory estimates): listing the folder each
    time cost ~7 ms a lookup. After the first scan a lookup touches no filesystem."""
    import pkgutil

    from smt_core import registry

    registry.get_spec("smt")  # the first lookup scans (here or in an earlier test)

    def no_scan(*_a, **_k):
        raise AssertionError("smt_core.methods was scanned again")

    monkeypatch.setattr(pkgutil, "iter_modules", no_scan)
    assert registry.get_spec("lora").name == "lora"
    assert "smt" in registry.available_methods()
    assert registry.specs()
