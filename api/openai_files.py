"""OpenAI's files over our rows: a dataset is a ``fine-tune`` file (same id), and a succeeded job's results are
``fine-tune-results`` files derived from the job, never stored twice.

Result file ids say which job and which file: ``file-<job id>-metrics`` (``metrics.csv``, built from the job's
metric points when read) and ``file-<job id>-adapter`` (the ``adapter.safetensors`` artifact). Since they are
derived, they exist exactly while the job does and has succeeded: deleting the job deletes them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError
from api.schemas import FilePublic
from service.models import Artifact, Dataset, Job, JobStatus, MetricPoint

RESULT_PREFIX = "file-"
METRICS, ADAPTER = "metrics", "adapter"
RESULT_NAMES = {METRICS: "metrics.csv", ADAPTER: "adapter.safetensors"}  # kind -> filename (the artifact's name)
CSV_COLUMNS = ("step", "train_loss", "eval_loss", "eval_accuracy", "learning_rate", "tokens_per_second")
FINE_TUNE, RESULTS = "fine-tune", "fine-tune-results"


@dataclass(frozen=True)
class ResultId:
    job_id: str
    kind: str  # METRICS or ADAPTER

    def __str__(self) -> str:
        return f"{RESULT_PREFIX}{self.job_id}-{self.kind}"


def parse_result_id(file_id: str) -> ResultId | None:
    """The job and kind a result file id names, or None when ``file_id`` is not shaped like one."""
    if not file_id.startswith(RESULT_PREFIX):
        return None
    job_id, _, kind = file_id.removeprefix(RESULT_PREFIX).rpartition("-")
    return ResultId(job_id, kind) if job_id and kind in RESULT_NAMES else None


def dataset_file(ds: Dataset) -> FilePublic:
    return FilePublic(id=ds.id, bytes=ds.bytes, created_at=ds.created_at, filename=ds.filename, purpose=FINE_TUNE)


def result_ids(session: Session, job: Job) -> list[ResultId]:
    """A succeeded job's result files: the metrics CSV, and the adapter when it was stored."""
    if job.status != JobStatus.succeeded:
        return []
    ids = [ResultId(job.id, METRICS)]
    if session.get(Artifact, (job.id, RESULT_NAMES[ADAPTER])) is not None:
        ids.append(ResultId(job.id, ADAPTER))
    return ids


def metrics_csv(session: Session, job_id: str) -> bytes:
    """The job's metric points by step as CSV (an empty cell where a step has no such value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for m in session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id).order_by(MetricPoint.step)):
        writer.writerow(["" if (v := getattr(m, c)) is None else v for c in CSV_COLUMNS])
    return out.getvalue().encode()


def result_file(session: Session, job: Job, rid: ResultId) -> FilePublic:
    """The FileObject of one of the job's result files (its size: the CSV as built now, the artifact's)."""
    if rid.kind == ADAPTER:
        art = session.get(Artifact, (job.id, RESULT_NAMES[ADAPTER]))
        size, created = (art.bytes, art.created_at) if art is not None else (0, job.finished_at or job.created_at)
    else:
        size, created = len(metrics_csv(session, job.id)), job.finished_at or job.created_at
    return FilePublic(id=str(rid), bytes=size, created_at=created, filename=RESULT_NAMES[rid.kind], purpose=RESULTS)


def owned_result(session: Session, owner_id: str, file_id: str) -> tuple[Job, ResultId] | None:
    """The owner's job and result a result file id names; None when the id is not a result file's shape;
    404 when it is but names nothing of the owner's (another owner's job is as absent as a missing one)."""
    rid = parse_result_id(file_id)
    if rid is None:
        return None
    job = session.get(Job, rid.job_id)
    if job is None or job.owner_id != owner_id or rid not in result_ids(session, job):
        raise APIError(404, f"no file {file_id!r}", param="file_id")
    return job, rid


def results_page(session: Session, owner_id: str, limit: int, after: str | None) -> tuple[list[FilePublic], bool]:
    """The owner's result files, newest job first (metrics, then adapter), ``after`` a result file id."""
    stmt = (select(Job).where(Job.owner_id == owner_id, Job.status == JobStatus.succeeded)
            .order_by(Job.created_at.desc(), Job.id.desc()))
    skip_through: ResultId | None = None
    if after is not None:
        found = owned_result(session, owner_id, after) if parse_result_id(after) else None
        if found is None:
            raise APIError(400, f"after: no item {after!r} in this list", param="after")
        anchor, skip_through = found
        stmt = stmt.where((Job.created_at < anchor.created_at)
                          | ((Job.created_at == anchor.created_at) & (Job.id <= anchor.id)))
    out: list[FilePublic] = []
    for job in session.scalars(stmt.limit(limit + 2)):  # +2: the anchor job, and one more to tell has_more
        ids = result_ids(session, job)
        if skip_through is not None and job.id == skip_through.job_id:
            ids = ids[ids.index(skip_through) + 1:]
        out += [result_file(session, job, rid) for rid in ids]
        if len(out) > limit:
            break
    return out[:limit], len(out) > limit
