"""Datasets: JSONL uploads validated line by line from a spooled file, stored as chunked blobs with their sha256."""

from __future__ import annotations

import hashlib
import os
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, File, Request, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Caller, CurrentOwner, DatasetDep, SessionDep
from api.errors import APIError
from api.routes.common import AfterQuery, LimitQuery, errors
from api.schemas import DatasetPublic, Deleted, ListPage
from service import crud, quotas
from service.blobstore import get_store
from service.models import Dataset
from service.security import new_id
from service.settings import get_settings
from service.storable import string_problem
from smt_core.dataformats import iter_lines, validate_lines

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


PIECE_BYTES = 1024 * 1024


async def one_file_part(request: Request) -> None:
    """Two ``file`` parts in one upload are refused, not silently reduced to one (the form is already parsed)."""
    form = await request.form()
    if len(form.getlist("file")) > 1:
        raise APIError(422, "file: give one file part per upload, not several", param="file")


def _measure(fh: BinaryIO, limit: int) -> tuple[int, str]:
    """Size and sha256 of the spooled upload, read a piece at a time; 413 past ``limit``."""
    fh.seek(0)
    digest, size = hashlib.sha256(), 0
    while piece := fh.read(PIECE_BYTES):
        size += len(piece)
        if size > limit:
            raise APIError(413, f"file: larger than the {limit}-byte upload limit", param="file")
        digest.update(piece)
    return size, digest.hexdigest()


@router.post("", status_code=201, response_model=DatasetPublic, responses=errors(400, 413))
def create_dataset(session: SessionDep, owner: CurrentOwner,
                   file: Annotated[UploadFile, File(description="a JSONL file in one of the four formats")],
                   _one: Annotated[None, Depends(one_file_part)]) -> DatasetPublic:
    """Upload and validate a JSONL dataset.

    Memory stays flat whatever the size: the multipart parser spools the part to a temporary file, which is
    hashed, validated line by line and copied into the blob store a chunk at a time, all from that file. The
    blob and the row are written in one transaction, after validation: a refused upload leaves nothing."""
    return DatasetPublic.model_validate(store_upload(session, owner, file))


def store_upload(session: Session, owner: Caller, file: UploadFile) -> Dataset:
    """Validate and store one upload as the owner's dataset (POST /v1/datasets and OpenAI's POST /v1/files:
    one record, one validation, the same per-line errors)."""
    settings = get_settings()
    fh = file.file
    size, sha256 = _measure(fh, settings.max_upload_bytes)
    fh.seek(0)
    report, _rows = validate_lines(iter_lines(fh, settings.max_line_bytes), max_line_bytes=settings.max_line_bytes,
                                   keep_rows=False)
    if report.total_errors:
        first = report.errors[0]
        where = f"line {first.line}" + (f" field {first.field!r}" if first.field else "")
        raise APIError(422, f"file: {where}: {first.message} ({report.total_errors} problem(s) in all)",
                       param="file", details=[e.to_dict() for e in report.errors], total=report.total_errors)
    if not report.rows or report.format is None:
        raise APIError(422, "file: no rows", param="file")
    quotas.check_new_bytes(session, owner.id, size)
    name = "".join(c for c in os.path.basename(file.filename or "") if c.isprintable() and not string_problem(c))
    filename = name[:255] or "data.jsonl"  # NUL, control characters and lone surrogates cannot be stored
    store = get_store()
    fh.seek(0)
    blob = store.write(session, iter(lambda: fh.read(store.chunk_bytes), b""))
    if (blob.sha256, blob.bytes) != (sha256, size):  # the spooled file changed under us: store nothing
        raise RuntimeError("the upload's bytes changed between validation and storage")
    ds = Dataset(id=new_id("ds"), owner_id=owner.id, filename=filename, format=report.format, rows=report.rows,
                 bytes=size, sha256=blob.sha256, truncated_rows=0, label_names=report.label_names,
                 blob_id=blob.id)
    session.add(ds)
    session.commit()
    return ds


@router.get("", response_model=ListPage[DatasetPublic], responses=errors())
def list_datasets(session: SessionDep, owner: CurrentOwner, limit: LimitQuery = 20,
                  after: AfterQuery = None) -> ListPage[DatasetPublic]:
    """List the owner's datasets, newest first."""
    rows, more = crud.page(session, select(Dataset).where(Dataset.owner_id == owner.id), Dataset, limit, after)
    return ListPage[DatasetPublic].of([DatasetPublic.model_validate(d) for d in rows], more)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=errors(404))
def read_dataset(ds: DatasetDep) -> DatasetPublic:
    """Read one dataset."""
    return DatasetPublic.model_validate(ds)


@router.delete("/{dataset_id}", response_model=Deleted, responses=errors(404, 409))
def delete_dataset(session: SessionDep, ds: DatasetDep) -> Deleted:
    """Delete a dataset no queued or running job uses."""
    crud.delete_dataset(session, ds)
    session.commit()
    return Deleted(id=ds.id, object="dataset")
