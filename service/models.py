"""The tables. The database is the source of truth for every job; the broker only says "look at job X".

Timestamps are Unix seconds (floats) so SQLite and Postgres compare them the same way.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# the states are defined in service/states.py; FINISHED and JobStatus are also imported from here
from service.states import (  # noqa: F401
    FINISHED,
    EventType,
    JobPhase,
    JobStatus,
    MergeStatus,
    WebhookEventType,
    WebhookMessageState,
    WebhookStatus,
    WorkerKind,
    WorkerStatus,
)
from smt_core.hyperparameters import HOLDOUT_FRACTION

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


job_status_enum = Enum(JobStatus, name="job_status", native_enum=True, values_callable=lambda e: [m.value for m in e])


def state_column(states: type[enum.StrEnum], length: int = 16) -> Enum:
    """A VARCHAR holding the state's value, as the plain string column before it did (no migration, old rows
    read back), that refuses a value outside the enum on write and reads back the member."""
    return Enum(states, native_enum=False, create_constraint=False, length=length, validate_strings=True,
                values_callable=lambda e: [m.value for m in e])


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Double, default=now)


class ApiKey(Base):
    """Only a SHA-256 of the key is kept; ``prefix`` finds the row without scanning every hash."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double, default=now)
    revoked_at: Mapped[float | None] = mapped_column(Double)


class Blob(Base):
    """Bytes stored in ~4 MiB chunks; ``complete`` flips in the same transaction that wrote the last chunk."""

    __tablename__ = "blobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double, default=now)


class BlobChunk(Base):
    __tablename__ = "blob_chunks"
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    rows: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    truncated_rows: Mapped[int] = mapped_column(Integer, default=0)
    label_names: Mapped[list[str] | None] = mapped_column(JSONType)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    created_at: Mapped[float] = mapped_column(Double, default=now, index=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_created_id", "owner_id", "created_at", "id"),  # keyset pages: one range scan
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(500))
    method: Mapped[str] = mapped_column(String(32))
    budget: Mapped[Any] = mapped_column(JSONType)  # int count or float fraction, kept as given
    training_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    validation_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    targets: Mapped[list[str]] = mapped_column(JSONType)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    method_options: Mapped[dict[str, Any]] = mapped_column(JSONType)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    suffix: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    status: Mapped[JobStatus] = mapped_column(job_status_enum, default=JobStatus.queued)
    phase: Mapped[JobPhase | None] = mapped_column(state_column(JobPhase, 32))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    trainable_params: Mapped[int | None] = mapped_column(BigInteger)
    total_params: Mapped[int | None] = mapped_column(BigInteger)
    steps_completed: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    trained_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_finish: Mapped[float | None] = mapped_column(Double)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    memory: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[float] = mapped_column(Double, default=now)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    # scheduling: the row decides who runs a job, never the broker
    lease_expires_at: Mapped[float | None] = mapped_column(Double)
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    child_pid: Mapped[int | None] = mapped_column(Integer)
    enqueued_at: Mapped[float | None] = mapped_column(Double)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    merge_status: Mapped[MergeStatus | None] = mapped_column(state_column(MergeStatus))  # None: never asked for
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    idempotency_expires_at: Mapped[float | None] = mapped_column(Double)
    # routing: the pool whose queue the job is sent to (picked by estimated peak memory), and who claimed it
    pool: Mapped[str | None] = mapped_column(String(64))
    estimated_memory: Mapped[int | None] = mapped_column(BigInteger)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    # notes from when the job was created, e.g. no pool had a live worker (a list of strings; null: none)
    warnings: Mapped[list[str] | None] = mapped_column(JSONType)
    # DELETE /v1/models/{fine_tuned_model}: the model is gone, the job stays (as at OpenAI)
    model_deleted_at: Mapped[float | None] = mapped_column(Double)
    # the succeeded job (same owner) this one continues: its adapter is where training starts (issue 18)
    init_from: Mapped[str | None] = mapped_column(String(40))

    @property
    def holdout_fraction(self) -> float | None:
        """The share of the training rows the run holds out for evaluation: the engine's default when no
        validation dataset was given (smt_core/hyperparameters.py), else none."""
        return None if self.validation_dataset_id else HOLDOUT_FRACTION.default


class Event(Base):
    """The SSE stream is read from here; ``id`` is the SSE id, so a reconnect with Last-Event-ID misses nothing."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_job_id_id", "job_id", "id"), Index("ix_events_owner_id_id", "owner_id", "id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    type: Mapped[EventType] = mapped_column(state_column(EventType))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[float] = mapped_column(Double, default=now)


class MetricPoint(Base):
    """One row per step; a resumed run rewrites the steps it repeats (unique on job and step)."""

    __tablename__ = "metric_points"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_metric_points_job_step"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Double)
    eval_loss: Mapped[float | None] = mapped_column(Double)
    eval_accuracy: Mapped[float | None] = mapped_column(Double)
    learning_rate: Mapped[float | None] = mapped_column(Double)
    tokens_per_second: Mapped[float | None] = mapped_column(Double)
    memory: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class BlockSelection(Base):
    __tablename__ = "block_selections"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)


class Artifact(Base):
    __tablename__ = "artifacts"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double, default=now)


class Checkpoint(Base):
    """Only a job's latest checkpoint is kept (a tar of the engine's checkpoint folder)."""

    __tablename__ = "checkpoints"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    fencing_token: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double, default=now)


class Worker(Base):
    """One row per worker process, upserted by its heartbeat: who serves which pool, on what device, doing what.

    ``kind`` tells trainers (Celery workers) from inference processes; an inference process also says where
    the API reaches it (``address``), the base models it holds (``models``) and its requests in hand (``load``)."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(255))
    device_memory: Mapped[int | None] = mapped_column(BigInteger)
    current_job_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[WorkerStatus] = mapped_column(state_column(WorkerStatus), default=WorkerStatus.idle)
    started_at: Mapped[float] = mapped_column(Double, default=now)
    last_seen_at: Mapped[float] = mapped_column(Double, default=now, index=True)
    kind: Mapped[WorkerKind] = mapped_column(state_column(WorkerKind), default=WorkerKind.trainer,
                                             server_default=WorkerKind.trainer.value)
    address: Mapped[str | None] = mapped_column(String(255))  # an inference process's base URL
    models: Mapped[list[str] | None] = mapped_column(JSONType)  # the base models an inference process holds
    load: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Webhook(Base):
    """An owner's endpoint for job events (README "Webhooks"). ``secret`` is the ``whsec_…`` signing key, kept
    as it is: every delivery is signed with it at send time, so it must be readable (a hash would not do). The
    database is the trust boundary, as it is for the users' data in the blobs."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_owner_created_id", "owner_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[WebhookEventType]] = mapped_column(JSONType)
    secret: Mapped[str] = mapped_column(String(64))
    status: Mapped[WebhookStatus] = mapped_column(state_column(WebhookStatus), default=WebhookStatus.active)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts since the last 2xx
    created_at: Mapped[float] = mapped_column(Double, default=now)


class WebhookMessage(Base):
    """The outbox: one event for one endpoint, written in the transaction that changed the job, sent by the
    workers (worker/webhooks.py). ``event_id`` is the payload's id and the ``webhook-id`` header of every attempt;
    ``next_attempt_at`` is when it is due (pushed ahead while a worker holds it, so a claim that dies with its
    worker falls due again); ``claim_token`` says which claim may record the attempt."""

    __tablename__ = "webhook_messages"
    __table_args__ = (UniqueConstraint("webhook_id", "event_id", name="uq_webhook_messages_webhook_event"),
                      Index("ix_webhook_messages_state_next", "state", "next_attempt_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[WebhookEventType] = mapped_column(state_column(WebhookEventType, 64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Double, default=now)
    state: Mapped[WebhookMessageState] = mapped_column(state_column(WebhookMessageState),
                                                      default=WebhookMessageState.pending)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Double, default=now)


class WebhookDelivery(Base):
    """One row per attempt to send a message: what the endpoint answered (or why nothing was sent) and how long."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook_created_id", "webhook_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[WebhookEventType] = mapped_column(state_column(WebhookEventType, 64))
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(1000))
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double, default=now)
