"""OpenAI's files: a ``fine-tune`` file is a dataset seen through OpenAI's type (one record, the same id, the
same upload validation), and a succeeded job's results are ``fine-tune-results`` files (api/openai_files.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Caller, CurrentOwner, SessionDep
from api.errors import APIError
from api.openai_errors import OpenAIRoute, openai_errors
from api.openai_files import (
    ADAPTER,
    FINE_TUNE,
    RESULT_NAMES,
    RESULTS,
    dataset_file,
    metrics_csv,
    owned_result,
    result_file,
    results_page,
)
from api.routes.common import AfterQuery, LimitQuery
from api.routes.datasets import one_file_part, store_upload
from api.schemas import FileDeleted, FilePublic, FilePurpose, ListPage
from service import crud
from service.blobstore import get_store
from service.db import session_factory
from service.models import Artifact, Dataset
from service.storable import is_plausible_id

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=OpenAIRoute)
FileId = Annotated[str, Path(max_length=64, description="a dataset id (ds_…) or a result file id "
                                                        "(file-<job id>-metrics, file-<job id>-adapter)")]
CONTENT = {200: {"content": {"application/octet-stream": {}, "text/csv": {}}}}


def _dataset(session: Session, owner: Caller, file_id: str) -> Dataset:
    ds = session.get(Dataset, file_id) if is_plausible_id(file_id) else None
    if ds is None or ds.owner_id != owner.id:
        raise APIError(404, f"no file {file_id!r}", param="file_id")
    return ds


@router.post("", response_model=FilePublic, responses=openai_errors(413))
def create_file(session: SessionDep, owner: CurrentOwner,
                file: Annotated[UploadFile, File(description="a JSONL file in one of the four formats")],
                purpose: Annotated[str, Form(max_length=64, description="fine-tune")],
                _one: Annotated[None, Depends(one_file_part)]) -> FilePublic:
    """Upload a training or validation file: validated and stored exactly as POST /v1/datasets does (its id
    is a dataset id)."""
    if purpose != FINE_TUNE:
        raise APIError(400, f"purpose: must be {FINE_TUNE!r} (the only purpose a file is uploaded for here), "
                       f"got {purpose[:64]!r}", param="purpose")
    return dataset_file(store_upload(session, owner, file))


@router.get("", response_model=ListPage[FilePublic], responses=openai_errors())
def list_files(session: SessionDep, owner: CurrentOwner, limit: LimitQuery = 20, after: AfterQuery = None,
               purpose: Annotated[FilePurpose | None, Query(description="fine-tune (the default: the uploads) or "
                                                            "fine-tune-results (jobs' result files)")] = None
               ) -> ListPage[FilePublic]:
    """The owner's files, newest first: uploads (datasets), or with ``purpose=fine-tune-results`` the result
    files of the owner's succeeded jobs."""
    if purpose == RESULTS:
        data, more = results_page(session, owner.id, limit, after)
        return ListPage[FilePublic].of(data, more)
    rows, more = crud.page(session, select(Dataset).where(Dataset.owner_id == owner.id), Dataset, limit, after)
    return ListPage[FilePublic].of([dataset_file(d) for d in rows], more)


@router.get("/{file_id}", response_model=FilePublic, responses=openai_errors(404))
def read_file(session: SessionDep, owner: CurrentOwner, file_id: FileId) -> FilePublic:
    """One file: an upload or a result file."""
    found = owned_result(session, owner.id, file_id)
    if found is not None:
        return result_file(session, *found)
    return dataset_file(_dataset(session, owner, file_id))


@router.get("/{file_id}/content", response_class=StreamingResponse, responses={**openai_errors(404), **CONTENT})
def read_file_content(session: SessionDep, owner: CurrentOwner, file_id: FileId) -> Response:
    """A file's bytes: the uploaded JSONL as it was sent, the metrics CSV, or the adapter."""
    found = owned_result(session, owner.id, file_id)
    if found is not None and found[1].kind != ADAPTER:
        return Response(metrics_csv(session, found[0].id), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="metrics.csv"'})
    if found is not None:
        art = session.get(Artifact, (found[0].id, RESULT_NAMES[ADAPTER]))
        blob_id, size, name = art.blob_id, art.bytes, art.name  # type: ignore[union-attr] - owned_result checked
    else:
        ds = _dataset(session, owner, file_id)
        blob_id, size, name = ds.blob_id, ds.bytes, ds.filename
    quoted = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    headers = {"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{quoted}"'}
    return StreamingResponse(get_store().read_chunks(session_factory(), blob_id),
                             media_type="application/octet-stream", headers=headers)


@router.delete("/{file_id}", response_model=FileDeleted, responses=openai_errors(404, 409))
def delete_file(session: SessionDep, owner: CurrentOwner, file_id: FileId) -> FileDeleted:
    """Delete an upload (the dataset) that no queued or running job uses; a result file goes with its job."""
    if owned_result(session, owner.id, file_id) is not None:
        raise APIError(400, f"file_id: {file_id} is a job's result file: it is deleted with the job "
                       "(DELETE /v1/jobs/{id})", param="file_id")
    ds = _dataset(session, owner, file_id)
    crud.delete_dataset(session, ds)
    session.commit()
    return FileDeleted(id=file_id)
