"""Rows the inference process reads, written straight into the test database: a job (succeeded, or not yet)
with its ``adapter.safetensors`` stored as a blob, as a worker leaves it; and a tiny adapter trained here."""

from __future__ import annotations

import secrets
from pathlib import Path

from service.blobstore import get_store
from service.db import session_scope
from service.models import Artifact, Job, Owner
from service.states import JobStatus
from smt_core.artifacts import ADAPTER
from smt_core.cli import main as engine_cli
from tests import factories


def train_adapter(model: Path, root: Path, method: str = "smt", data: str = "completion", steps: int = 8) -> Path:
    """A real adapter of ``method`` on a tiny model (a few CPU steps): the folder holding adapter.safetensors."""
    rows = factories.completion_rows(32) if data == "completion" else factories.classification_rows(32)
    path = factories.write_jsonl(root / f"{data}.jsonl", rows)
    out = root / f"{method}-{data}"
    args = ["train", "--model", str(model), "--data", str(path), "--method", method, "--budget", "0.05",
            "--steps", str(steps), "--learning-rate", "0.01", "--max-seq-len", "32", "--out", str(out)]
    assert engine_cli(args) == 0
    return out


def add_job(model: str, adapter: bytes | None, status: JobStatus = JobStatus.succeeded,
            method: str = "smt") -> str:
    """A job row of a new owner on base alias ``model``, with ``adapter`` as its adapter artifact (if given)."""
    job_id = f"job_{secrets.token_hex(12)}"
    with session_scope() as s:
        owner = Owner(id=f"own_{secrets.token_hex(8)}", name="inference-test")
        s.add(owner)
        s.flush()
        s.add(Job(id=job_id, owner_id=owner.id, model=model, method=method, budget=0.05, targets=["q", "k", "v"],
                  hyperparameters={}, method_options={}, meta={}, status=status))
        s.flush()
        if adapter is not None:
            set_adapter(s, job_id, adapter)
    return job_id


def set_adapter(session, job_id: str, data: bytes) -> str:
    """Store ``data`` as the job's adapter artifact (replacing one already there); its sha256."""
    blob = get_store().write_bytes(session, data)
    row = session.get(Artifact, (job_id, ADAPTER))
    if row is None:
        session.add(Artifact(job_id=job_id, name=ADAPTER, blob_id=blob.id, bytes=blob.bytes, sha256=blob.sha256))
    else:
        row.blob_id, row.bytes, row.sha256 = blob.id, blob.bytes, blob.sha256
    return blob.sha256
