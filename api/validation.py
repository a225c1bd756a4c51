"""Checks a job request against the model allowlist, the method's options and the owner's datasets, before
any row is written. Each failure is a 422 naming the field."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from api import catalog, quotas, storable
from api.errors import invalid
from api.models import Dataset
from api.schemas import JobCreate
from api.settings import get_settings
from api.storable import is_plausible_id
from smt_core.estimate import METHOD_OPTIONS, METHODS, ModelShape, budget_count, model_shape
from smt_core.spec import LOGICAL_TARGETS

ZERO_ALLOWED = {"head_steps"}  # integer options for which 0 means "skip"
# upper bounds of the numeric options (any other integer option: INT_MAX, float: FLOAT_MAX); steps-like
# options are bounded by SPARSETUNE_MAX_STEPS as well
OPTION_MAX: dict[str, int | float] = {"block_size": 4096, "selection_steps": 10_000_000, "head_steps": 10_000_000,
                                      "alpha": 10_000.0}
STEP_OPTIONS = ("selection_steps", "head_steps")
INT_MAX, FLOAT_MAX = 1_000_000, 1_000_000.0


def check_options(method: str, options: dict[str, Any]) -> None:
    allowed = METHOD_OPTIONS[method]
    for key, value in options.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise invalid(f"method_options.{key}", f"unknown option for {method} (known: {known})")
        kind = allowed[key]
        if isinstance(kind, tuple):
            if value not in kind:
                raise invalid(f"method_options.{key}", f"must be one of {', '.join(kind)}, got {value!r}")
        elif kind is bool:
            if not isinstance(value, bool):
                raise invalid(f"method_options.{key}", "must be true or false")
        elif kind is int:
            low = 0 if key in ZERO_ALLOWED else 1
            high = OPTION_MAX.get(key, INT_MAX)
            if key in STEP_OPTIONS:
                high = min(high, get_settings().max_steps)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise invalid(f"method_options.{key}", f"must be an integer in [{low}, {high}], got {_short(value)}")
        elif kind is float:
            high = OPTION_MAX.get(key, FLOAT_MAX)
            if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                    or not 0 <= value <= high):
                raise invalid(f"method_options.{key}", f"must be a number in [0, {high:g}], got {_short(value)}")
    if method == "snell" and "sparsity" in options and not 0 <= options["sparsity"] < 1:
        raise invalid("method_options.sparsity", f"must be in [0, 1), got {options['sparsity']}")
    if "dropout" in options and not 0 <= options["dropout"] < 1:
        raise invalid("method_options.dropout", f"must be in [0, 1), got {options['dropout']}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_budget(method: str, budget: int | float | None, total: int | None) -> int | float | None:
    """The budget as the engine takes it (a whole float >= 1 is a count); 422 if it cannot be one."""
    if method == "full":
        return budget  # full fine-tuning ignores the budget and reports its real count
    if budget is None:
        raise invalid("budget", f"required for method {method}")
    if isinstance(budget, float) and budget.is_integer() and budget >= 1:
        budget = int(budget)
    if isinstance(budget, float) and not 0 < budget < 1:
        raise invalid("budget", f"a fraction must be in (0, 1), got {budget}")
    if isinstance(budget, int) and budget < 1:
        raise invalid("budget", f"a parameter count must be >= 1, got {budget}")
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
    if method not in METHODS:
        raise invalid("method", f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    bad = [t for t in targets if t not in LOGICAL_TARGETS]
    if bad or len(set(targets)) != len(targets) or not targets:
        raise invalid("targets", f"unknown or repeated {bad or targets}; expected names from {','.join(LOGICAL_TARGETS)}")
    cfg = catalog.model_config(model)
    shape = model_shape(cfg) if cfg else None
    if shape is not None:
        missing = [t for t in targets if t not in shape.targets]
        if missing:
            raise invalid("targets", f"{shape.architecture} has no {','.join(missing)} projection")
    budget = _check_budget(method, budget, shape.total_params if shape else None)
    try:
        storable.check_value(options)
    except ValueError as exc:
        raise invalid("method_options", str(exc)) from None
    check_options(method, options)
    if method in ("lora", "dora") and shape is not None and "rank" not in options:
        want = budget_count(budget, shape.total_params) or 0
        per_rank = sum(o + i for t in targets for o, i in [shape.targets[t]]) * shape.layers
        if want < per_rank:
            raise invalid("budget", f"{want} parameters is below rank 1 for {method} on these targets "
                          f"(needs {per_rank})")
    bs = options.get("block_size")
    if method == "smt" and bs is not None and shape is not None:
        sides = [s for t in targets for s in shape.targets[t]]
        if bs & (bs - 1) or any(s % bs for s in sides):
            raise invalid("method_options.block_size", f"{bs} must be a power of two dividing every target side {sorted(set(sides))}")
    return shape, budget


def validate_job(session: Session, owner_id: str, body: JobCreate) -> dict[str, Any]:
    """Return the resolved hyperparameters; raise APIError(422) naming the first bad field."""
    shape, _ = check_spec(body.model, body.method, body.budget, list(body.targets), body.method_options)
    train = _owned_dataset(session, owner_id, body.training_dataset, "training_dataset")
    val = _owned_dataset(session, owner_id, body.validation_dataset, "validation_dataset")
    if shape is not None and not shape.causal and train is not None and train.format != "classification":
        raise invalid("training_dataset", f"{body.model} is an encoder ({shape.architecture}): it trains on "
                      f"classification data only, not {train.format}")
    if val is not None and train is not None and val.format != train.format:
        raise invalid("validation_dataset", f"format {val.format} differs from the training set's {train.format}")
    hp = body.hyperparameters.model_dump()
    if hp["steps"] is None and hp["epochs"] is None:
        hp["epochs"] = 1.0
    quotas.check_steps(hp, train.rows if train is not None else None)
    if hp["lr_warmup_steps"] > get_settings().max_steps:
        raise invalid("hyperparameters.lr_warmup_steps", f"{hp['lr_warmup_steps']} is over the limit of "
                      f"{get_settings().max_steps} (SPARSETUNE_MAX_STEPS)")
    return hp
