"""Request and response bodies by role (``JobCreate``, ``JobPublic``…) and the one list envelope."""

from __future__ import annotations

import json
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from service import storable
from service.states import EventType, JobErrorCode, JobPhase, JobStatus, MergeStatus, WorkerStatus
from smt_core import hyperparameters as hp

T = TypeVar("T")
METADATA_MAX_KEYS, METADATA_MAX_KEY_CHARS, METADATA_MAX_VALUE_CHARS, METADATA_MAX_BYTES = 16, 64, 512, 16 * 1024


class Strict(BaseModel):
    """Requests refuse unknown fields (422), as INTERFACE.md says."""

    model_config = ConfigDict(extra="forbid")


# Responses read from rows: ``JobPublic.model_validate(job)`` reads the row's attributes (a validation alias
# names a column whose name differs), so a field is written once, here, and the route returns the model.
FROM_ROW = ConfigDict(from_attributes=True, validate_by_name=True)


def _whole_seconds(v: Any) -> Any:
    """Rows keep float seconds; the API shows whole Unix seconds."""
    return int(v) if isinstance(v, float) else v


Timestamp = Annotated[int, BeforeValidator(_whole_seconds)]


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    last_id: str | None

    @classmethod
    def of(cls, data: list[Any], has_more: bool = False, last_id: str | None = None) -> Any:
        """A page of models (call it on the parametrised class, ``ListPage[JobPublic].of(...)``, so the route's
        response check passes it through without validating it again); ``last_id``: the last item's ``id``
        unless given."""
        if last_id is None and data:
            last_id = data[-1].id
        return cls(data=data, has_more=has_more, last_id=last_id)


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None
    details: list[dict[str, Any]] | None = None
    total: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class DatasetPublic(BaseModel):
    model_config = FROM_ROW
    id: str
    object: Literal["dataset"] = "dataset"
    filename: str
    format: str
    rows: int
    bytes: int
    sha256: str
    truncated_rows: int
    label_names: list[str] | None = None
    created_at: Timestamp

    @field_validator("label_names", mode="after")
    @classmethod
    def _printable_labels(cls, names: list[str] | None) -> list[str] | None:
        """Uploads refuse lone surrogates now; a row stored before that still lists (escaped), not a 500."""
        if names is None:
            return None
        return [n if storable.string_problem(n) is None else n.encode("utf-8", "backslashreplace").decode()
                for n in names]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


def from_definition(h: hp.Hyperparameter) -> Any:
    """A field with the default, bounds and help of the hyperparameter's one definition
    (smt_core/hyperparameters.py), so the OpenAPI document, and the dashboard reading it, shows them."""
    return Field(default=h.default, description=h.help, **h.bounds())


class Hyperparameters(Strict):
    # hp.JOB, in its order: the job's stored hyperparameters keep it
    epochs: float | None = from_definition(hp.EPOCHS)
    steps: int | None = from_definition(hp.STEPS)
    learning_rate: float | None = from_definition(hp.LEARNING_RATE)
    batch_size: int = from_definition(hp.BATCH_SIZE)
    max_seq_len: int = from_definition(hp.MAX_SEQ_LEN)
    lr_warmup_steps: int = from_definition(hp.LR_WARMUP_STEPS)
    num_devices: int = from_definition(hp.NUM_DEVICES)
    gradient_checkpointing: bool = from_definition(hp.GRADIENT_CHECKPOINTING)  # an out-of-memory suggests it

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
    budget: int | float | None = Field(default=hp.BUDGET.default, description=hp.BUDGET.help)
    targets: list[Annotated[str, Field(max_length=32)]] = Field(default=list(hp.TARGETS.default),
                                                                description=hp.TARGETS.help, min_length=1, max_length=7)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    method_options: dict[str, Any] = Field(default_factory=dict, max_length=16)
    seed: int = from_definition(hp.SEED)
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
    code: JobErrorCode
    message: str


def _none_as_empty(v: Any) -> Any:
    return [] if v is None else v


class JobPublic(BaseModel):
    model_config = FROM_ROW
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    phase: JobPhase | None
    cancel_requested: bool
    model: str
    method: str
    budget: int | float | None
    targets: list[str]
    training_dataset: str | None = Field(validation_alias="training_dataset_id")
    validation_dataset: str | None = Field(validation_alias="validation_dataset_id")
    holdout_fraction: float | None  # set when no validation dataset was given: that share is held out
    trainable_params: int | None
    total_params: int | None
    steps_completed: int
    total_steps: int | None
    trained_tokens: int
    estimated_finish: Timestamp | None
    metrics: dict[str, Any] | None
    memory: dict[str, Any] | None
    error: JobError | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    hyperparameters: dict[str, Any]
    method_options: dict[str, Any]
    seed: int
    suffix: str | None
    metadata: dict[str, Any] = Field(validation_alias="meta")
    attempts: int
    checkpoint_step: int | None
    pool: str | None = None  # the worker pool it is routed to (smallest that fits its estimated memory)
    estimated_memory: int | None = None  # estimated peak training bytes per device, as shown before launch
    worker: str | None = Field(default=None, validation_alias="worker_id")  # the worker that claimed it last
    merge_status: MergeStatus | None = None  # merged.tar, once asked for
    # said at creation, e.g. that no pool had a live worker (the job waits queued)
    warnings: Annotated[list[str], BeforeValidator(_none_as_empty)] = []


class WorkerPublic(BaseModel):
    id: str
    object: Literal["worker"] = "worker"
    host: str
    pid: int
    pool: str
    pool_memory: int | None  # what the pool promises per worker (bytes; null = unlimited)
    device: str
    device_memory: int | None
    status: WorkerStatus  # lost: no heartbeat for three intervals
    current_job: str | None  # only when the job is the caller's own; another owner's job shows as busy
    started_at: Timestamp
    last_seen_at: Timestamp


class EventPublic(BaseModel):
    model_config = FROM_ROW
    id: Annotated[str, BeforeValidator(str)]  # the row's bigint id as a string (the SSE id)
    object: Literal["event"] = "event"
    job_id: str
    type: EventType
    data: dict[str, Any]
    created_at: Timestamp


class MetricPointPublic(BaseModel):
    model_config = FROM_ROW
    step: int
    train_loss: float | None
    eval_loss: float | None
    eval_accuracy: float | None
    learning_rate: float | None
    tokens_per_second: float | None
    memory: dict[str, Any] | None


class ArtifactPublic(BaseModel):
    model_config = FROM_ROW
    name: str
    object: Literal["artifact"] = "artifact"
    bytes: int
    sha256: str
    created_at: Timestamp


class BlockPublic(BaseModel):
    row: int  # block coordinates, in blocks (ragged edge blocks: height/width below block_size)
    col: int
    row0: int  # the first row and column, in elements, of the (out, in) weight
    col0: int
    height: int
    width: int
    score: float  # the warm-up's importance score that chose it


class BlockModulePublic(BaseModel):
    name: str
    layer: int  # the transformer block (-1: none)
    target: str
    rows: int
    cols: int
    blocks: list[BlockPublic]


class BlocksPublic(BaseModel):
    """SMT's chosen blocks per module, as the worker stored them when selection ended."""

    block_size: int
    modules: list[BlockModulePublic]


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


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadyPublic(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    broker: Literal["ok"]
    workers: Literal["ok", "none_live"]  # whether any pool has a live worker; jobs queue until one starts
