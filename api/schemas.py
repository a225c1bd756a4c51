"""Request and response bodies by role (``JobCreate``, ``JobPublic``…) and the one list envelope."""

from __future__ import annotations

import json
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from service import finetuned, storable
from service.states import EventType, JobErrorCode, JobPhase, JobStatus, MergeStatus, WorkerKind, WorkerStatus
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

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fine_tuned_model(self) -> str | None:
        """``ft:<base>:<suffix or method>:<job id>`` once the job succeeded: the ``model`` to give
        /v1/chat/completions and /v1/completions (null until then). Computed, so it never disagrees with the job."""
        return finetuned.fine_tuned_name(self.status, self.model, self.suffix, self.method, self.id)


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
    kind: WorkerKind  # trainer: a Celery worker that runs jobs; inference: serves models to /v1/chat/completions
    models: list[str]  # the base models an inference process holds loaded ([] for trainers)


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
    created: Timestamp | None = None  # a fine-tuned model: when its job finished; a base model: null
    owned_by: str = "sparsetune"  # a fine-tuned model: its owner's id; a base model: the service
    job: str | None = None  # a fine-tuned model's job (its id is that job's fine_tuned_model); null for a base model
    base: str | None = None  # a fine-tuned model's base model alias; null for a base model


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


# ---- inference, in OpenAI's shapes (api/routes/inference.py; translation in api/openai_shapes.py) ----------
MAX_GENERATED_TOKENS = 8192  # per request; a model's own context may end it sooner (finish_reason "length")
SEED_RANGE = {"ge": -(2**63), "le": 2**63 - 1}


class StrictText(Strict):
    """A request whose strings are forwarded to an inference process: lone surrogates (not UTF-8) and NUL are a
    422 naming the field here, not a failure there."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        if not isinstance(v, BaseModel):
            storable.check_value(v)
        return v


class StreamOptions(Strict):
    include_usage: bool = Field(default=False, description="a last chunk with empty choices carries usage")


class TextPart(StrictText):
    type: Literal["text"]
    text: str


class ChatMessageIn(StrictText):
    role: Literal["system", "developer", "user", "assistant"]  # developer is read as system
    content: str | list[TextPart] = Field(description="text, or text parts (joined)")
    name: str | None = Field(default=None, max_length=64)

    def flat(self) -> dict[str, str]:
        """The message as the inference process takes it: a role its chat template knows and one string."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


StopSequence = Annotated[str, Field(min_length=1, max_length=256)]


class SamplingRequest(StrictText):
    """What chat and completions share: OpenAI's sampling parameters (``n`` only 1; ``user`` accepted and
    ignored)."""

    model: str = Field(min_length=1, max_length=600, description="a fine_tuned_model (ft:…) or a base model alias")
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_GENERATED_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_GENERATED_TOKENS,
                                              description="the same as max_tokens (OpenAI's newer name)")
    temperature: float | None = Field(default=None, ge=0, le=2, description="0 is greedy (default 1)")
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=4)] | None = None
    seed: int | None = Field(default=None, **SEED_RANGE)
    n: int | None = Field(default=None, description="only 1")
    user: str | None = Field(default=None, max_length=256)
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("n", mode="after")
    @classmethod
    def _only_one(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError(f"only n=1 is supported, got {v}")
        return v


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=512)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(description="a string (a list of exactly one string is read as it)")

    @field_validator("prompt", mode="after")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError(f"give one prompt (a string, or a list of one string), got a list of {len(v)}")
        return v


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionPublic(BaseModel):
    """OpenAI's ``chat.completion``; streamed, ``chat.completion.chunk`` objects as SSE ending ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: TokenUsage


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionPublic(BaseModel):
    """OpenAI's ``text_completion``; streamed, ``text_completion`` chunks as SSE ending ``data: [DONE]``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: TokenUsage


class PredictRequest(StrictText):
    texts: list[Annotated[str, Field(max_length=100_000)]] = Field(min_length=1, max_length=256)


class Prediction(BaseModel):
    label: Annotated[str, BeforeValidator(str)]
    probabilities: dict[str, float]  # every label's probability (they sum to 1)
