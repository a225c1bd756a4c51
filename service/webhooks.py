"""Webhooks: tell an owner's systems when a job ends, the way OpenAI does, signed per Standard Webhooks.

The outbox pattern: :func:`enqueue` writes one ``webhook_messages`` row per subscribed endpoint in the same
transaction that changes the job, so an event exists exactly when the change committed — never lost to a crash
between the two, never sent for a change that rolled back. The workers send them (worker/webhooks.py), never
the request path; a message is delivered at least once (a receiver dedupes on ``webhook-id``).

Signing (https://www.standardwebhooks.com): the secret is ``whsec_`` + base64 of 32 random bytes; each attempt
carries ``webhook-id`` (the event id, the same on every retry), ``webhook-timestamp`` (Unix seconds, fresh per
attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the decoded
secret>`` — what the ``standardwebhooks`` package and the openai SDK's ``webhooks.verify_signature`` check.

Retries and disabling: a failed attempt (no 2xx, or nothing sent) is tried again after each delay of
SPARSETUNE_WEBHOOK_RETRY_SCHEDULE in turn; after the last one the message is ``failed``. An endpoint whose
message fails that way with no successful delivery to it meanwhile (every attempt since the message's first
failed: it has been down about a day by default) is disabled with the reason; its pending messages wait, and
``POST /v1/webhooks/{id}/enable`` sends them again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Job, Webhook, WebhookMessage
from service.security import new_id
from service.settings import get_settings
from service.states import WebhookEventType, WebhookStatus

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes: the form both verifiers decode."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def enqueue(session: Session, job: Job, event_type: WebhookEventType) -> int:
    """Write the event for every active webhook of the job's owner subscribed to it, in the caller's
    transaction (which must be the one that changes the job); returns how many messages were written."""
    hooks = [h for h in session.scalars(select(Webhook).where(Webhook.owner_id == job.owner_id,
                                                               Webhook.status == WebhookStatus.active))
             if event_type in h.events]
    if not hooks:
        return 0
    now = time.time()
    event_id = new_id("evt")
    payload = {"id": event_id, "object": "event", "type": str(event_type), "created_at": int(now),
               "data": {"id": job.id}}
    for hook in hooks:
        session.add(WebhookMessage(webhook_id=hook.id, event_id=event_id, event_type=event_type, payload=payload,
                                   attempts=0, next_attempt_at=now, created_at=now))
    return len(hooks)


def body_of(payload: dict[str, Any]) -> bytes:
    """The bytes sent and signed (compact JSON)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<signature>`` of one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed now (a receiver refuses a stale timestamp)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body),
            "content-type": "application/json", "user-agent": "sparsetune-webhooks/1"}


def retry_delay(attempts: int) -> float | None:
    """Seconds until the next try after ``attempts`` failed ones; None once the schedule is spent."""
    schedule = get_settings().webhook_retry_schedule
    return schedule[attempts - 1] if 1 <= attempts <= len(schedule) else None


def disable_reason(attempts: int) -> str:
    return (f"disabled after {attempts} failed attempts in a row to deliver one event (the whole retry schedule, "
            "SPARSETUNE_WEBHOOK_RETRY_SCHEDULE) with no successful delivery meanwhile; fix the endpoint, then "
            "enable it again")
