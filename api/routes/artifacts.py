"""Artifacts under fixed names, streamed one chunk at a time with their size and sha256 (ETag); HEAD and a
Range header let a client check one and resume a download (api/ranges.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import APIError, conflict
from api.ranges import Unsatisfiable, byte_range
from api.routes.common import errors
from api.schemas import ArtifactPublic, ArtifactRequest, ListPage
from service import queue
from service.blobstore import get_store
from service.db import session_factory
from service.models import Artifact, JobStatus
from service.states import IN_PROGRESS, MergeStatus

router = APIRouter(prefix="/v1/jobs/{job_id}/artifacts", tags=["artifacts"])
# adapter-best.safetensors: the best evaluation's adapter, when hyperparameters.metric_for_best kept one
NAMES = ("adapter.safetensors", "adapter-best.safetensors", "adapter_config.json", "peft-shira.tar", "merged.tar")
MEDIA = {".json": "application/json", ".tar": "application/x-tar"}


@router.get("", response_model=ListPage[ArtifactPublic], responses=errors(404))
def list_artifacts(session: SessionDep, job: JobDep) -> ListPage[ArtifactPublic]:
    """The job's artifacts."""
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job.id)
                           .order_by(Artifact.created_at.desc(), Artifact.name))
    data = [ArtifactPublic.model_validate(a) for a in rows]  # a few fixed names: one page
    return ListPage[ArtifactPublic].of(data, last_id=data[-1].name if data else None)


@router.post("/merged", status_code=202, response_model=ArtifactRequest, responses=errors(404, 409))
def create_merged_artifact(session: SessionDep, job: JobDep) -> ArtifactRequest:
    """Ask for the merged model (merged.tar); it appears in the list when ready."""
    if job.status != JobStatus.succeeded:
        raise conflict(f"job {job.id} is {job.status.value}; only a succeeded job can be merged")
    if session.get(Artifact, (job.id, "merged.tar")) is not None:
        return ArtifactRequest(name="merged.tar", status="ready")
    if job.merge_status not in IN_PROGRESS:  # never asked for, or failed: ask (again)
        job.merge_status = MergeStatus.requested
        session.commit()
        queue.enqueue_merge(job.id)
    return ArtifactRequest(name="merged.tar", status=job.merge_status)


RangeHeader = Annotated[str | None, Header(alias="Range", max_length=200,
                                           description="one byte range, e.g. bytes=1024- to resume a download")]
IfRangeHeader = Annotated[str | None, Header(alias="If-Range", max_length=200,
                                             description="the ETag of the partial copy: a range only if unchanged")]
DOWNLOAD_RESPONSES: dict[int | str, dict] = {**errors(404, 416), 200: {
    "content": {"application/octet-stream": {}},
    "headers": {"X-Checksum-Sha256": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}},
    206: {"description": "the requested byte range", "content": {"application/octet-stream": {}},
          "headers": {"Content-Range": {"schema": {"type": "string"}}}}}


def _artifact(session: SessionDep, job: JobDep, name: Annotated[str, Path(max_length=64)]) -> Artifact:
    """The job's artifact by name, or a 404 naming what exists."""
    if name not in NAMES:
        raise APIError(404, f"name: unknown artifact {name!r}; expected one of {', '.join(NAMES)}", param="name")
    art = session.get(Artifact, (job.id, name))
    if art is None:
        hint = " (POST …/artifacts/merged asks for it)" if name == "merged.tar" else ""
        raise APIError(404, f"job {job.id} has no {name}{hint}", param="name")
    return art


ArtifactDep = Annotated[Artifact, Depends(_artifact)]


def _answer(art: Artifact, range_: str | None, if_range: str | None, body: bool) -> Response:
    """200 with the whole artifact or 206 with one byte range, streamed a chunk at a time; headers alone for
    HEAD. The ETag is the sha256, so a resumed download is checked against the same bytes end to end."""
    etag = f'"{art.sha256}"'
    headers = {"X-Checksum-Sha256": art.sha256, "ETag": etag, "Accept-Ranges": "bytes"}
    try:
        span = byte_range(range_, art.bytes, if_range, etag)
    except Unsatisfiable:
        raise APIError(416, f"Range: {range_!r} starts past the end of the {art.bytes}-byte {art.name}",
                       param="Range", headers={**headers, "Content-Range": f"bytes */{art.bytes}"}) from None
    start, stop = span or (0, art.bytes)
    headers["Content-Length"] = str(stop - start)
    headers["Content-Disposition"] = f'attachment; filename="{art.name}"'
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{art.bytes}"
    status = 200 if span is None else 206
    media = next((m for ext, m in MEDIA.items() if art.name.endswith(ext)), "application/octet-stream")
    if not body:
        return Response(status_code=status, media_type=media, headers=headers)
    store, factory = get_store(), session_factory()
    chunks = (store.read_chunks(factory, art.blob_id) if span is None
              else store.read_range(factory, art.blob_id, start, stop))
    return StreamingResponse(chunks, status_code=status, media_type=media, headers=headers)


@router.get("/{name}", response_class=StreamingResponse, responses=DOWNLOAD_RESPONSES)
def download_artifact(art: ArtifactDep, range_: RangeHeader = None, if_range: IfRangeHeader = None) -> Response:
    """Download one artifact (a Range header resumes a download)."""
    return _answer(art, range_, if_range, body=True)


@router.head("/{name}", response_class=Response, responses=DOWNLOAD_RESPONSES)
def read_artifact_headers(art: ArtifactDep, range_: RangeHeader = None, if_range: IfRangeHeader = None) -> Response:
    """An artifact's size, sha256 and ETag without its bytes."""
    return _answer(art, range_, if_range, body=False)
