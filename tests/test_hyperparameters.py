"""A run's hyperparameters are defined once (smt_core/hyperparameters.py): TrainSpec, the engine's and the
service's command lines, the API's request schema (and so the OpenAPI document the dashboard reads), the
estimate's query parameters and the worker take their defaults, bounds and help from it. The checks compare
each reader with the definition, and a syntax check fails when a module states a default of its own."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from smt_core import hyperparameters as hp

ROOT = Path(__file__).resolve().parent.parent
# the modules that read hyperparameters; none may restate a default
READERS = ("smt_core/spec.py", "smt_core/cli.py", "smt_core/estimate.py", "cli/commands.py", "api/schemas.py",
           "api/validation.py", "api/routes/models.py", "worker/child.py", "service/estimates.py",
           "service/settings.py")
NAMES = {h.name for h in hp.ENGINE}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings}


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def test_trainspec_takes_every_default_from_the_definition():
    from smt_core.spec import TrainSpec

    fields = {f.name: f for f in dataclasses.fields(TrainSpec)}
    for h in hp.ENGINE:
        f = fields[h.name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        assert default == (list(h.default) if h.kind == "targets" else h.default), h.name


@pytest.mark.parametrize("h", [h for h in hp.ENGINE if h.minimum is not None], ids=lambda h: h.name)
def test_trainspec_refuses_what_the_definition_bounds(h):
    from smt_core.spec import TrainSpec

    outside = [h.minimum if h.exclusive_minimum else h.minimum - 1]
    if h.maximum is not None:
        outside.append(h.maximum if h.exclusive_maximum else h.maximum + 1)
    for value in outside:
        with pytest.raises(ValueError, match=h.name):
            TrainSpec(model="m", train_data="d", method="smt", out_dir="o", **{h.name: value})


def test_api_schema_takes_defaults_bounds_and_help_from_the_definition():
    from api.schemas import Hyperparameters, JobCreate

    assert list(Hyperparameters.model_fields) == [h.name for h in hp.JOB], "the job's hyperparameters, in order"
    for h in hp.JOB:
        field = Hyperparameters.model_fields[h.name]
        bounds = {k: getattr(m, k) for m in field.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
        assert (field.default, field.description, bounds) == (h.default, h.help, h.bounds()), h.name
    job = JobCreate.model_fields
    assert job["budget"].default == hp.BUDGET.default and job["targets"].default == list(hp.TARGETS.default)
    assert job["seed"].default == hp.SEED.default


def test_openapi_document_shows_the_defaults_the_dashboard_reads():
    from api.main import app

    doc = app.openapi()
    props = doc["components"]["schemas"]["Hyperparameters"]["properties"]
    for h in hp.JOB:
        # FastAPI leaves a null default out of the document
        assert props[h.name].get("default") == h.default and props[h.name]["description"] == h.help, h.name
    assert doc["components"]["schemas"]["JobCreate"]["properties"]["targets"]["default"] == list(hp.TARGETS.default)
    params = {p["name"]: p["schema"] for p in doc["paths"]["/v1/models/{model_id}/estimate"]["get"]["parameters"]}
    for h in (hp.BATCH_SIZE, hp.MAX_SEQ_LEN):
        assert (params[h.name]["default"], params[h.name]["minimum"], params[h.name]["maximum"]) == (
            h.default, h.minimum, h.maximum), h.name
    assert params["budget"]["default"] == hp.BUDGET.default
    assert params["targets"]["default"] == ",".join(hp.TARGETS.default)


def test_engine_cli_flags_take_defaults_and_help_from_the_definition():
    from smt_core.cli import build_parser

    flags = _flags(_subparser(build_parser(), "train"))
    for h in hp.ENGINE:
        action = flags[h.flag]
        assert action.default == (",".join(h.default) if h.kind == "targets" else h.default), h.name
        assert h.help in action.help, h.name


def test_jobs_create_flags_leave_defaults_to_the_service():
    from cli.commands import build_parser, job_body

    parser = build_parser()
    flags = _flags(_subparser(parser, "jobs", "create"))
    for h in hp.JOB:
        assert flags[h.flag].default is None and h.help in flags[h.flag].help, h.name
    assert flags["--targets"].default == ",".join(hp.TARGETS.default)
    assert flags["--seed"].default == hp.SEED.default
    args = parser.parse_args(["jobs", "create", "--model", "m", "--training-dataset", "ds_1", "--method", "smt",
                              "--batch-size", "4", "--gradient-checkpointing"])
    body = job_body(args)
    assert body["hyperparameters"] == {"batch_size": 4, "gradient_checkpointing": True}
    assert body["targets"] == list(hp.TARGETS.default) and "budget" not in body


def test_worker_fills_in_defaults_for_hyperparameters_added_after_a_job_was_stored():
    stored = {"steps": 4, "epochs": None, "learning_rate": None, "batch_size": 4, "max_seq_len": 32,
              "lr_warmup_steps": 0, "schedule": "linear"}  # written before num_devices and checkpointing
    values = hp.job_values(stored)
    assert values == {**{h.name: h.default for h in hp.JOB}, **{k: v for k, v in stored.items() if k != "schedule"}}


def _restated(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each literal given as a hyperparameter's default: a class field or argument default, an
    argparse ``default=``, a ``.get(name, literal)``, ``x["name"] = literal``, or the default targets' string."""
    def literal(node: ast.AST | None) -> bool:
        if isinstance(node, ast.Lambda):
            node = node.body
        if isinstance(node, ast.List | ast.Tuple):
            return all(isinstance(e, ast.Constant) for e in node.elts)
        return isinstance(node, ast.Constant)

    def some(node: ast.AST | None) -> bool:
        """A literal other than None (None says "the default", resolved from hyperparameters.py inside)."""
        return literal(node) and not (isinstance(node, ast.Constant) and node.value is None)

    def given(node: ast.AST | None) -> bool:
        """A literal, or a Field(...)/Query(...) call whose default is one."""
        if isinstance(node, ast.Call):
            kw = {k.arg: k.value for k in node.keywords}
            return some(node.args[0] if node.args else kw.get("default")) or literal(kw.get("default_factory"))
        return some(node)

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in NAMES:
            if node.value is not None and given(node.value):
                found.append((node.lineno, f"{node.target.id} = literal"))
        elif isinstance(node, ast.Assign) and node.targets and isinstance(node.targets[0], ast.Subscript):
            key = node.targets[0].slice
            if isinstance(key, ast.Constant) and key.value in NAMES and literal(node.value) and not (
                    isinstance(node.value, ast.Constant) and node.value.value is None):
                found.append((node.lineno, f"[{key.value!r}] = literal"))
        elif isinstance(node, ast.arguments):
            args = node.posonlyargs + node.args
            pairs = list(zip(args[len(args) - len(node.defaults):], node.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d is not None]
            found += [(d.lineno, f"argument {a.arg}=literal") for a, d in pairs  # None: "the default", resolved inside
                      if a.arg in NAMES and literal(d) and not (isinstance(d, ast.Constant) and d.value is None)]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            first, kw = node.args[0].value, {k.arg: k.value for k in node.keywords}
            name = first[2:].replace("-", "_") if isinstance(first, str) and first.startswith("--") else first
            if name in NAMES and "default" in kw and literal(kw["default"]):
                found.append((node.lineno, f"flag {first} default=literal"))
            if isinstance(node.func, ast.Attribute) and node.func.attr == "get" and name in NAMES and len(
                    node.args) == 2 and literal(node.args[1]):
                found.append((node.lineno, f".get({first!r}, literal)"))
        if isinstance(node, ast.Constant) and node.value == ",".join(hp.TARGETS.default):
            found.append((node.lineno, "the default targets"))
    return found


@pytest.mark.parametrize("path", READERS)
def test_readers_state_no_default_of_their_own(path):
    found = _restated(ast.parse((ROOT / path).read_text()))
    assert not found, f"{path} restates hyperparameter defaults; take them from smt_core/hyperparameters.py: {found}"


def test_the_restatement_check_sees_a_restated_default():
    code = ('class A:\n    batch_size: int = 8\n    seed: int = Field(default=0)\n'
            'def f(max_seq_len=256): hp.get("num_devices", 1)\n'
            'p.add_argument("--lr-warmup-steps", type=int, default=0)\nhp["epochs"] = 1.0\nt = "q,k,v"\n')
    assert len(_restated(ast.parse(code))) == 7
