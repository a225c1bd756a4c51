"""OpenAI's fine-tuning jobs over our native jobs, both ways.

In: OpenAI's creation body becomes a native ``JobCreate`` (then POST /v1/jobs' own code runs it): ``method.type``
``supervised`` is the service's default method (SMT at the default 1% budget), or one of our methods with its
object beside it; ``n_epochs``/``batch_size``/``learning_rate_multiplier`` become ``epochs``/``batch_size``/
``learning_rate`` (the multiplier times the method's default rate for this model, computed torch-free from the
method's spec); ``auto`` or absent leaves the native default. A native refusal names the native field: here it is
renamed to the field the caller sent (``training_dataset`` → ``training_file``…).

Out: a native job, event or adapter as OpenAI's ``fine_tuning.job``, ``fine_tuning.job.event`` and
``fine_tuning.job.checkpoint``: ``method.type`` is always ``supervised`` (OpenAI's literal) with the resolved
hyperparameters, and our method's description beside it under its own key.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, service_status
from api.openai_files import ADAPTER, RESULT_NAMES, result_ids
from api.schemas import (
    CheckpointMetricsPublic,
    FineTuningCheckpointPublic,
    FineTuningErrorPublic,
    FineTuningEventPublic,
    FineTuningHyperparametersPublic,
    FineTuningJobCreate,
    FineTuningJobPublic,
    FineTuningMethodPublic,
    JobCreate,
    OpenAIHyperparameters,
    OurMethodPublic,
    SupervisedPublic,
)
from service import catalog, finetuned
from service.errors import ServiceError
from service.estimates import task_of
from service.models import Artifact, Dataset, Event, Job, MetricPoint
from service.states import EventType, JobStatus
from smt_core import hyperparameters as hp
from smt_core.estimate import model_shape
from smt_core.methods.options import ConfigError
from smt_core.methods.spec import resolve_budget
from smt_core.registry import get_spec, served_specs

SUPERVISED = "supervised"
SUPERVISED_METHOD = "smt"  # the service's default method (INTERFACE.md: SMT at the default 1% budget)
EVENT_PREFIX, CHECKPOINT_PREFIX = "ftevent-", "ftckpt-"
LEVELS = {"warning": "warn", "warn": "warn", "error": "error"}  # our log levels in OpenAI's (else info)
NATIVE_HP = {"n_epochs": "epochs", "learning_rate_multiplier": "learning_rate"}  # OpenAI name -> native
EXTRA_HP = ("steps", "max_seq_len", "lr_warmup_steps", "num_devices", "gradient_checkpointing")


def default_learning_rate(model: str, method: str, total_params: int | None = None,
                          budget: float | int | None = None, *, classification: bool = False) -> float:
    """The method's default rate for this base model, budget and task, as the engine picks it (smaller on
    larger models; SMT's also on larger budgets, and lower for text than for a classification head); the
    model's size from the job once it ran, else from its config.json (none: the small-model rate at the
    default budget)."""
    if not total_params:
        cfg = catalog.model_config(model)
        total_params = model_shape(cfg).total_params if cfg else 0
    try:
        budget_params = resolve_budget(budget, total_params) if budget is not None and total_params else None
    except ConfigError:
        budget_params = None  # job validation names the bad budget
    return get_spec(method).learning_rate_for(total_params, budget_params, classification=classification)


def trains_classifier(session: Session, owner_id: str, dataset_id: str | None) -> bool:
    """Whether the owner's training dataset holds classification rows (a head trains, at its task's rate);
    False for text and for an unknown id (the job's own checks name that)."""
    ds = session.get(Dataset, dataset_id) if dataset_id else None
    return ds is not None and ds.owner_id == owner_id and task_of(ds) == finetuned.CLASSIFICATION


def _method_choice(body: FineTuningJobCreate) -> tuple[str, Any, OpenAIHyperparameters | None, str]:
    """(native method, our method object or None, hyperparameters, their param prefix) from ``method``."""
    names = [s.name for s in served_specs()]
    m = body.method
    if m is None:
        return SUPERVISED_METHOD, None, body.hyperparameters, "hyperparameters"
    if body.hyperparameters is not None:
        raise APIError(400, "hyperparameters: give them in method.<type>.hyperparameters, not both",
                       param="hyperparameters")
    given = [n for n in (SUPERVISED, *names) if getattr(m, n) is not None and n != m.type]
    if given:
        raise APIError(400, f"method.{given[0]}: does not match method.type {m.type!r}", param=f"method.{given[0]}")
    if m.type == SUPERVISED:
        sup = m.supervised
        return SUPERVISED_METHOD, None, sup.hyperparameters if sup else None, "method.supervised.hyperparameters"
    if m.type not in names:
        raise APIError(400, f"method.type: {m.type!r} is not supported; expected {SUPERVISED} or one of "
                       f"{', '.join(names)}", param="method.type")
    ours = getattr(m, m.type)
    if ours is None:
        raise APIError(400, f"method.{m.type}: required with method.type {m.type!r}", param=f"method.{m.type}")
    return m.type, ours, ours.hyperparameters, f"method.{m.type}.hyperparameters"


def _native_hyperparameters(model: str, method: str, given: OpenAIHyperparameters | None,
                            prefix: str, budget: float | int | None = None, *,
                            classification: bool = False) -> dict[str, Any]:
    """OpenAI's hyperparameters as the native ones; ``auto`` and absent values are left to the native defaults."""
    out: dict[str, Any] = {}
    if given is None:
        return out
    if isinstance(given.n_epochs, int):
        out["epochs"] = float(given.n_epochs)
    if isinstance(given.batch_size, int):
        out["batch_size"] = given.batch_size
    if isinstance(given.learning_rate_multiplier, float | int):
        rate = given.learning_rate_multiplier * default_learning_rate(model, method, budget=budget,
                                                                      classification=classification)
        if not 0 < rate <= (hp.LEARNING_RATE.maximum or math.inf):
            raise APIError(400, f"{prefix}.learning_rate_multiplier: gives a learning rate of {rate:g}, over "
                           f"{hp.LEARNING_RATE.maximum}", param=f"{prefix}.learning_rate_multiplier")
        out["learning_rate"] = rate
    out.update({k: v for k in EXTRA_HP if (v := getattr(given, k, None)) is not None})
    return out


def job_create_of(body: FineTuningJobCreate, classification: bool = False) -> tuple[JobCreate, dict[str, str]]:
    """The native job body for OpenAI's (``classification``: its training file holds classification rows),
    and the renames of native params back to the ones the caller sent."""
    if body.integrations:
        raise APIError(400, "integrations: not supported", param="integrations")
    method, ours, given, hp_prefix = _method_choice(body)
    where = f"method.{method}" if ours is not None else "method"
    native: dict[str, Any] = {
        "model": body.model, "training_dataset": body.training_file, "validation_dataset": body.validation_file,
        "method": method, "suffix": body.suffix, "metadata": dict(body.metadata or {}),
        "hyperparameters": _native_hyperparameters(body.model, method, given, hp_prefix,
                                                   ours.budget if ours is not None else None,
                                                   classification=classification)}
    if body.seed is not None:
        native["seed"] = body.seed
    if ours is not None:
        native.update(budget=ours.budget, targets=list(ours.targets), method_options=dict(ours.options))
    renames = {"training_dataset": "training_file", "validation_dataset": "validation_file",
               "method": "method.type", "budget": f"{where}.budget", "targets": f"{where}.targets",
               "method_options": f"{where}.options", "hyperparameters": hp_prefix,
               **{f"hyperparameters.{n}": f"{hp_prefix}.{o}" for o, n in NATIVE_HP.items()}}
    try:
        return JobCreate.model_validate(native), renames
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise renamed(APIError(400, f"{param}: {err['msg'].removeprefix('Value error, ')}", param=param),
                      renames) from None


def renamed(exc: APIError | ServiceError, renames: dict[str, str]) -> APIError:
    """A native refusal as OpenAI's caller should read it: the field it sent named, not the native one."""
    status = exc.status if isinstance(exc, APIError) else service_status(exc)
    param, message = exc.param, exc.message
    if param:
        head, _, rest = param.partition(".")
        new = renames.get(param) or (f"{renames[head]}.{rest}" if head in renames and rest else param)
        if new != param:
            message = new + message[len(param):] if message.startswith(param) else message
            param = new
    details = exc.details if isinstance(exc, APIError) else None
    total = exc.total if isinstance(exc, APIError) else None
    return APIError(status, message, param=param, code=exc.code, details=details, total=total)


def _n_epochs(session: Session, job: Job, h: dict[str, Any]) -> int:
    """OpenAI's integer ``n_epochs``: the epochs asked for (rounded up), or the passes the steps make."""
    if h.get("epochs"):
        return max(1, math.ceil(float(h["epochs"])))
    ds = session.get(Dataset, job.training_dataset_id) if job.training_dataset_id else None
    rows = ds.rows * (1 - (job.holdout_fraction or 0)) if ds is not None else 0
    steps = h.get("steps") or 0
    return max(1, math.ceil(steps * int(h.get("batch_size") or 1) / rows)) if rows and steps else 1


def hyperparameters_of(session: Session, job: Job) -> FineTuningHyperparametersPublic:
    """The job's resolved hyperparameters in OpenAI's names; the multiplier is the rate over the method's
    default for this model (1.0 when the default was used)."""
    h = hp.job_values(job.hyperparameters) | job.hyperparameters
    rate = h.get("learning_rate")
    multiplier = 1.0
    if rate:
        default = default_learning_rate(job.model, job.method, job.total_params, job.budget,
                                        classification=trains_classifier(session, job.owner_id,
                                                                         job.training_dataset_id))
        multiplier = float(f"{rate / default:.6g}")
    return FineTuningHyperparametersPublic(n_epochs=_n_epochs(session, job, h), batch_size=int(h["batch_size"]),
                                           learning_rate_multiplier=multiplier)


def _metadata(meta: dict[str, Any] | None) -> dict[str, str]:
    """OpenAI's metadata holds strings: a native job's other JSON values are shown as JSON text."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}


def fine_tuning_job(session: Session, job: Job) -> FineTuningJobPublic:
    """The native job as OpenAI's ``fine_tuning.job``."""
    hyper = hyperparameters_of(session, job)
    ours = OurMethodPublic(budget=job.budget, targets=list(job.targets), options=dict(job.method_options),
                           trainable_params=job.trainable_params, hyperparameters=dict(job.hyperparameters))
    method = FineTuningMethodPublic(supervised=SupervisedPublic(hyperparameters=hyper),
                                    **{job.method: ours.model_dump()})
    error = None
    if job.error:  # {code, message} from the worker (service/states.py JobErrorCode): OpenAI's {code, message, param}
        error = FineTuningErrorPublic(code=str(job.error.get("code") or "error"),
                                      message=str(job.error.get("message") or ""), param=job.error.get("param"))
    return FineTuningJobPublic(
        id=job.id, created_at=job.created_at, error=error,
        fine_tuned_model=finetuned.name_of(job), finished_at=job.finished_at, hyperparameters=hyper,
        model=job.model, organization_id=job.owner_id, result_files=[str(r) for r in result_ids(session, job)],
        seed=job.seed, status=job.status.value, trained_tokens=job.trained_tokens,
        training_file=job.training_dataset_id or "", validation_file=job.validation_dataset_id,
        estimated_finish=job.estimated_finish if job.status == JobStatus.running else None,
        metadata=_metadata(job.meta), method=method, user_provided_suffix=job.suffix)


def _event_text(ev: Event) -> tuple[str, str]:
    """(level, message) of a native event."""
    d = ev.data or {}
    if ev.type == EventType.log:
        return LEVELS.get(str(d.get("level")), "info"), str(d.get("message", ""))
    if ev.type == EventType.metric:
        parts = [f"{k}={d[k]:.4g}" for k in ("train_loss", "eval_loss", "eval_accuracy")
                 if isinstance(d.get(k), int | float)]
        total = f"/{d['total_steps']}" if d.get("total_steps") else ""
        return "info", f"Step {d.get('step')}{total}: {', '.join(parts) or 'metrics'}"
    status = str(d.get("status", ""))
    err = d.get("error") if isinstance(d.get("error"), dict) else None
    level = "error" if status == JobStatus.failed else "info"
    if ev.type == EventType.end:
        return level, f"Job {status}" + (f": {err.get('message')}" if err else "")
    phase = f" ({d['phase']})" if d.get("phase") else ""
    return level, f"Job {status}{phase}" + (f": {err.get('message')}" if err else "")


def event_of(ev: Event) -> FineTuningEventPublic:
    level, message = _event_text(ev)
    return FineTuningEventPublic(id=f"{EVENT_PREFIX}{ev.id}", created_at=ev.created_at, level=level,
                                 message=message, data={"type": ev.type.value, **(ev.data or {})},
                                 type="metrics" if ev.type == EventType.metric else "message")


def event_anchor(after: str | None) -> int | None:
    """The native event id an ``after`` cursor names (400 when it is not an event id)."""
    if after is None:
        return None
    digits = after.removeprefix(EVENT_PREFIX)
    if not (after.startswith(EVENT_PREFIX) and digits.isascii() and digits.isdigit() and len(digits) <= 18):
        raise APIError(400, f"after: no event {after!r} in this list", param="after")
    return int(digits)


def checkpoints_of(session: Session, job: Job) -> list[FineTuningCheckpointPublic]:
    """The adapter a succeeded job serves, as OpenAI's checkpoint: the best evaluation's when the job kept one
    (``metric_for_best``: its fine_tuned_model, inference and merged.tar use it), else the final adapter (only
    the latest resumable checkpoint is kept while a job runs, and it is dropped when the job ends); none once
    the fine-tuned model was deleted."""
    name = finetuned.name_of(job)
    final = job.metrics or {}
    best = final.get("best") if isinstance(final.get("best"), dict) else None
    best_art = session.get(Artifact, (job.id, "adapter-best.safetensors")) if best else None
    art = best_art or session.get(Artifact, (job.id, RESULT_NAMES[ADAPTER]))
    if name is None or art is None:
        return []
    points = list(session.scalars(select(MetricPoint).where(MetricPoint.job_id == job.id)
                                  .order_by(MetricPoint.step.desc())))
    step = int(best["step"]) if best_art is not None and best else (
        job.steps_completed or (points[0].step if points else 0))
    upto = [p for p in points if p.step <= step]
    last_train = next((p.train_loss for p in upto if p.train_loss is not None), None)
    last_eval = next((p for p in upto if p.eval_loss is not None), None)
    full_loss = final.get("eval_loss") if isinstance(final.get("eval_loss"), int | float) else None
    full_acc = final.get("eval_accuracy") if isinstance(final.get("eval_accuracy"), int | float) else None
    if best_art is not None:  # the final figures are the last adapter's, not this one's
        full_loss = full_acc = None
    metrics = CheckpointMetricsPublic(step=float(step), train_loss=last_train,
                                      valid_loss=last_eval.eval_loss if last_eval else None,
                                      valid_mean_token_accuracy=last_eval.eval_accuracy if last_eval else None,
                                      full_valid_loss=full_loss, full_valid_mean_token_accuracy=full_acc)
    return [FineTuningCheckpointPublic(id=f"{CHECKPOINT_PREFIX}{job.id}-{step}", created_at=art.created_at,
                                       fine_tuned_model_checkpoint=name, fine_tuning_job_id=job.id,
                                       metrics=metrics, step_number=step)]
