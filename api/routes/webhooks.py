"""Webhooks: an owner's endpoints for job events (create, list, delete, enable) and their delivery attempts.
Delivery itself is the workers' (worker/webhooks.py); how and why: service/webhooks.py."""

from __future__ import annotations

import time

from fastapi import APIRouter
from sqlalchemy import func, select, update

from api.deps import CurrentOwner, SessionDep, WebhookDep
from api.errors import APIError
from api.routes.common import AfterQuery, LimitQuery, errors
from api.schemas import Deleted, ListPage, WebhookCreate, WebhookCreated, WebhookDeliveryPublic, WebhookPublic
from service import crud, webhook_urls, webhooks
from service.models import Webhook, WebhookDelivery, WebhookMessage
from service.security import new_id
from service.settings import get_settings
from service.states import WebhookMessageState, WebhookStatus

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
MAX_WEBHOOKS_PER_OWNER = 20


@router.post("", status_code=201, response_model=WebhookCreated, responses=errors(400, 409))
def create_webhook(body: WebhookCreate, session: SessionDep, owner: CurrentOwner) -> WebhookCreated:
    """Create a webhook; the answer is the only one that shows its signing secret."""
    webhook_urls.check(body.url, get_settings().webhooks_may_reach_private)  # 422 naming url
    count = session.scalar(select(func.count()).select_from(Webhook).where(Webhook.owner_id == owner.id))
    if count >= MAX_WEBHOOKS_PER_OWNER:
        raise APIError(409, f"at most {MAX_WEBHOOKS_PER_OWNER} webhooks per owner; delete one first", param="url")
    hook = Webhook(id=new_id("wh"), owner_id=owner.id, url=body.url, events=[str(e) for e in body.events],
                   secret=webhooks.new_secret(), status=WebhookStatus.active, consecutive_failures=0,
                   created_at=time.time())
    session.add(hook)
    session.commit()
    return WebhookCreated.model_validate(hook)


@router.get("", response_model=ListPage[WebhookPublic], responses=errors())
def list_webhooks(session: SessionDep, owner: CurrentOwner, limit: LimitQuery = 20,
                  after: AfterQuery = None) -> ListPage[WebhookPublic]:
    """List the owner's webhooks, newest first (without their secrets)."""
    rows, more = crud.page(session, select(Webhook).where(Webhook.owner_id == owner.id), Webhook, limit, after)
    return ListPage[WebhookPublic].of([WebhookPublic.model_validate(h) for h in rows], more)


@router.delete("/{webhook_id}", response_model=Deleted, responses=errors(404))
def delete_webhook(session: SessionDep, hook: WebhookDep) -> Deleted:
    """Delete a webhook, its undelivered messages and its delivery log."""
    hook_id = hook.id
    session.delete(hook)
    session.commit()
    return Deleted(id=hook_id, object="webhook")


@router.post("/{webhook_id}/enable", response_model=WebhookPublic, responses=errors(404))
def enable_webhook(session: SessionDep, hook: WebhookDep) -> WebhookPublic:
    """Enable a webhook again (after it was disabled for failing): its waiting messages are sent at once."""
    if hook.status != WebhookStatus.active:
        hook.status, hook.disabled_reason, hook.consecutive_failures = WebhookStatus.active, None, 0
        session.execute(update(WebhookMessage).where(WebhookMessage.webhook_id == hook.id,
                                                     WebhookMessage.state == WebhookMessageState.pending)
                        .values(next_attempt_at=time.time()))
        session.commit()
    return WebhookPublic.model_validate(hook)


@router.get("/{webhook_id}/deliveries", response_model=ListPage[WebhookDeliveryPublic], responses=errors(404))
def list_deliveries(session: SessionDep, hook: WebhookDep, limit: LimitQuery = 20,
                    after: AfterQuery = None) -> ListPage[WebhookDeliveryPublic]:
    """The webhook's delivery attempts, newest first."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    rows, more = crud.page(session, stmt, WebhookDelivery, limit, after)
    return ListPage[WebhookDeliveryPublic].of([WebhookDeliveryPublic.model_validate(d) for d in rows], more)
