"""Fine-tuned model names and what a ``model`` in an inference request stands for.

A job that succeeds is served as the model ``ft:<base>:<suffix or method>:<job id>`` (OpenAI's own shape,
``ft:gpt-4o-mini:org:suffix:id``, minus the organisation). The name is computed from the row, never stored, so it
cannot disagree with the job; parsing reads only the job id (the last ``:`` part) and then checks that the
whole name is the one the job has, since a base alias or a suffix may itself contain ``:``.

Torch-free: the API resolves names and decides what a model can do (generate or classify) from rows and
config.json files alone, before any inference process is asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import catalog, estimates
from service.errors import Conflict, Invalid, NotFound
from service.models import Dataset, Job
from service.states import JobStatus
from service.storable import is_plausible_id
from smt_core.estimate import model_shape

PREFIX = "ft:"
CAUSAL_LM, CLASSIFICATION = "causal_lm", "classification"


def fine_tuned_name(status: str, base: str, suffix: str | None, method: str, job_id: str,
                    deleted_at: float | None = None) -> str | None:
    """``ft:<base>:<suffix or method>:<job id>`` once the job succeeded (a model exists only then), else None;
    None again once ``DELETE /v1/models/{name}`` deleted the model (``deleted_at``; the job stays)."""
    if status != JobStatus.succeeded or deleted_at is not None:
        return None
    return f"{PREFIX}{base}:{suffix or method}:{job_id}"


def name_of(job: Job) -> str | None:
    """The job's fine-tuned model name (see :func:`fine_tuned_name`)."""
    return fine_tuned_name(job.status, job.model, job.suffix, job.method, job.id, job.model_deleted_at)


def job_id_of(name: str) -> str | None:
    """The job id a fine-tuned model name ends with, or None when ``name`` is not shaped like one."""
    if not name.startswith(PREFIX):
        return None
    parts = name.split(":")
    if len(parts) < 4 or not parts[-1] or not is_plausible_id(parts[-1]):
        return None
    return parts[-1]


def owned_job_of(session: Session, owner_id: str, model: str) -> Job:
    """The owner's job a fine-tuned model name ends with; another owner's is as absent as a missing one (404)."""
    job_id = job_id_of(model)
    job = session.get(Job, job_id) if job_id is not None else None
    if job is None or job.owner_id != owner_id:
        raise NotFound(f"no model {model!r}", param="model")
    return job


def fine_tuned_job(session: Session, owner_id: str, model: str) -> Job | None:
    """The owner's succeeded, undeleted job whose ``fine_tuned_model`` is exactly ``model``; None when ``model``
    is not shaped like a fine-tuned name; NotFound when it is but names no model of the owner's."""
    if job_id_of(model) is None:
        return None
    job = owned_job_of(session, owner_id, model)
    if name_of(job) != model:  # not succeeded, deleted, or the right id under another base or suffix
        raise NotFound(f"no model {model!r}", param="model")
    return job


def delete_model(session: Session, job: Job) -> None:
    """OpenAI's ``DELETE /v1/models/{fine_tuned_model}``: the model is gone (not listed, not served, the job's
    ``fine_tuned_model`` null), the job and its artifacts stay."""
    job.model_deleted_at = time.time()


@dataclass(frozen=True)
class Target:
    """What an inference request runs: a base model alone or with one succeeded job's adapter. ``task`` is
    ``causal_lm`` or ``classification`` where the API can tell, None where only the inference process can
    (a hub id without a local config.json, a job whose training dataset was deleted)."""

    model: str  # the name as the caller gave it (echoed in OpenAI's responses)
    base: str
    job_id: str | None
    task: str | None

    def wire(self) -> dict[str, Any]:
        """The ``target`` object of the inference process's internal requests."""
        return {"base": self.base, "job_id": self.job_id}


def _base_is_causal(base: str) -> bool | None:
    """Whether the base model generates text (an encoder only classifies); None without a local config."""
    cfg = catalog.model_config(base)
    return model_shape(cfg).causal if cfg else None


def task_of_job(session: Session, job: Job) -> str | None:
    """What the job's adapter does: an encoder base always trained a classification head; otherwise the
    training dataset's format says (classification rows train a head, the rest a causal LM's loss)."""
    if _base_is_causal(job.model) is False:
        return CLASSIFICATION
    ds = session.get(Dataset, job.training_dataset_id) if job.training_dataset_id else None
    return estimates.task_of(ds)


def target_of_job(session: Session, job: Job, model: str | None = None) -> Target:
    """The target serving an (already owner-checked) job; a job that has not succeeded has no model yet."""
    if job.status != JobStatus.succeeded:
        param = "model" if model is not None else "job_id"
        raise Conflict(f"job {job.id} is {job.status.value}: only a succeeded job can be served", param=param)
    if job.model_deleted_at is not None:  # DELETE /v1/models/{name}: the job stays, its model serves nothing
        raise NotFound(f"job {job.id}'s fine-tuned model was deleted", param="model" if model is not None else "job_id")
    return Target(model or name_of(job) or job.id, job.model, job.id, task_of_job(session, job))


def resolve(session: Session, owner_id: str, model: str) -> Target:
    """A request's ``model``: one of the owner's fine-tuned models or an allowed base alias. Another owner's
    job is as absent as a missing one (404); a job of the caller's that has not succeeded is a 409."""
    job_id = job_id_of(model)
    if job_id is not None:
        job = owned_job_of(session, owner_id, model)
        target = target_of_job(session, job, model)
        if name_of(job) != model:  # the right id under another base or suffix names no model
            raise NotFound(f"no model {model!r}; job {job.id} is served as {name_of(job)!r}", param="model")
        return target
    if model not in catalog.allowed_models():
        raise NotFound(f"no model {model!r}: give a fine_tuned_model (ft:…) of a succeeded job or a base model "
                       "alias listed by GET /v1/models", param="model")
    causal = _base_is_causal(model)
    return Target(model, model, None, CLASSIFICATION if causal is False else CAUSAL_LM if causal else None)


def check_generates(target: Target) -> None:
    """Chat and completions need a model that generates text; a classifier answers POST …/predict."""
    if target.task != CLASSIFICATION:
        return
    if target.job_id is None:
        raise Invalid(f"model {target.model!r} is an encoder: it generates no text. Fine-tune it on a "
                      "classification dataset and use POST /v1/jobs/{id}/predict", param="model")
    raise Invalid(f"model {target.model!r} is a classification model: use POST /v1/jobs/{target.job_id}/predict",
                  param="model")


def check_classifies(target: Target) -> None:
    """Predict needs a classification job; a job that trained a causal LM answers chat and completions."""
    if target.task == CAUSAL_LM:
        raise Invalid(f"job {target.job_id} is not a classification job: use POST /v1/chat/completions or "
                      f"/v1/completions with model {target.model!r}", param="job_id")


def succeeded_jobs(session: Session, owner_id: str, limit: int = 1000) -> list[Job]:
    """The owner's succeeded jobs, newest first: the fine-tuned models ``GET /v1/models`` lists."""
    return list(session.scalars(select(Job).where(Job.owner_id == owner_id, Job.status == JobStatus.succeeded,
                                                  Job.model_deleted_at.is_(None))
                                .order_by(Job.finished_at.desc(), Job.id.desc()).limit(limit)))
