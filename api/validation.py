"""Checks a job request against the model allowlist, the method's options and the owner's datasets, before
any row is written. Each failure is a 422 naming the field."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import APIError, invalid
from api.schemas import JobCreate
from service import catalog, quotas, storable
from service.models import Dataset, Job, JobStatus
from service.settings import get_settings
from service.storable import is_plausible_id
from smt_core.estimate import ModelShape, model_shape, plan
from smt_core.hyperparameters import DEFAULT_EPOCHS, combination_error
from smt_core.methods.options import ConfigError
from smt_core.methods.spec import MethodSpec, resolve_budget
from smt_core.registry import served_specs
from smt_core.spec import LOGICAL_TARGETS


def _check_options(spec: MethodSpec, options: dict[str, Any]) -> None:
    """The method's own config built from the body's options (typed JSON: no string parsing), so the API
    accepts exactly what the engine accepts; step counts are also capped by SPARSETUNE_MAX_STEPS."""
    try:
        config = spec.parse(options)
    except ConfigError as exc:
        raise invalid(f"method_options.{exc.field}", exc.reason) from None
    limit = get_settings().max_steps
    for opt in spec.config.options():
        value = getattr(config, opt.name)
        if opt.bounded_by_max_steps and value is not None and value > limit:
            raise invalid(f"method_options.{opt.name}", f"{value} is over the limit of {limit} (SPARSETUNE_MAX_STEPS)")


def _check_budget(spec: MethodSpec, budget: int | float | None, total: int | None) -> int | float | None:
    """The budget as the engine takes it (a whole float >= 1 is a count); 422 if it cannot be one."""
    if not spec.uses_budget:
        return budget  # e.g. full fine-tuning ignores the budget and reports its real count
    if budget is None:
        raise invalid("budget", f"required for method {spec.name}")
    try:
        resolve_budget(budget, total or 1)  # the engine's reading of it: 422 where it has none
    except ConfigError as exc:
        raise invalid(exc.field, exc.reason) from None
    if isinstance(budget, float) and budget.is_integer() and budget >= 1:
        budget = int(budget)  # a whole float is a count
    if isinstance(budget, int) and total is not None and budget > total:
        raise invalid("budget", f"{budget} exceeds the model's {total} parameters")
    return budget


def _owned_dataset(session: Session, owner_id: str, ds_id: str | None, param: str) -> Dataset | None:
    if ds_id is None:
        return None
    ds = session.get(Dataset, ds_id) if is_plausible_id(ds_id) else None
    if ds is None or ds.owner_id != owner_id:
        raise invalid(param, f"no dataset {ds_id!r}")
    return ds


def check_spec(model: str, method: str, budget: int | float | None, targets: list[str],
               options: dict[str, Any]) -> tuple[ModelShape | None, int | float | None]:
    """What a job and an estimate share: model, method, targets, budget and method options (422 naming the
    field). Returns the model's shape (None without a local config.json) and the budget as the engine takes it."""
    models = catalog.allowed_models()
    if model not in models:
        raise invalid("model", f"unknown model {model!r}; allowed: {', '.join(sorted(models)) or 'none'}")
    spec = next((s for s in served_specs() if s.name == method), None)
    if spec is None:
        names = ", ".join(s.name for s in served_specs())
        raise invalid("method", f"unknown method {method!r}; expected one of {names}")
    bad = [t for t in targets if t not in LOGICAL_TARGETS]
    if bad or len(set(targets)) != len(targets) or not targets:
        raise invalid("targets", f"unknown or repeated {bad or targets}; expected names from {','.join(LOGICAL_TARGETS)}")
    cfg = catalog.model_config(model)
    shape = model_shape(cfg) if cfg else None
    if shape is not None:
        missing = [t for t in targets if t not in shape.targets]
        if missing:
            raise invalid("targets", f"{shape.architecture} has no {','.join(missing)} projection")
    budget = _check_budget(spec, budget, shape.total_params if shape else None)
    try:
        storable.check_value(options)
    except ValueError as exc:
        raise invalid("method_options", str(exc)) from None
    _check_options(spec, options)
    if shape is not None:  # what the engine would refuse on this model: a budget below one unit, fused targets
        try:
            plan(shape, spec.name, budget, targets, options)
        except ConfigError as exc:
            raise invalid(exc.field, exc.reason) from None
    return shape, budget


def _same_budget(a: Any, b: Any, shape: ModelShape | None) -> bool:
    """Budgets as the engine reads them: 0.01 and the count it resolves to on this model are the same."""
    if a == b:
        return True
    if a is None or b is None or shape is None:
        return False
    try:
        return resolve_budget(a, shape.total_params) == resolve_budget(b, shape.total_params)
    except ConfigError:
        return False


SELECTION_OPTION = "selection"  # SMT's option (reuse | fresh) for a continued job; not the job phase


def _check_init_from(session: Session, owner_id: str, body: JobCreate, shape: ModelShape | None,
                     datasets: list[Dataset | None]) -> None:
    """A continued job needs a succeeded parent of the same owner (another's or a missing one: 404, as
    everywhere) with the same model, method, targets and budget (its adapter must fit: 422 naming
    init_from), and no labels its classification head never had. ``selection`` only means something here."""
    if body.init_from is None:
        if SELECTION_OPTION in body.method_options:
            raise invalid("method_options.selection", "only applies when continuing a job (init_from)")
        return
    parent = session.get(Job, body.init_from) if is_plausible_id(body.init_from) else None
    if parent is None or parent.owner_id != owner_id:
        raise APIError(404, f"no job {body.init_from!r}", param="init_from")
    if parent.status != JobStatus.succeeded:
        raise invalid("init_from", f"job {parent.id} is {parent.status.value}: only a succeeded job can be continued")
    wrong = [f"{name} {theirs!r} (this job: {ours!r})" for name, theirs, ours in (
        ("model", parent.model, body.model), ("method", parent.method, body.method),
        ("targets", sorted(parent.targets), sorted(body.targets))) if theirs != ours]
    if not _same_budget(parent.budget, body.budget, shape):
        wrong.append(f"budget {parent.budget!r} (this job: {body.budget!r})")
    if wrong:
        raise invalid("init_from", f"job {parent.id} differs: " + "; ".join(wrong))
    known = session.get(Dataset, parent.training_dataset_id) if parent.training_dataset_id else None
    if known is not None and known.label_names is not None:
        new = sorted({label for ds in datasets if ds is not None for label in ds.label_names or []}
                     - set(known.label_names))
        if new:
            raise invalid("init_from", f"labels {new} are not among job {parent.id}'s {known.label_names}: its "
                          "classification head has no rows for them")


def validate_job(session: Session, owner_id: str, body: JobCreate) -> tuple[dict[str, Any], Dataset | None]:
    """Return the resolved hyperparameters and the training dataset's row, which the caller needs next (the
    session holds rows weakly: a second ``get`` after this one's row is dropped queries again); raise
    APIError(422) naming the first bad field."""
    shape, _ = check_spec(body.model, body.method, body.budget, list(body.targets), body.method_options)
    train = _owned_dataset(session, owner_id, body.training_dataset, "training_dataset")
    val = _owned_dataset(session, owner_id, body.validation_dataset, "validation_dataset")
    if shape is not None and not shape.causal and train is not None and train.format != "classification":
        raise invalid("training_dataset", f"{body.model} is an encoder ({shape.architecture}): it trains on "
                      f"classification data only, not {train.format}")
    if val is not None and train is not None and val.format != train.format:
        raise invalid("validation_dataset", f"format {val.format} differs from the training set's {train.format}")
    _check_init_from(session, owner_id, body, shape, [train, val])
    hp = body.hyperparameters.model_dump()
    if hp["steps"] is None and hp["epochs"] is None:
        hp["epochs"] = DEFAULT_EPOCHS  # what the engine runs; stored, so the job says it
    quotas.check_steps(hp, train.rows if train is not None else None)
    bad_combination = combination_error(hp)
    if bad_combination:
        raise invalid(f"hyperparameters.{bad_combination[0]}", bad_combination[1])
    if hp["lr_warmup_steps"] > get_settings().max_steps:
        raise invalid("hyperparameters.lr_warmup_steps", f"{hp['lr_warmup_steps']} is over the limit of "
                      f"{get_settings().max_steps} (SPARSETUNE_MAX_STEPS)")
    return hp, train
