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

from sqlalchemy.exc import DBAPIError

from service import logs, workdirs
from service.blobstore import get_store
from service.db import reset_engines, retry_on_disconnect, session_scope
from service.models import Artifact, Dataset, Job, JobStatus
from service.settings import get_settings
from smt_core.registry import available_methods, get_spec
from worker import leases, tarball
from worker.recorder import Recorder, restore_checkpoint

EXIT_HANDBACK = 75  # the run stopped so the job can move to another worker (SIGTERM)
EXIT_LOST = 76  # another worker holds the job now
EXIT_RETRY = 77  # the database went away mid-run: hand the job back (resumes from its checkpoint)
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


def build_spec(job: Job, work: Path, s) -> Any:
    from smt_core import TrainSpec

    hp = job.hyperparameters
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    resumed_at = restore_checkpoint(s, job.id, out)
    return TrainSpec(
        model=_model_source(job.model), train_data=_write_dataset(s, job.training_dataset_id, work / "train.jsonl"),
        eval_data=_write_dataset(s, job.validation_dataset_id, work / "eval.jsonl"), method=job.method,
        out_dir=str(out), budget=job.budget, targets=list(job.targets), steps=hp.get("steps"),
        epochs=hp.get("epochs") if hp.get("steps") is None else None, learning_rate=hp.get("learning_rate"),
        batch_size=hp["batch_size"], max_seq_len=hp["max_seq_len"], lr_warmup_steps=hp.get("lr_warmup_steps", 0),
        method_options=dict(job.method_options), seed=job.seed, resume=resumed_at is not None,
        num_devices=int(hp.get("num_devices", 1)),  # > 1: smt_core.run starts the other ranks beside this child
        checkpoint_every=get_settings().checkpoint_every,
        gradient_checkpointing=bool(hp.get("gradient_checkpointing", False)))


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


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError from Python, or torch's allocator refusing under the RLIMIT_AS cap."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def out_of_memory_message(exc: BaseException, method: str | None) -> str:
    """Say that memory ran out, under which cap, and what usually fits instead (in the order to try)."""
    cap = get_settings().child_memory_bytes
    under = f" under its cap (SPARSETUNE_CHILD_MEMORY_BYTES={cap}, {cap / 2**30:.1f} GiB)" if cap else ""
    tries = ["a smaller hyperparameters.batch_size or max_seq_len",
             "activation checkpointing (hyperparameters.gradient_checkpointing: true)"]
    spec = get_spec(method) if method in available_methods() else None
    if spec is not None and spec.trains_base:
        tries.append(f"a sparse method (smt or snell) instead of {method}, which keeps no optimizer state for "
                     "frozen weights")
    else:
        tries.append("a smaller budget")
    tries.append("a larger SPARSETUNE_CHILD_MEMORY_BYTES on the worker" if cap else "a worker with more memory")
    return (f"the training process ran out of memory{under}. Try {', '.join(tries[:-1])}, or {tries[-1]}. "
            f"({exc.__class__.__name__}: {str(exc)[:300]})")


def train_main(job_id: str, token: int, stop_event: Any = None) -> None:
    """Entry point of the spawned child. Exit codes: 0 outcome recorded, 75 handed back, 76 lease lost."""
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
        files = {name: Path(p) for name, p in result.files.items() if name in ("adapter.safetensors",
                                                                                "adapter_config.json")}
        from smt_core.registry import get_method

        if get_method(spec.method).sparse_delta:  # a SHiRA export can hold only a sparse delta
            shira = _shira_tar(result.out_dir, work, spec.model, rec)
            if shira is not None:
                files["peft-shira.tar"] = shira
        retry_on_disconnect(lambda: _store_artifacts(job_id, token, files, result.metrics), "storing artifacts")
    except Cancelled:
        if rec.lost:
            raise SystemExit(EXIT_LOST) from None
        if rec.handback:
            raise SystemExit(EXIT_HANDBACK) from None
        leases.finish(job_id, token, JobStatus.cancelled, None)
    except leases.LostLease:
        raise SystemExit(EXIT_LOST) from None
    except DBAPIError as exc:  # the database stayed away past the retries: not the job's fault, handed back
        log.warning("database error; handing the job back: %s", exc.__class__.__name__, extra={"job_id": job_id})
        raise SystemExit(EXIT_RETRY) from None
    except Exception as exc:  # noqa: BLE001 - any engine error fails this job with its message
        if _out_of_memory(exc):
            _fail(job_id, token, "out_of_memory", out_of_memory_message(exc, method))
        else:
            log.exception("job failed", extra={"job_id": job_id})
            code = "invalid_request" if isinstance(exc, ValueError) else "training_failed"
            _fail(job_id, token, code, f"{exc.__class__.__name__}: {exc}"[:2000])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fail(job_id: str, token: int, code: str, message: str) -> None:
    try:
        leases.finish(job_id, token, JobStatus.failed, {"code": code, "message": message})
    except leases.LostLease:
        raise SystemExit(EXIT_LOST) from None


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
            for name in ("adapter.safetensors", "adapter_config.json"):
                art = s.get(Artifact, (job_id, name))
                get_store().read_to_file(s, art.blob_id, adapter / name)
            model = _model_source(job.model)
        folder = merge_adapter(adapter, work / "merged", model)
        tar = tarball.pack(folder, work / "merged.tar")
        with session_scope() as s:
            blob = get_store().write_file(s, tar)
            s.merge(Artifact(job_id=job_id, name="merged.tar", blob_id=blob.id, bytes=blob.bytes, sha256=blob.sha256))
            s.execute(update(Job).where(Job.id == job_id).values(merge_status="done"))
    except Exception as exc:  # noqa: BLE001
        log.exception("merge failed", extra={"job_id": job_id})
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(merge_status="failed"))
            from service.crud import add_event

            add_event(s, s.get(Job, job_id), "log", {"level": "error", "message": f"merge failed: {exc}"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
