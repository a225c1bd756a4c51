"""The training child: a spawned process per job, memory-capped, that builds the spec from the job row,
calls ``smt_core.run`` and records the outcome. A crash here fails or requeues one job; the worker goes on.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from service import logs, webhooks, workdirs
from service.blobstore import get_store
from service.db import reset_engines, retry_on_disconnect, session_scope
from service.models import Artifact, Dataset, Job, JobStatus, MergeStatus
from service.settings import get_settings
from service.states import EventType, JobErrorCode, WebhookEventType
from worker import failures, leases, tarball
from worker.failures import ChildExit, Failure
from worker.recorder import Recorder, restore_checkpoint

log = logging.getLogger("sparsetune.child")


def _cap_memory() -> None:
    cap = get_settings().child_memory_bytes
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _model_source(alias: str) -> str:
    from service.catalog import allowed_models

    source = allowed_models().get(alias)
    if source is None:
        raise ValueError(f"model: {alias!r} is no longer in the allowlist")
    return source


def _write_dataset(s, ds_id: str | None, path: Path) -> str | None:
    if ds_id is None:
        return None
    ds = s.get(Dataset, ds_id)
    if ds is None:
        raise ValueError(f"dataset {ds_id} was deleted")
    get_store().read_to_file(s, ds.blob_id, path)
    return str(path)


def _write_parent_adapter(s, job: Job, work: Path) -> str | None:
    """The folder holding the adapter of the job this one continues (``init_from``): the one its
    fine_tuned_model serves — ``adapter-best.safetensors`` when the parent kept a best, else its last —
    copied as ``adapter.safetensors`` (its manifest travels in the file's metadata)."""
    if not job.init_from:
        return None
    from smt_core.artifacts import ADAPTER, BEST

    artifact = s.get(Artifact, (job.init_from, BEST)) or s.get(Artifact, (job.init_from, ADAPTER))
    if artifact is None:
        raise ValueError(f"init_from: job {job.init_from} has no adapter (deleted?)")
    folder = work / "parent"
    folder.mkdir(parents=True, exist_ok=True)
    get_store().read_to_file(s, artifact.blob_id, folder / ADAPTER)
    return str(folder)


def build_spec(job: Job, work: Path, s) -> Any:
    """The TrainSpec of a job row. Its hyperparameters as stored, with the one definition's defaults
    (smt_core/hyperparameters.py) for keys added since the row was written; num_devices > 1 makes
    smt_core.run start the other ranks beside this child."""
    from smt_core import TrainSpec
    from smt_core.hyperparameters import job_values

    hp = job_values(job.hyperparameters)
    if hp["steps"] is not None:
        hp["epochs"] = None  # steps win
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    resumed_at = restore_checkpoint(s, job.id, out)
    return TrainSpec(
        model=_model_source(job.model), train_data=_write_dataset(s, job.training_dataset_id, work / "train.jsonl"),
        eval_data=_write_dataset(s, job.validation_dataset_id, work / "eval.jsonl"), method=job.method,
        out_dir=str(out), budget=job.budget, targets=list(job.targets), method_options=dict(job.method_options),
        seed=job.seed, resume=resumed_at is not None, checkpoint_every=get_settings().checkpoint_every,
        init_from=_write_parent_adapter(s, job, work), init_from_job=job.init_from, **hp)


def _store_artifacts(job_id: str, token: int, files: dict[str, Path], metrics: dict[str, Any]) -> None:
    """All artifacts and the succeeded status in one fenced transaction: all or nothing."""
    store = get_store()
    with session_scope() as s:
        leases.fenced(s, job_id, token)  # row lock first: nobody else can claim while we write
        for name, path in sorted(files.items()):
            blob = store.write_file(s, path)
            s.merge(Artifact(job_id=job_id, name=name, blob_id=blob.id, bytes=blob.bytes, sha256=blob.sha256))
        job = s.get(Job, job_id)
        resolved = _resolved_hyperparameters(files.get("adapter_config.json"))
        if resolved:
            job.hyperparameters = {**job.hyperparameters, **resolved}
        clean = {k: v for k, v in metrics.items() if k != "memory"}
        leases.finish(job_id, token, JobStatus.succeeded, None, s=s, phase=None, metrics=clean,
                      memory=metrics.get("memory"), trainable_params=metrics.get("trainable_params"),
                      total_params=metrics.get("total_params"), trained_tokens=metrics.get("trained_tokens") or 0)


def _resolved_hyperparameters(config: Path | None) -> dict[str, Any]:
    """What the engine actually used (e.g. the method's default learning rate), from the adapter manifest."""
    if config is None:
        return {}
    try:
        hp = json.loads(config.read_text()).get("hyperparameters", {})
    except (OSError, ValueError):
        return {}
    return {k: hp[k] for k in ("learning_rate", "steps", "schedule", "weight_decay", "precision")
            if hp.get(k) is not None}


def _shira_tar(out_dir: Path, work: Path, model: str, rec: Recorder) -> Path | None:
    """peft-shira.tar for sparse methods, best effort: a refusal is logged, not a failed job."""
    try:
        from smt_core.export import export_shira

        folder = export_shira(out_dir, work / "shira", model)
        return tarball.pack(folder, work / "peft-shira.tar")
    except Exception as exc:  # noqa: BLE001 - the native adapter is the product; SHiRA is a courtesy
        rec.on_log({"level": "warning", "message": f"peft-shira.tar not written: {exc}"})
        return None


def train_main(job_id: str, token: int, stop_event: Any = None) -> None:
    """Entry point of the spawned child; its exit code (``failures.ChildExit``) tells the task what happened."""
    _cap_memory()
    # SIGTERM/SIGINT go to the worker, which asks us (stop_event) to stop so the job can be handed back
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reset_engines()
    logs.configure(get_settings().log_level)
    rec = Recorder(job_id, token, stop_event)
    work = workdirs.create(job_id)  # removed below; if this process is killed, by a sweep (service/workdirs.py)
    from smt_core import Cancelled  # torch-free; the engine itself is imported inside the try below

    method = None
    try:
        from smt_core import run

        with session_scope() as s:
            leases.fenced(s, job_id, token, child_pid=os.getpid())
            job = s.get(Job, job_id)
            method = job.method
            spec = build_spec(job, work, s)
        if spec.resume:
            rec.on_log({"level": "info", "message": "restored the stored checkpoint; resuming"})
        result = run(spec, rec.callbacks())
        files = {name: Path(p) for name, p in result.files.items() if name in (
            "adapter.safetensors", "adapter_config.json", "adapter-best.safetensors")}
        from smt_core.registry import get_method

        if get_method(spec.method).sparse_delta:  # a SHiRA export can hold only a sparse delta
            shira = _shira_tar(result.out_dir, work, spec.model, rec)
            if shira is not None:
                files["peft-shira.tar"] = shira
        retry_on_disconnect(lambda: _store_artifacts(job_id, token, files, result.metrics), "storing artifacts")
    except Cancelled:
        if rec.lost:
            raise SystemExit(ChildExit.lost) from None
        if rec.handback:
            raise SystemExit(ChildExit.handback) from None
        leases.finish(job_id, token, JobStatus.cancelled, None)
    except Exception as exc:  # noqa: BLE001 - worker/failures.py says whether it is the job's fault
        _end_on_error(job_id, token, exc, method)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _end_on_error(job_id: str, token: int, exc: Exception, method: str | None) -> None:
    """Exit with the code that hands the job back or leaves it alone, or fail it with its message."""
    exit_code = failures.exit_for(exc)
    if exit_code is not None:
        log.warning("%s; the job is not at fault: exit %d (%s)", exc.__class__.__name__, exit_code, exit_code.name,
                    extra={"job_id": job_id})
        raise SystemExit(exit_code) from None
    failure = failures.job_failure(exc, method)
    if failure.code != JobErrorCode.out_of_memory:  # an engine bug or bad data: keep the traceback
        log.exception("job failed", extra={"job_id": job_id}, exc_info=exc)
    _fail(job_id, token, failure)


def _fail(job_id: str, token: int, failure: Failure) -> None:
    try:
        leases.finish(job_id, token, JobStatus.failed, failure.as_error())
    except leases.LostLease:
        raise SystemExit(ChildExit.lost) from None


def _adapter_artifacts(s, job_id: str) -> dict[str, Artifact]:
    """What to merge, by the file name the engine reads: the best evaluation's adapter when the job kept one
    (hyperparameters.metric_for_best; its manifest rides in its own metadata, so the last adapter's
    adapter_config.json is left out), else the last adapter and its manifest."""
    best = s.get(Artifact, (job_id, "adapter-best.safetensors"))
    if best is not None:
        return {"adapter.safetensors": best}
    return {name: s.get(Artifact, (job_id, name)) for name in ("adapter.safetensors", "adapter_config.json")}


def merge_main(job_id: str) -> None:
    """Build merged.tar from the stored adapter: base + delta as a standard HF folder."""
    _cap_memory()
    reset_engines()
    from sqlalchemy import update

    from smt_core.merge import merge_adapter

    work = Path(tempfile.mkdtemp(prefix=f"{job_id}-merge-", dir=get_settings().home))
    try:
        with session_scope() as s:
            job = s.get(Job, job_id)
            adapter = work / "adapter"
            adapter.mkdir()
            for name, art in _adapter_artifacts(s, job_id).items():
                get_store().read_to_file(s, art.blob_id, adapter / name)
            model = _model_source(job.model)
        folder = merge_adapter(adapter, work / "merged", model)
        tar = tarball.pack(folder, work / "merged.tar")
        with session_scope() as s:
            blob = get_store().write_file(s, tar)
            s.merge(Artifact(job_id=job_id, name="merged.tar", blob_id=blob.id, bytes=blob.bytes, sha256=blob.sha256))
            s.execute(update(Job).where(Job.id == job_id).values(merge_status=MergeStatus.done))
            webhooks.enqueue(s, s.get(Job, job_id), WebhookEventType.job_merged)  # with the artifact, or not at all
    except Exception as exc:  # noqa: BLE001
        log.exception("merge failed", extra={"job_id": job_id})
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(merge_status=MergeStatus.failed))
            from service.crud import add_event

            add_event(s, s.get(Job, job_id), EventType.log, {"level": "error", "message": f"merge failed: {exc}"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
