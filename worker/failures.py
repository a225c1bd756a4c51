"""What each way a run can end means, decided in one place for both sides of the process boundary.

The training child (``worker/child.py``) turns an exception into either an exit code (the job is not at
fault: it is handed back or left to the run that holds it now) or the job's failure (a code and a message
for the user). The task (``worker/tasks.py``) turns the child's exit into an outcome: recorded by the child,
handed back, resumed on another attempt, or failed with ``worker_crashed`` once ``max_attempts`` runs died.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError

from service.settings import get_settings
from service.states import JobErrorCode
from smt_core.registry import available_methods, get_spec
from worker.leases import LostLease


class ChildExit(enum.IntEnum):
    """The training child's exit codes, the only channel from the child to the task besides the job row."""

    recorded = 0  # the child wrote the outcome itself (succeeded, failed, cancelled)
    handback = 75  # the run stopped (SIGTERM) so the job can move to another worker; no attempt is counted
    lost = 76  # another run holds the job now: nothing more to write
    retry = 77  # the database went away mid-run: hand the job back (resumes from its checkpoint)


class Outcome(enum.StrEnum):
    """What a run of the task came to (its return value and its ``done`` log line)."""

    skipped = "skipped"  # a duplicate or late message: the claim failed
    recorded = "recorded"
    lost = "lost"
    handed_back = "handed back"
    requeued = "requeued"
    failed = "failed"


@dataclass(frozen=True)
class Failure:
    """A job's ``error``: a code from :class:`JobErrorCode` and a message that says what to do about it."""

    code: JobErrorCode
    message: str

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


# ---- inside the child: an exception -------------------------------------------------------------------
def exit_for(exc: BaseException) -> ChildExit | None:
    """The exit code for an exception that is not the job's fault, or None when the job itself failed."""
    if isinstance(exc, LostLease):
        return ChildExit.lost
    if isinstance(exc, DBAPIError):  # the database stayed away past the retries
        return ChildExit.retry
    return None


def job_failure(exc: BaseException, method: str | None) -> Failure:
    """The job's own failure: out of memory (with what to try), bad data or options, or the engine's error."""
    if is_out_of_memory(exc):
        return Failure(JobErrorCode.out_of_memory, out_of_memory_message(exc, method))
    code = JobErrorCode.invalid_request if isinstance(exc, ValueError) else JobErrorCode.training_failed
    return Failure(code, f"{exc.__class__.__name__}: {exc}"[:2000])


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError from Python, or torch's allocator refusing under the RLIMIT_AS cap."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def out_of_memory_message(exc: BaseException, method: str | None) -> str:
    """Say that memory ran out, under which cap, and what usually fits instead (in the order to try)."""
    cap = get_settings().child_memory_bytes
    under = f" under its cap (SPARSETUNE_CHILD_MEMORY_BYTES={cap}, {cap / 2**30:.1f} GiB)" if cap else ""
    tries = ["a smaller hyperparameters.batch_size or max_seq_len",
             "activation checkpointing (hyperparameters.gradient_checkpointing: true)"]
    spec = get_spec(method) if method in available_methods() else None
    if spec is not None and spec.trains_base:
        tries.append(f"a sparse method (smt or snell) instead of {method}, which keeps no optimizer state for "
                     "frozen weights")
    else:
        tries.append("a smaller budget")
    tries.append("a larger SPARSETUNE_CHILD_MEMORY_BYTES on the worker" if cap else "a worker with more memory")
    return (f"the training process ran out of memory{under}. Try {', '.join(tries[:-1])}, or {tries[-1]}. "
            f"({exc.__class__.__name__}: {str(exc)[:300]})")


# ---- in the task: the child's exit ---------------------------------------------------------------------
HANDBACK_MESSAGE = "worker shutting down: handed back, resumes from its checkpoint"


def how_it_died(code: int | None) -> str:
    """A child exit that is none of :class:`ChildExit`'s deliberate ones, in words."""
    if code is not None and code < 0:
        return f"signal {-code}"
    return "database unreachable" if code == ChildExit.retry else f"exit code {code}"


def resumes(attempts: int) -> bool:
    """A run that died is tried again (from its checkpoint) until ``SPARSETUNE_MAX_ATTEMPTS`` runs died."""
    return attempts < get_settings().max_attempts


def resume_message(how: str, checkpoint_step: int | None) -> str:
    where = f"from its checkpoint at step {checkpoint_step}" if checkpoint_step else "from the start"
    return f"training process died ({how}); resuming {where}"


def crashed(how: str, attempts: int) -> Failure:
    return Failure(JobErrorCode.worker_crashed, f"the training process died ({how}) {attempts} times")
