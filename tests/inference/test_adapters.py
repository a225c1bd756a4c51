"""From a request's target to the engine's: a job's adapter is copied out of the database once (private,
atomically), reused while its sha256 matches the artifact, copied again when it does not; a job that is not
there, not finished or on another base is refused with the status the API answers. Real Postgres."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from inference import adapters
from inference.requests import InferenceError
from service.db import session_scope
from service.states import JobStatus
from tests.api.fixtures import config_only_model, service_env  # noqa: F401 - fixtures
from tests.inference.service_rows import add_job, set_adapter

ALIAS = "cfg-llama"  # service_env's allowlist: alias -> a folder with a config.json


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_jobs_adapter_is_copied_privately_once_and_again_when_it_changes(service_env):  # noqa: F811
    data = os.urandom(3000)
    job_id = add_job(ALIAS, data)
    target = adapters.resolve_target(ALIAS, job_id)
    folder = target.adapter_dir
    assert target.adapter == job_id
    assert folder == adapters.adapters_root() / job_id
    copy = folder / "adapter.safetensors"
    assert copy.read_bytes() == data
    assert _mode(copy) == 0o600 and _mode(folder) == 0o700
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    inode = copy.stat().st_ino

    again = adapters.resolve_target(None, job_id)  # base taken from the job
    assert again.adapter_dir == folder and copy.stat().st_ino == inode, "same sha256: the copy is reused"

    new = os.urandom(2000)
    with session_scope() as s:
        sha = set_adapter(s, job_id, new)
    adapters.resolve_target(ALIAS, job_id)
    assert copy.read_bytes() == new and hashlib.sha256(new).hexdigest() == sha
    assert (folder / adapters.SHA_FILE).read_text().strip() == sha


def test_the_base_alias_resolves_to_the_engines_source(service_env):  # noqa: F811
    import json

    source = json.loads(service_env["SPARSETUNE_MODELS"])[ALIAS]
    target = adapters.resolve_target(ALIAS, None)
    assert (target.base, target.adapter, target.adapter_dir) == (source, None, None)
    job_target = adapters.resolve_target(ALIAS, add_job(ALIAS, b"x" * 10))
    assert job_target.base == source


@pytest.mark.parametrize(("case", "status", "param"), [
    ("unknown base", 404, "target.base"),
    ("unknown job", 404, "target.job_id"),
    ("malformed job id", 404, "target.job_id"),
    ("running job", 409, "target.job_id"),
    ("no adapter", 404, "target.job_id"),
    ("other base", 422, "target.base"),
    ("nothing", 422, "target.base"),
])
def test_targets_it_cannot_serve_are_refused_with_the_apis_status(service_env, case, status, param):  # noqa: F811
    base, job = {
        "unknown base": ("no-such-model", None),
        "unknown job": (ALIAS, "job_000000000000000000000000"),
        "malformed job id": (ALIAS, "job_../../etc"),
        "running job": (ALIAS, add_job(ALIAS, b"x", JobStatus.running) if case == "running job" else None),
        "no adapter": (ALIAS, add_job(ALIAS, None) if case == "no adapter" else None),
        "other base": ("smollm2-135m", add_job(ALIAS, b"x") if case == "other base" else None),
        "nothing": (None, None),
    }[case]
    with pytest.raises(InferenceError) as err:
        adapters.resolve_target(base, job)
    assert (err.value.status, err.value.param) == (status, param)
    assert not (adapters.adapters_root() / "etc").exists()


def test_copies_of_deleted_jobs_adapters_are_swept(service_env):  # noqa: F811
    from service.models import Job

    kept, deleted = add_job(ALIAS, b"kept"), add_job(ALIAS, b"deleted")
    for job_id in (kept, deleted):
        adapters.resolve_target(ALIAS, job_id)
    with session_scope() as s:
        s.delete(s.get(Job, deleted))
    assert deleted in adapters.sweep() and kept not in adapters.sweep()
    assert (adapters.adapters_root() / kept / "adapter.safetensors").read_bytes() == b"kept"
    assert not (adapters.adapters_root() / deleted).exists()
