"""Request and response bodies by role (``JobCreate``, ``JobPublic``…) and the one list envelope."""

from __future__ import annotations

import json
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service import storable

T = TypeVar("T")
METADATA_MAX_KEYS, METADATA_MAX_KEY_CHARS, METADATA_MAX_VALUE_CHARS, METADATA_MAX_BYTES = 16, 64, 512, 16 * 1024


class Strict(BaseModel):
    """Requests refuse unknown fields (422), as INTERFACE.md says."""

    model_config = ConfigDict(extra="forbid")


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    last_id: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None
    details: list[dict[str, Any]] | None = None
    total: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class DatasetPublic(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    filename: str
    format: str
    rows: int
    bytes: int
    sha256: str
    truncated_rows: int
    label_names: list[str] | None = None
    created_at: int


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class Hyperparameters(Strict):
    epochs: float | None = Field(default=None, gt=0, le=1000)
    steps: int | None = Field(default=None, ge=1, le=10_000_000)
    learning_rate: float | None = Field(default=None, gt=0, le=10)
    batch_size: int = Field(default=8, ge=1, le=4096)
    max_seq_len: int = Field(default=256, ge=8, le=131072)
    lr_warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    # data-parallel processes for the job (one per GPU, or gloo processes on a CPU worker); batch_size is global
    num_devices: int = Field(default=1, ge=1, le=64)
    # recompute activations in the backward pass: less memory, more time (an out-of-memory suggests it)
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> Hyperparameters:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.batch_size % self.num_devices:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by num_devices ({self.num_devices})")
        return self


class JobCreate(Strict):
    model: str = Field(min_length=1, max_length=500)
    training_dataset: str = Field(min_length=1, max_length=40)
    validation_dataset: str | None = Field(default=None, max_length=40)
    method: str = Field(min_length=1, max_length=32)
    budget: int | float | None = 0.01
    targets: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=lambda: ["q", "k", "v"],
                                                                min_length=1, max_length=7)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    method_options: dict[str, Any] = Field(default_factory=dict, max_length=16)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    suffix: str | None = Field(default=None, max_length=64)
    # as OpenAI's: at most 16 keys of up to 64 characters, string values of up to 512, and (since other JSON
    # values are kept too) at most METADATA_MAX_BYTES as JSON
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=METADATA_MAX_KEYS)

    @field_validator("budget", mode="before")
    @classmethod
    def _no_bool_budget(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a number")
        return v

    @field_validator("metadata", mode="after")
    @classmethod
    def _small_metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        def walk(value: Any, where: str) -> None:
            if isinstance(value, str) and len(value) > METADATA_MAX_VALUE_CHARS:
                raise ValueError(f"{where}: {len(value)} characters, over {METADATA_MAX_VALUE_CHARS}")
            items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
            for key, item in items:
                walk(item, f"{where}[{key!r}]")

        for key, value in v.items():
            if len(key) > METADATA_MAX_KEY_CHARS:
                raise ValueError(f"key {key[:20]!r}…: over {METADATA_MAX_KEY_CHARS} characters")
            walk(value, repr(key))
        size = len(json.dumps(v, ensure_ascii=False, allow_nan=True, default=str).encode("utf-8", "surrogatepass"))
        if size > METADATA_MAX_BYTES:
            raise ValueError(f"{size} bytes as JSON, over {METADATA_MAX_BYTES}")
        return v

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        """NaN, Infinity, NUL, lone surrogates and deep nesting are a 422 here, not a database error later."""
        if not isinstance(v, BaseModel):
            storable.check_value(v)
        return v


class JobError(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: str
    phase: str | None
    cancel_requested: bool
    model: str
    method: str
    budget: int | float | None
    targets: list[str]
    training_dataset: str | None
    validation_dataset: str | None
    holdout_fraction: float | None  # set when no validation dataset was given: that share is held out
    trainable_params: int | None
    total_params: int | None
    steps_completed: int
    total_steps: int | None
    trained_tokens: int
    estimated_finish: int | None
    metrics: dict[str, Any] | None
    memory: dict[str, Any] | None
    error: JobError | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    method_options: dict[str, Any]
    seed: int
    suffix: str | None
    metadata: dict[str, Any]
    attempts: int
    checkpoint_step: int | None
    pool: str | None = None  # the worker pool it is routed to (smallest that fits its estimated memory)
    estimated_memory: int | None = None  # estimated peak training bytes per device, as shown before launch
    worker: str | None = None  # the worker that claimed it last
    merge_status: Literal["requested", "running", "done", "failed"] | None = None  # merged.tar, once asked for
    warnings: list[str] = []  # said at creation, e.g. that no pool had a live worker (the job waits queued)


class WorkerPublic(BaseModel):
    id: str
    object: Literal["worker"] = "worker"
    host: str
    pid: int
    pool: str
    pool_memory: int | None  # what the pool promises per worker (bytes; null = unlimited)
    device: str
    device_memory: int | None
    status: Literal["idle", "busy", "stopped", "lost"]  # lost: no heartbeat for three intervals
    current_job: str | None  # only when the job is the caller's own; another owner's job shows as busy
    started_at: int
    last_seen_at: int


class EventPublic(BaseModel):
    id: str
    object: Literal["event"] = "event"
    job_id: str
    type: str
    data: dict[str, Any]
    created_at: int


class MetricPointPublic(BaseModel):
    step: int
    train_loss: float | None
    eval_loss: float | None
    eval_accuracy: float | None
    learning_rate: float | None
    tokens_per_second: float | None
    memory: dict[str, Any] | None


class ArtifactPublic(BaseModel):
    name: str
    object: Literal["artifact"] = "artifact"
    bytes: int
    sha256: str
    created_at: int


class ArtifactRequest(BaseModel):
    name: str
    object: Literal["artifact_request"] = "artifact_request"
    status: str


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    parameters: int | None
    architecture: str | None
    targets: list[str]


class MethodOptionPublic(BaseModel):
    name: str
    type: Literal["integer", "number", "boolean", "string"]
    default: Any  # null: computed by the method (the help says how)
    minimum: int | float | None
    maximum: int | float | None
    enum: list[Any] | None
    help: str


class MethodPublic(BaseModel):
    id: str
    object: Literal["method"] = "method"
    uses_budget: bool
    options: list[MethodOptionPublic]


class EstimateTokens(BaseModel):
    rows: int
    longest: int  # tokens of the longest row as the engine encodes it, before truncation
    shortest: int
    exact: bool  # counted with the model's tokenizer (false: about 4 characters a token)


class EstimatePublic(BaseModel):
    model: str
    object: Literal["estimate"] = "estimate"
    method: str
    budget: int | float | None
    targets: list[str]
    trainable_params: int
    total_params: int
    # weights (frozen), trainable, gradients, optimizer, activations, selection (smt: the warm-up's gradient
    # sums), peak = max(warm-up, training) including the loss's short-lived tensors
    memory: dict[str, int]
    device: Literal["cpu", "cuda"] = "cpu"
    sequence_length: int  # the padded width activations are sized for: the longest row (≤ max_seq_len)
    training_dataset: str | None = None
    tokens: EstimateTokens | None = None  # the training dataset's row lengths, when one was given
    estimated: bool = True


class UsageLimits(BaseModel):
    max_active_jobs_per_owner: int  # queued + running
    max_steps: int  # per job, given or implied by epochs
    max_stored_bytes_per_owner: int  # datasets + artifacts


class UsagePublic(BaseModel):
    object: Literal["usage"] = "usage"
    queued_jobs: int
    running_jobs: int
    stored_bytes: int  # datasets + artifacts
    limits: UsageLimits
