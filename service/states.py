"""Every set of states the service stores or sends, defined once: the tables store their values, the API's
response schemas list them in the OpenAPI document (from which the dashboard's types are generated), and the
code compares against these members, never against a string literal (``tests/test_states.py`` checks).

They are ``StrEnum``s, so a member *is* its value: it is written to a string column, to JSON and to the REST
responses exactly as the bare string was, and a string read back from an older row compares equal.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """Where a job stands: queued and running are active, the others final."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
ACTIVE = (JobStatus.queued, JobStatus.running)


class JobPhase(enum.StrEnum):
    """What a running job is doing (null while it loads the model and data)."""

    selection = "selection"  # SMT's warm-up that picks the blocks
    training = "training"
    evaluating = "evaluating"
    saving = "saving"

    @classmethod
    def shown(cls, engine_phase: str) -> JobPhase | None:
        """The phase a job shows for one the engine reported (None for ``loading`` or any phase not listed)."""
        try:
            return cls(engine_phase)
        except ValueError:
            return None


class MergeStatus(enum.StrEnum):
    """The merged model (merged.tar), once asked for: requested, running, then done or failed."""

    requested = "requested"
    running = "running"
    done = "done"
    failed = "failed"


IN_PROGRESS = (MergeStatus.requested, MergeStatus.running)


class WorkerStatus(enum.StrEnum):
    """A worker's state: stopped after a warm shutdown; lost when silent for three heartbeats or seen dead."""

    idle = "idle"
    busy = "busy"
    stopped = "stopped"
    lost = "lost"


GONE = (WorkerStatus.stopped, WorkerStatus.lost)


class WorkerKind(enum.StrEnum):
    """What a process in the ``workers`` table does: trains jobs (a Celery worker) or serves fine-tuned models
    (an inference process, which the API forwards to at its ``address``). Routing reads only its own kind."""

    trainer = "trainer"
    inference = "inference"


class EventType(enum.StrEnum):
    """A job event's type (its SSE event name); end is the last event of a job's stream."""

    status = "status"
    metric = "metric"
    log = "log"
    end = "end"


class JobErrorCode(enum.StrEnum):  # which failure means which code: worker/failures.py
    """Why a job failed (its error.code); the message says what to change."""

    invalid_request = "invalid_request"  # the job's data or options, found wrong only once it ran
    out_of_memory = "out_of_memory"  # the training process ran out of memory (under its cap)
    training_failed = "training_failed"  # any other error the engine raised
    worker_crashed = "worker_crashed"  # the process running it kept dying, or its worker vanished


class WebhookStatus(enum.StrEnum):
    """A webhook endpoint: active receives events; disabled after its deliveries kept failing (service/webhooks.py)
    until its owner enables it again."""

    active = "active"
    disabled = "disabled"


class WebhookMessageState(enum.StrEnum):
    """One event on its way to one endpoint (the outbox row): pending until a 2xx, or failed once its retry
    schedule is spent."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookEventType(enum.StrEnum):
    """What a webhook can subscribe to: a job ended (OpenAI's event names), or its merged model is ready."""

    job_succeeded = "fine_tuning.job.succeeded"
    job_failed = "fine_tuning.job.failed"
    job_cancelled = "fine_tuning.job.cancelled"
    job_merged = "sparsetune.job.merged"

    @classmethod
    def for_status(cls, status: JobStatus) -> WebhookEventType:
        """The event a job's final status sends."""
        return {JobStatus.succeeded: cls.job_succeeded, JobStatus.failed: cls.job_failed,
                JobStatus.cancelled: cls.job_cancelled}[status]


ALL = (JobStatus, JobPhase, MergeStatus, WorkerStatus, WorkerKind, EventType, JobErrorCode, WebhookStatus,
       WebhookMessageState, WebhookEventType)
