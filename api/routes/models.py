"""The model allowlist and the memory estimate the dashboard shows before launch (arithmetic on the model's config
and, given a training dataset, its rows' token lengths)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import CurrentOwner, SessionDep
from api.errors import APIError, invalid, not_found
from api.openai_errors import OpenAIRoute, openai_errors
from api.routes.common import errors, query_from
from api.schemas import EstimatePublic, ListPage, ModelDeleted, ModelPublic
from api.validation import check_spec
from service import catalog, estimates, finetuned
from service.models import Dataset, Job
from service.storable import is_plausible_id
from smt_core import hyperparameters as hp
from smt_core.dataformats import parse_line
from smt_core.estimate import DEVICES, estimate, model_shape

router = APIRouter(prefix="/v1/models", tags=["models"])
# OpenAI's GET and DELETE /v1/models/{id} answer OpenAI's errors (api/openai_errors.py); included after
# ``router``, so /v1/models/{id}/estimate is matched first. ``:path``: a base alias may hold a "/".
openai_router = APIRouter(prefix="/v1/models", tags=["models"], route_class=OpenAIRoute)
ModelId = Annotated[str, Path(max_length=700, description="a base model alias or a fine_tuned_model (ft:…)")]


def _created(alias: str) -> int:
    """OpenAI's ``created`` for a base model: its local folder's modification time (0 for a hub id or a
    packaged alias, which have none here)."""
    source = catalog.allowed_models().get(alias)
    try:
        return int(os.stat(source).st_mtime) if source and os.path.isabs(source) else 0
    except OSError:
        return 0


def _public(alias: str) -> ModelPublic:
    """An allowed model, described from its config.json (nulls and no targets without a local one)."""
    cfg = catalog.model_config(alias)
    shape = model_shape(cfg) if cfg else None
    return ModelPublic(id=alias, parameters=shape.total_params if shape else None,
                       architecture=shape.architecture if shape else None,
                       targets=list(shape.targets) if shape else [], created=_created(alias))


def _fine_tuned(job: Job, base: ModelPublic | None) -> ModelPublic:
    """A succeeded job as the model inference serves: its base's shape, its own targets and parameter count."""
    return ModelPublic(id=finetuned.name_of(job) or job.id, parameters=job.total_params or (base and base.parameters),
                       architecture=base.architecture if base else None, targets=list(job.targets),
                       created=job.finished_at or job.created_at, owned_by=job.owner_id, job=job.id, base=job.model)


@router.get("", response_model=ListPage[ModelPublic], responses=errors())
def list_models(owner: CurrentOwner, session: SessionDep) -> ListPage[ModelPublic]:
    """The base models jobs may use (``job`` null), then the caller's fine-tuned models, newest first: the
    ``fine_tuned_model`` of each succeeded job, which /v1/chat/completions and /v1/completions serve."""
    bases = {a: _public(a) for a in sorted(catalog.allowed_models())}
    tuned = [_fine_tuned(j, bases.get(j.model)) for j in finetuned.succeeded_jobs(session, owner.id)]
    return ListPage[ModelPublic].of([*bases.values(), *tuned])


@router.get("/{model_id}/estimate", response_model=EstimatePublic, responses=errors(404))
def read_estimate(owner: CurrentOwner, session: SessionDep, model_id: Annotated[str, Path(max_length=200)],
                  method: Annotated[str, Query(max_length=32)] = "smt",
                  budget: Annotated[float | None, query_from(hp.BUDGET)] = hp.BUDGET.default,
                  batch_size: Annotated[int, query_from(hp.BATCH_SIZE)] = hp.BATCH_SIZE.default,
                  max_seq_len: Annotated[int, query_from(hp.MAX_SEQ_LEN)] = hp.MAX_SEQ_LEN.default,
                  targets: Annotated[str, query_from(hp.TARGETS, max_length=64)] = ",".join(hp.TARGETS.default),
                  method_options: Annotated[str | None, Query(max_length=2000,
                                                              description="JSON object, as in a job")] = None,
                  training_dataset: Annotated[str | None, Query(
                      max_length=64, description="ds_… of yours: size activations by its rows' token lengths "
                      "(the widest batch: batch_size rows of the longest row) instead of max_seq_len")] = None,
                  device: Annotated[str, Query(max_length=16, description="cpu (fp32) or cuda (bf16 frozen "
                                               "weights, bf16 autocast)")] = "cpu",
                  gradient_checkpointing: Annotated[bool, query_from(hp.GRADIENT_CHECKPOINTING)
                                                    ] = hp.GRADIENT_CHECKPOINTING.default,
                  gradient_accumulation_steps: Annotated[int, query_from(hp.GRADIENT_ACCUMULATION_STEPS)
                                                         ] = hp.GRADIENT_ACCUMULATION_STEPS.default) -> EstimatePublic:
    """Trainable parameters and training memory by component, before launch."""
    if model_id not in catalog.allowed_models():
        raise not_found("model", model_id)
    cfg = catalog.model_config(model_id)
    if cfg is None:
        raise APIError(404, f"model {model_id!r}: no local config.json to estimate from", param="model_id")
    tlist = [t.strip() for t in targets.split(",") if t.strip()]
    # the same checks as job creation: what a job would refuse, the estimate refuses too
    options = _parse_options(method_options)
    _, b = check_spec(model_id, method, budget, tlist, options)
    if device not in DEVICES:
        raise invalid("device", f"must be one of {', '.join(DEVICES)}, got {device!r}")
    tokens = task = None
    if training_dataset is not None:
        ds = session.get(Dataset, training_dataset) if is_plausible_id(training_dataset) else None
        if ds is None or ds.owner_id != owner.id:  # another owner's dataset is as absent as a missing one
            raise APIError(404, f"no dataset {training_dataset!r}", param="training_dataset")
        tokens, task = estimates.dataset_tokens(session, ds, model_id), estimates.task_of(ds)
    est = estimate(cfg, method, b, tlist, batch_size, max_seq_len, options, device=device, tokens=tokens, task=task,
                   gradient_checkpointing=gradient_checkpointing,
                   gradient_accumulation_steps=gradient_accumulation_steps)
    return EstimatePublic.model_validate({"model": model_id, **est, "training_dataset": training_dataset,
                                          "tokens": tokens.to_dict() if tokens is not None else None})


def _parse_options(text: str | None) -> dict:
    """The job body's method_options, passed as JSON in the query (block_size changes SMT's count)."""
    if not text:
        return {}
    try:
        options = parse_line(text)  # strict JSON: no NaN or Infinity
    except (ValueError, RecursionError):
        raise invalid("method_options", "must be a JSON object") from None
    if not isinstance(options, dict):
        raise invalid("method_options", "must be a JSON object")
    return options


@openai_router.get("/{model_id:path}", response_model=ModelPublic, responses=openai_errors(404))
def read_model(owner: CurrentOwner, session: SessionDep, model_id: ModelId) -> ModelPublic:
    """One model as listed: a base model alias, or one of the caller's fine-tuned models."""
    job = finetuned.fine_tuned_job(session, owner.id, model_id)
    if job is not None:
        return _fine_tuned(job, _public(job.model) if job.model in catalog.allowed_models() else None)
    if model_id not in catalog.allowed_models():
        raise APIError(404, f"no model {model_id!r}", param="model_id")
    return _public(model_id)


@openai_router.delete("/{model_id:path}", response_model=ModelDeleted, responses=openai_errors(403, 404))
def delete_model(owner: CurrentOwner, session: SessionDep, model_id: ModelId) -> ModelDeleted:
    """Delete a fine-tuned model, as at OpenAI: it is no longer listed or served and its job's
    ``fine_tuned_model`` is null; the job, its artifacts and result files stay. Base models cannot be deleted."""
    job = finetuned.fine_tuned_job(session, owner.id, model_id)
    if job is None:
        if model_id in catalog.allowed_models():
            raise APIError(403, f"model {model_id!r} is a base model: only fine-tuned models can be deleted",
                           param="model_id")
        raise APIError(404, f"no model {model_id!r}", param="model_id")
    finetuned.delete_model(session, job)
    session.commit()
    return ModelDeleted(id=model_id)
