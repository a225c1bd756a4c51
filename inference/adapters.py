"""From a request's target (a base alias, a job id) to what the engine loads: the base model's source string
and a local folder holding the job's ``adapter.safetensors``.

The adapter lives in the database (a blob, like every artifact); the engine reads files, so it is copied once
into ``$SPARSETUNE_HOME/inference/adapters/<job_id>/`` and reused while its sha256 still matches the artifact
row. The copy is written to a private temporary file and renamed into place, so a concurrent request or a
crash never leaves a half-written adapter where the engine would read it. The job's manifest (method,
targets, labels) travels inside the safetensors metadata, so this one file is all the engine needs.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from pathlib import Path

from sqlalchemy import select

from inference.requests import InferenceError, Target
from service import private
from service.blobstore import get_store
from service.catalog import allowed_models
from service.db import session_scope
from service.models import Artifact, Job
from service.settings import get_settings
from service.states import JobStatus
from smt_core.artifacts import ADAPTER, BEST

JOB_ID = re.compile(r"^job_[A-Za-z0-9_-]{1,36}$")  # also a folder name: nothing that could leave the folder
SHA_FILE = "adapter.sha256"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def adapters_root() -> Path:
    return get_settings().home / "inference" / "adapters"


def resolve_base(alias: str, param: str = "target.base") -> str:
    """The engine's source for a base model alias (a packaged alias, a folder or a hub id); 404 if the
    service does not allow it (SPARSETUNE_MODELS or the packaged models)."""
    source = allowed_models().get(alias)
    if source is None:
        raise InferenceError(404, f"model {alias!r} is not available on this server", param, "model_not_found")
    return source


def resolve_target(base: str | None, job_id: str | None) -> Target:
    """The engine's target for a request: the base alone, or a finished job's adapter on its own base (a job
    trained on another base than ``base`` names is refused, 422). Blocking (database, file copy): call it
    from a worker thread."""
    if job_id is None:
        if not base:
            raise InferenceError(422, "target.base or target.job_id is required", "target.base")
        return Target(base=resolve_base(base))
    alias, sha256, blob_id = _job_adapter(job_id)
    if base and base != alias:
        raise InferenceError(422, f"job {job_id} was trained on {alias!r}, not {base!r}", "target.base")
    folder = fetch_adapter(job_id, sha256, blob_id)
    return Target(base=resolve_base(alias), adapter=job_id, adapter_dir=folder)


def _job_adapter(job_id: str) -> tuple[str, str, str]:
    """(the job's base alias, its adapter's sha256, its blob id); 404 for no such job or no adapter artifact,
    409 for a job that has not succeeded."""
    if not JOB_ID.match(job_id):
        raise InferenceError(404, f"no job {job_id!r}", "target.job_id")
    with session_scope() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise InferenceError(404, f"no job {job_id!r}", "target.job_id")
        if job.status != JobStatus.succeeded:
            raise InferenceError(409, f"job {job_id} is {job.status.value}: only a succeeded job can be served",
                                 "target.job_id", "job_not_finished")
        # the best evaluation's adapter when the job kept one (hyperparameters.metric_for_best), else the last
        artifact = s.get(Artifact, (job_id, BEST)) or s.get(Artifact, (job_id, ADAPTER))
        if artifact is None:
            raise InferenceError(404, f"job {job_id} has no {ADAPTER}", "target.job_id")
        return job.model, artifact.sha256, artifact.blob_id


def fetch_adapter(job_id: str, sha256: str, blob_id: str) -> Path:
    """The folder holding the job's ``adapter.safetensors``: the copy already there when its recorded sha256
    is the artifact's, else a fresh copy from the database (one copy at a time per job)."""
    if not JOB_ID.match(job_id):
        raise InferenceError(404, f"no job {job_id!r}", "target.job_id")
    folder = adapters_root() / job_id
    with _lock_for(job_id):
        if _recorded_sha(folder) == sha256 and (folder / ADAPTER).is_file():
            return folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / SHA_FILE).unlink(missing_ok=True)  # no stale record beside a file being replaced
        _copy_blob(blob_id, folder / ADAPTER)
        private.write_private(folder / SHA_FILE, sha256 + "\n")
    return folder


def sweep() -> list[str]:
    """Remove the copies of adapters whose job is gone: a deleted job's artifacts are its owner's data, and
    must not live on here. Returns the job ids removed (run periodically by the inference process)."""
    root = adapters_root()
    names = [p.name for p in root.iterdir() if p.is_dir() and JOB_ID.match(p.name)] if root.is_dir() else []
    if not names:
        return []
    with session_scope() as s:
        kept = set(s.scalars(select(Artifact.job_id).where(Artifact.job_id.in_(names), Artifact.name == ADAPTER)))
    gone = [name for name in names if name not in kept]
    for name in gone:
        with _lock_for(name):
            shutil.rmtree(root / name, ignore_errors=True)
    return gone


def _lock_for(job_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(job_id, threading.Lock())


def _recorded_sha(folder: Path) -> str | None:
    try:
        return (folder / SHA_FILE).read_text().strip()
    except OSError:
        return None


def _copy_blob(blob_id: str, path: Path) -> None:
    """Copy the blob to a private temporary file (its sha256 is checked on read), then rename it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    private.create_private_file(tmp)
    try:
        with session_scope() as s:
            get_store().read_to_file(s, blob_id, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

