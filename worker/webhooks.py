"""Webhook delivery: every worker process sends the outbox (service/webhooks.py), a few messages a tick.

A tick claims due messages — ``FOR UPDATE SKIP LOCKED`` on Postgres, so workers never take the same row; on
SQLite the conditional update below serialises them — by pushing ``next_attempt_at`` past the time one attempt
can take and setting a claim token. It sends each (in a few threads), then records the attempt under that
token: a ``webhook_deliveries`` row, and the message delivered, due again on the retry schedule, or failed.
A worker killed mid-send records nothing; its claim runs out and the message is due again for any worker
(at least once: the receiver may see the same ``webhook-id`` twice, as Standard Webhooks expects).

Each attempt is signed at send time and goes only to an address that passes service/webhook_urls.py, checked
on a fresh resolution; the connection is made to that very address (the host name kept for the Host header
and the TLS server name), redirects are not followed, proxies from the environment are not used, timeouts are
short and at most a little of the answer is read.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx
from sqlalchemy import select, update

from service import webhook_urls
from service import webhooks as hooks
from service.db import get_engine, session_scope
from service.errors import Invalid
from service.models import Webhook, WebhookDelivery, WebhookMessage
from service.periodic import Periodic
from service.security import new_id
from service.settings import get_settings
from service.states import WebhookMessageState, WebhookStatus

log = logging.getLogger("sparsetune.webhooks")
BATCH = 8  # messages claimed a tick (sent THREADS at a time)
THREADS = 4
ANSWER_BYTES = 512  # of the receiver's answer, kept in the delivery's error (the rest is not read)
CLAIM_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class Claimed:
    """A message this worker holds until ``claim_token`` runs out, with what its attempt needs."""

    id: int
    webhook_id: str
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    claim_token: str
    url: str
    secret: str


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_seconds() -> float:
    """How long a claim holds: longer than one attempt (connect + read timeouts) and the batch ahead of it."""
    per_attempt = 2 * get_settings().webhook_timeout_seconds
    return per_attempt * (BATCH // THREADS) + CLAIM_MARGIN_SECONDS


def claim(limit: int = BATCH) -> list[Claimed]:
    """Take up to ``limit`` due messages of active endpoints, oldest due first."""
    now = time.time()
    token = secrets.token_hex(8)
    with session_scope() as s:
        due = (select(WebhookMessage.id).join(Webhook, Webhook.id == WebhookMessage.webhook_id)
               .where(WebhookMessage.state == WebhookMessageState.pending, WebhookMessage.next_attempt_at <= now,
                      Webhook.status == WebhookStatus.active)
               .order_by(WebhookMessage.next_attempt_at).limit(limit))
        if get_engine().dialect.name == "postgresql":
            due = due.with_for_update(of=WebhookMessage, skip_locked=True)
        ids = list(s.scalars(due))
        if not ids:
            return []
        # conditional: on SQLite another worker may have claimed a row between our read and this write
        taken = list(s.scalars(update(WebhookMessage)
                               .where(WebhookMessage.id.in_(ids), WebhookMessage.state == WebhookMessageState.pending,
                                      WebhookMessage.next_attempt_at <= now)
                               .values(next_attempt_at=now + claim_seconds(), claim_token=token)
                               .returning(WebhookMessage.id)))
        rows = s.execute(select(WebhookMessage, Webhook.url, Webhook.secret)
                         .join(Webhook, Webhook.id == WebhookMessage.webhook_id)
                         .where(WebhookMessage.id.in_(taken))).all()
        return [Claimed(m.id, m.webhook_id, m.event_id, str(m.event_type), dict(m.payload), m.attempts, token, url,
                        secret) for m, url, secret in rows]


def send(message: Claimed) -> Attempt:
    """One attempt: check the URL on a fresh resolution, sign now, POST to the address that passed."""
    settings = get_settings()
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = webhook_urls.check(message.url, settings.webhooks_may_reach_private)
    except Invalid as exc:
        return Attempt(None, f"not sent: {exc.message}"[:1000], took())
    body = hooks.body_of(message.payload)
    headers = hooks.signed_headers(message.secret, message.event_id, body)
    try:
        status, answer = post_pinned(message.url, target, headers, body, settings.webhook_timeout_seconds)
    except httpx.HTTPError as exc:
        return Attempt(None, f"{exc.__class__.__name__}: {exc}"[:1000] or exc.__class__.__name__, took())
    error = None if 200 <= status < 300 else f"HTTP {status}: {answer}"[:1000]
    return Attempt(status, error, took())


def post_pinned(url: str, target: webhook_urls.Target, headers: dict[str, str], body: bytes,
                timeout: float) -> tuple[int, str]:
    """POST to ``target.address`` while the request still names the host (Host header, TLS SNI and certificate
    check), so the connection cannot go to an address that was not checked; (status, start of the answer)."""
    pinned = httpx.URL(url).copy_with(host=str(target.address))
    host = httpx.URL(url).netloc.decode("ascii")
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
                      verify=_tls()) as client:
        request = client.build_request("POST", pinned, content=body, headers={**headers, "host": host},
                                       extensions={"sni_hostname": target.host})
        response = client.send(request, stream=True)
        try:
            answer = b""
            for chunk in response.iter_raw():
                answer += chunk
                if len(answer) >= ANSWER_BYTES:
                    break
        finally:
            response.close()
    return response.status_code, answer[:ANSWER_BYTES].decode("utf-8", "replace")


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One verifying TLS context for every attempt (building one loads the CA bundle: ~0.1 s each time)."""
    return httpx.create_ssl_context()


def record(message: Claimed, attempt: Attempt) -> None:
    """The attempt's row, and the message's and endpoint's new state, if this claim still holds the message
    (else a later claim is sending it again: the row alone is written, the state is the later claim's). Nothing
    if the webhook was deleted meanwhile. Locks the webhook, then the message (as enabling one does)."""
    now = time.time()
    number = message.attempts + 1
    with session_scope() as s:
        hook = s.get(Webhook, message.webhook_id, with_for_update=True)
        if hook is None:
            return
        s.add(WebhookDelivery(id=new_id("whd"), webhook_id=message.webhook_id, event_id=message.event_id,
                              event_type=message.event_type, attempt=number, status_code=attempt.status_code,
                              error=attempt.error, duration_ms=attempt.duration_ms, created_at=now))
        held = s.scalar(select(WebhookMessage).where(WebhookMessage.id == message.id,
                                                     WebhookMessage.claim_token == message.claim_token,
                                                     WebhookMessage.state == WebhookMessageState.pending)
                        .with_for_update())
        if held is None:
            return
        held.attempts, held.claim_token = number, None
        if attempt.ok:
            held.state = WebhookMessageState.delivered
            hook.consecutive_failures = 0
            return
        hook.consecutive_failures += 1
        delay = hooks.retry_delay(number)
        if delay is not None:
            held.next_attempt_at = now + delay
            return
        held.state = WebhookMessageState.failed
        if hook.consecutive_failures >= number and hook.status == WebhookStatus.active:
            hook.status, hook.disabled_reason = WebhookStatus.disabled, hooks.disable_reason(number)
            log.warning("webhook disabled", extra={"webhook_id": hook.id})


def deliver(message: Claimed) -> Attempt:
    attempt = send(message)
    record(message, attempt)
    return attempt


def tick(rounds: int = 4) -> int:
    """Claim and send due messages until none is due (at most ``rounds`` batches); returns how many were sent."""
    sent = 0
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="sparsetune-webhook") as pool:
        for _ in range(rounds):
            batch = claim()
            if not batch:
                break
            sent += sum(1 for _ in pool.map(deliver, batch))
    return sent


_periodic = Periodic("webhooks", tick, lambda: get_settings().webhook_poll_seconds)
start, stop = _periodic.start, _periodic.stop
