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
from service.states import (
    EventType,
    JobErrorCode,
    JobPhase,
    JobStatus,
    MergeStatus,
    WebhookEventType,
    WebhookStatus,
    WorkerKind,
    WorkerStatus,
)
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
    gradient_accumulation_steps: int = from_definition(hp.GRADIENT_ACCUMULATION_STEPS)
    eval_every: int = from_definition(hp.EVAL_EVERY)
    metric_for_best: Literal["eval_loss", "eval_accuracy"] | None = from_definition(hp.METRIC_FOR_BEST)
    early_stopping_patience: int | None = from_definition(hp.EARLY_STOPPING_PATIENCE)

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
    init_from: str | None = Field(default=None, max_length=40,
                                  description="Continue this succeeded job of yours: same model, method, targets "
                                              "and budget; training starts from its adapter, with a fresh "
                                              "optimizer and learning-rate schedule.")
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
    init_from: str | None = None  # the job this one continues (its lineage)
    # said at creation, e.g. that no pool had a live worker (the job waits queued)
    warnings: Annotated[list[str], BeforeValidator(_none_as_empty)] = []
    # read from the row, never shown: a deleted fine-tuned model (DELETE /v1/models/{id}) has no name
    model_deleted_at: float | None = Field(default=None, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fine_tuned_model(self) -> str | None:
        """``ft:<base>:<suffix or method>:<job id>`` once the job succeeded: the ``model`` to give
        /v1/chat/completions and /v1/completions (null until then, and again once the model is deleted).
        Computed, so it never disagrees with the job."""
        return finetuned.fine_tuned_name(self.status, self.model, self.suffix, self.method, self.id,
                                         self.model_deleted_at)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stopped_early(self) -> bool:
        """True when early stopping (``hyperparameters.early_stopping_patience``) ended the job before its
        ``total_steps``: it still succeeded, with ``steps_completed`` steps. Read from the run's metrics, so it
        needs no column of its own."""
        return bool((self.metrics or {}).get("stopped_early"))


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
    # OpenAI's model object: a fine-tuned model: when its job finished; a base model: its local folder's
    # modification time (0 where there is none, e.g. a hub id)
    created: Timestamp = 0
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
    # batch_size × gradient_accumulation_steps: the rows one update averages over (memory is batch_size's)
    effective_batch_size: int
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


class WebhookCreate(Strict):
    url: str = Field(min_length=1, max_length=2048, description="an http(s) URL at a public address (see README "
                     "\"Webhooks\"); checked now and before every delivery")
    events: list[WebhookEventType] = Field(min_length=1, max_length=16, description="the events to send")

    @field_validator("events")
    @classmethod
    def _once_each(cls, v: list[WebhookEventType]) -> list[WebhookEventType]:
        return list(dict.fromkeys(v))


class WebhookPublic(BaseModel):
    """An endpoint as listed: never its secret (see WebhookCreated)."""

    model_config = FROM_ROW
    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    events: list[WebhookEventType]
    status: WebhookStatus  # disabled: its deliveries kept failing (disabled_reason says how); enable to resume
    disabled_reason: str | None
    created_at: Timestamp


class WebhookCreated(WebhookPublic):
    """The creation's answer, the only one with ``secret`` (``whsec_…``: what receivers verify signatures with)."""

    secret: str


class WebhookDeliveryPublic(BaseModel):
    """One attempt to send one event: the answer's status (null: nothing came back, see ``error``) and time."""

    model_config = FROM_ROW
    id: str
    object: Literal["webhook.delivery"] = "webhook.delivery"
    event_id: str
    event_type: WebhookEventType
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: Timestamp


# ---- OpenAI's fine-tuning objects (api/routes/files.py, api/routes/fine_tuning.py; translation in
# api/openai_jobs.py and api/openai_files.py), so the official openai SDK's types validate them strictly ----
class OpenAIErrorDetail(ErrorDetail):
    type: str | None = None  # OpenAI's error type (invalid_request_error…); the key check's 401 has none


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorDetail


FilePurpose = Literal["fine-tune", "fine-tune-results"]


class FilePublic(BaseModel):
    """OpenAI's ``file``: a dataset (purpose fine-tune; its id is the dataset's id) or a job's result file
    (fine-tune-results; ids ``file-<job id>-metrics`` and ``file-<job id>-adapter``)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: Timestamp
    filename: str
    purpose: FilePurpose
    status: Literal["processed"] = "processed"  # validated on upload: a file that exists is usable
    status_details: str | None = None
    expires_at: int | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


Auto = Literal["auto"]
NEpochs = Annotated[int, Field(ge=1, le=int(hp.EPOCHS.maximum or 1000))]
BatchSize = Annotated[int, Field(**hp.BATCH_SIZE.bounds())]
LearningRateMultiplier = Annotated[float, Field(gt=0, le=1000)]


class OpenAIHyperparameters(Strict):
    """OpenAI's three; ``auto`` (or absent): one epoch, the default batch size, the method's default rate."""

    n_epochs: Auto | NEpochs | None = None
    batch_size: Auto | BatchSize | None = None
    learning_rate_multiplier: Auto | LearningRateMultiplier | None = Field(
        default=None, description="multiplies the method's default learning rate (GET /v1/methods' method)")


class OurMethodHyperparameters(OpenAIHyperparameters):
    """Our methods' hyperparameters in OpenAI's names, plus the native ones OpenAI has no name for (null: the
    service's default, as in POST /v1/jobs)."""

    steps: int | None = Field(default=None, description=hp.STEPS.help, **hp.STEPS.bounds())
    max_seq_len: int | None = Field(default=None, description=hp.MAX_SEQ_LEN.help, **hp.MAX_SEQ_LEN.bounds())
    lr_warmup_steps: int | None = Field(default=None, description=hp.LR_WARMUP_STEPS.help,
                                        **hp.LR_WARMUP_STEPS.bounds())
    num_devices: int | None = Field(default=None, description=hp.NUM_DEVICES.help, **hp.NUM_DEVICES.bounds())
    gradient_checkpointing: bool | None = Field(default=None, description=hp.GRADIENT_CHECKPOINTING.help)


class SupervisedIn(Strict):
    hyperparameters: OpenAIHyperparameters | None = None


class OurMethodIn(Strict):
    """One of our methods beside ``method.type`` (INTERFACE.md "OpenAI fine-tuning routes")."""

    budget: int | float | None = Field(default=hp.BUDGET.default, description=hp.BUDGET.help)
    targets: list[Annotated[str, Field(max_length=32)]] = Field(default=list(hp.TARGETS.default),
                                                                description=hp.TARGETS.help, min_length=1, max_length=7)
    hyperparameters: OurMethodHyperparameters | None = None
    options: dict[str, Any] = Field(default_factory=dict, max_length=16, description="the method's options, as "
                                    "GET /v1/methods lists them (POST /v1/jobs' method_options)")


def _method_in() -> type[BaseModel]:
    """``method``: OpenAI's ``type`` and ``supervised``, and one optional object per method the service offers
    (read from the registry, so a new method is offered here too)."""
    from pydantic import create_model

    from smt_core.registry import served_specs

    fields: dict[str, Any] = {s.name: (OurMethodIn | None, None) for s in served_specs()}
    return create_model("FineTuningMethodIn", __base__=Strict,
                        type=(str, Field(min_length=1, max_length=32, description="supervised (the service's "
                                         "default: SMT at a 1% budget) or one of GET /v1/methods")),
                        supervised=(SupervisedIn | None, None), **fields)


FineTuningMethodIn = _method_in()


class FineTuningJobCreate(Strict):
    """OpenAI's job creation body; it becomes a native job (POST /v1/jobs) through the same checks."""

    model: str = Field(min_length=1, max_length=500)
    training_file: str = Field(min_length=1, max_length=40, description="a file (dataset) id")
    validation_file: str | None = Field(default=None, max_length=40)
    suffix: str | None = Field(default=None, min_length=1, max_length=64, description="no ':' (it is the "
                               "fine-tuned model name's separator)")
    seed: int | None = Field(default=None, **hp.SEED.bounds())
    metadata: dict[Annotated[str, Field(max_length=METADATA_MAX_KEY_CHARS)],
                   Annotated[str, Field(max_length=METADATA_MAX_VALUE_CHARS)]] | None = Field(
        default=None, max_length=METADATA_MAX_KEYS)
    hyperparameters: OpenAIHyperparameters | None = Field(default=None, description="OpenAI's older place for "
                                                          "them; give them in method instead")
    method: FineTuningMethodIn | None = None  # type: ignore[valid-type]
    integrations: list[dict[str, Any]] | None = Field(default=None, max_length=0, description="not supported")

    @field_validator("suffix")
    @classmethod
    def _no_colon(cls, v: str | None) -> str | None:
        if v is not None and ":" in v:
            raise ValueError("must not contain ':' (the fine-tuned model name's separator)")
        return v

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        if not isinstance(v, BaseModel):
            storable.check_value(v)
        return v


class FineTuningHyperparametersPublic(BaseModel):
    n_epochs: int  # epochs run (steps given instead: the passes they make, rounded up)
    batch_size: int
    learning_rate_multiplier: float  # the learning rate over the method's default for this model


class SupervisedPublic(BaseModel):
    hyperparameters: FineTuningHyperparametersPublic


class OurMethodPublic(BaseModel):
    budget: int | float | None
    targets: list[str]
    options: dict[str, Any]
    trainable_params: int | None
    hyperparameters: dict[str, Any]  # the native job's, resolved (learning_rate, max_seq_len…)


class FineTuningMethodPublic(BaseModel):
    """Always OpenAI's ``supervised``; our method's object (OurMethodPublic) stands beside it under the method's
    own key (``"smt": {…}``)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedPublic


class FineTuningErrorPublic(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJobPublic(BaseModel):
    """OpenAI's ``fine_tuning.job``: the native job (same id, GET /v1/jobs/{id}) seen through OpenAI's type."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: Timestamp
    error: FineTuningErrorPublic | None
    fine_tuned_model: str | None
    finished_at: Timestamp | None
    hyperparameters: FineTuningHyperparametersPublic
    model: str
    organization_id: str  # the owner's id
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str  # "" once the training dataset was deleted (the job keeps no copy of its id)
    validation_file: str | None
    estimated_finish: Timestamp | None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None  # a native job's non-string values as JSON text
    method: FineTuningMethodPublic
    user_provided_suffix: str | None


class FineTuningEventPublic(BaseModel):
    id: str  # ftevent-<the native event's id>
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: Timestamp
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None
    type: Literal["message", "metrics"]


class CheckpointMetricsPublic(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningCheckpointPublic(BaseModel):
    id: str  # ftckpt-<job id>-<step>
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: Timestamp
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetricsPublic
    step_number: int
