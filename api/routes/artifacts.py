"""Artifacts under fixed names, streamed one chunk at a time with their size and sha256."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from api import queue
from api.blobstore import get_store
from api.db import session_factory
from api.deps import JobDep, SessionDep
from api.errors import APIError, conflict
from api.models import Artifact, JobStatus
from api.routes.common import errors
from api.schemas import ArtifactPublic, ArtifactRequest, ListPage

router = APIRouter(prefix="/v1/jobs/{job_id}/artifacts", tags=["artifacts"])
NAMES = ("adapter.safetensors", "adapter_config.json", "peft-shira.tar", "merged.tar")
MEDIA = {".json": "application/json", ".tar": "application/x-tar"}


def _public(a: Artifact) -> dict:
    return {"name": a.name, "object": "artifact", "bytes": a.bytes, "sha256": a.sha256,
            "created_at": int(a.created_at)}


@router.get("", response_model=ListPage[ArtifactPublic], responses=errors(404))
def list_artifacts(session: SessionDep, job: JobDep) -> dict:
    """The job's artifacts."""
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job.id)
                           .order_by(Artifact.created_at.desc(), Artifact.name))
    data = [_public(a) for a in rows]  # at most four fixed names: one page
    return {"object": "list", "data": data, "has_more": False, "last_id": data[-1]["name"] if data else None}


@router.post("/merged", status_code=202, response_model=ArtifactRequest, responses=errors(404, 409))
def create_merged_artifact(session: SessionDep, job: JobDep) -> dict:
    """Ask for the merged model (merged.tar); it appears in the list when ready."""
    if job.status != JobStatus.succeeded:
        raise conflict(f"job {job.id} is {job.status.value}; only a succeeded job can be merged")
    if session.get(Artifact, (job.id, "merged.tar")) is not None:
        return {"name": "merged.tar", "object": "artifact_request", "status": "ready"}
    if job.merge_status not in ("requested", "running"):
        job.merge_status = "requested"
        session.commit()
        queue.enqueue_merge(job.id)
    return {"name": "merged.tar", "object": "artifact_request", "status": job.merge_status}


@router.get("/{name}", response_class=StreamingResponse, responses={**errors(404), 200: {
    "content": {"application/octet-stream": {}}, "headers": {"X-Checksum-Sha256": {"schema": {"type": "string"}}}}})
def download_artifact(session: SessionDep, job: JobDep, name: Annotated[str, Path(max_length=64)]) -> StreamingResponse:
    """Download one artifact."""
    if name not in NAMES:
        raise APIError(404, f"name: unknown artifact {name!r}; expected one of {', '.join(NAMES)}", param="name")
    art = session.get(Artifact, (job.id, name))
    if art is None:
        hint = " (POST …/artifacts/merged asks for it)" if name == "merged.tar" else ""
        raise APIError(404, f"job {job.id} has no {name}{hint}", param="name")
    media = next((m for ext, m in MEDIA.items() if name.endswith(ext)), "application/octet-stream")
    headers = {"Content-Length": str(art.bytes), "X-Checksum-Sha256": art.sha256,
               "Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(get_store().read_chunks(session_factory(), art.blob_id), media_type=media,
                             headers=headers)
