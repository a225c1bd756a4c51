"""The service core's refusals, in the domain's words. The core knows no HTTP: api/errors.py maps each kind
to its status code in one place, and a worker or the CLI can catch them without a web framework."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses; ``param`` names the field or limit at fault, ``code`` overrides the
    kind's default machine-readable code (e.g. ``quota_exceeded``)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class NotFound(ServiceError):
    """No such thing, or another owner's (the same answer for both)."""


class Conflict(ServiceError):
    """The thing exists but its state forbids the action (a running job deleted, an Idempotency-Key reused)."""


class Invalid(ServiceError):
    """A field of the request is wrong."""


class OverLimit(ServiceError):
    """A per-owner limit on activity is reached (retry later)."""


class StorageFull(ServiceError):
    """A per-owner storage limit would be passed."""


def conflict(message: str, param: str | None = None) -> Conflict:
    return Conflict(message, param=param)
