"""Datasets: JSONL uploads validated line by line, stored as chunked blobs with their sha256."""

from __future__ import annotations

import hashlib
import os
from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from sqlalchemy import select

from api import crud
from api.blobstore import get_store
from api.deps import CurrentOwner, DatasetDep, SessionDep
from api.errors import APIError
from api.models import Dataset
from api.routes.common import AfterQuery, LimitQuery, envelope, errors
from api.schemas import DatasetPublic, Deleted, ListPage
from api.security import new_id
from api.settings import get_settings
from api.storable import string_problem
from smt_core.dataformats import validate_lines

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"file: larger than the {limit}-byte upload limit", param="file")
    return data


@router.post("", status_code=201, response_model=DatasetPublic, responses=errors(400, 413))
def create_dataset(session: SessionDep, owner: CurrentOwner,
                   file: Annotated[UploadFile, File(description="a JSONL file in one of the four formats")]) -> dict:
    """Upload and validate a JSONL dataset."""
    settings = get_settings()
    data = _read_limited(file, settings.max_upload_bytes)
    report, _rows = validate_lines(data.splitlines(), max_line_bytes=settings.max_line_bytes)
    if report.total_errors:
        first = report.errors[0]
        where = f"line {first.line}" + (f" field {first.field!r}" if first.field else "")
        raise APIError(422, f"file: {where}: {first.message} ({report.total_errors} problem(s) in all)",
                       param="file", details=[e.to_dict() for e in report.errors], total=report.total_errors)
    if not report.rows or report.format is None:
        raise APIError(422, "file: no rows", param="file")
    name = "".join(c for c in os.path.basename(file.filename or "") if c.isprintable() and not string_problem(c))
    filename = name[:255] or "data.jsonl"  # NUL, control characters and lone surrogates cannot be stored
    blob = get_store().write_bytes(session, data)
    assert blob.sha256 == hashlib.sha256(data).hexdigest(), "blob store computed another sha256"
    ds = Dataset(id=new_id("ds"), owner_id=owner.id, filename=filename, format=report.format, rows=report.rows,
                 bytes=len(data), sha256=blob.sha256, truncated_rows=0, label_names=report.label_names,
                 blob_id=blob.id)
    session.add(ds)
    session.commit()
    return crud.dataset_public(ds)


@router.get("", response_model=ListPage[DatasetPublic], responses=errors())
def list_datasets(session: SessionDep, owner: CurrentOwner, limit: LimitQuery = 20, after: AfterQuery = None) -> dict:
    """List the owner's datasets, newest first."""
    rows, more = crud.page(session, select(Dataset).where(Dataset.owner_id == owner.id), Dataset, limit, after)
    return envelope([crud.dataset_public(d) for d in rows], more)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=errors(404))
def read_dataset(ds: DatasetDep) -> dict:
    """Read one dataset."""
    return crud.dataset_public(ds)


@router.delete("/{dataset_id}", response_model=Deleted, responses=errors(404, 409))
def delete_dataset(session: SessionDep, ds: DatasetDep) -> dict:
    """Delete a dataset no queued or running job uses."""
    crud.delete_dataset(session, ds)
    session.commit()
    return {"id": ds.id, "object": "dataset", "deleted": True}
