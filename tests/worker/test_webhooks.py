"""Webhooks end to end on the real stack (Postgres, Redis): a job's end writes the outbox in its own transaction,
the delivery loop sends it to a real HTTP receiver on 127.0.0.1, signed so that the ``standardwebhooks`` package
and the openai SDK both verify it; retries keep the id and sign afresh; an endpoint that keeps failing is
disabled and can be enabled; private addresses are refused unless allowed; a worker killed mid-delivery
delivers once one is back. Most tests drive the loop in this process (``worker.webhooks.tick``); the kill test
runs it in real worker processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import openai
import pytest
import standardwebhooks
from sqlalchemy import select, update

from api.schemas import JobCreate
from service import crud, reconcile, webhook_urls
from service.blobstore import get_store
from service.db import session_scope
from service.errors import Invalid
from service.models import Dataset, Job, JobStatus, WebhookMessage
from service.settings import get_settings
from service.states import WebhookMessageState
from tests.api.fixtures import environment, make_key, start_worker, stop_process, wait_for
from tests.webhook_receiver import Receiver
from worker import leases, webhooks

ALL_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled",
              "sparsetune.job.merged"]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture()
def allow_private(service_env) -> Iterator[dict[str, str]]:
    """Local receivers allowed, retries fast: what the tests (and `sparsetune up`) need."""
    env = {"SPARSETUNE_WEBHOOK_ALLOW_PRIVATE": "true", "SPARSETUNE_WEBHOOK_RETRY_SCHEDULE": "1,1",
           "SPARSETUNE_WEBHOOK_TIMEOUT_SECONDS": "1", "SPARSETUNE_WEBHOOK_POLL_SECONDS": "0.2"}
    with environment(env):
        yield env


def owner_with_webhook(client, url: str, events: list[str] | None = None) -> tuple[dict[str, str], dict]:
    key, _ = make_key("webhooks")
    headers = {"Authorization": f"Bearer {key}"}
    r = client.post("/v1/webhooks", headers=headers, json={"url": url, "events": events or ALL_EVENTS})
    assert r.status_code == 201, r.text
    return headers, r.json()


def queued_job(headers: dict[str, str]) -> str:
    """A queued job of the key's owner, written directly (no broker message: nothing will run it)."""
    from service.security import authenticate

    with session_scope() as s:
        owner = authenticate(s, headers["Authorization"].split(" ", 1)[1])
        blob = get_store().write_bytes(s, b"{}\n")
        ds = Dataset(id=f"ds_{time.time_ns()}", owner_id=owner.id, filename="x.jsonl", format="chat", rows=1,
                     bytes=3, sha256=blob.sha256, blob_id=blob.id)
        s.add(ds)
        s.flush()
        body = JobCreate(model="cfg-llama", training_dataset=ds.id, method="smt", budget=16)
        return crud.create_job(s, owner.id, body, {"steps": 1}, None).id


def deliver_until(receiver: Receiver, count: int, timeout: float = 20) -> None:
    """Run the delivery loop here until the receiver has ``count`` requests."""
    def enough() -> bool:
        webhooks.tick()
        return len(receiver.requests) >= count

    wait_for(enough, timeout=timeout, interval=0.2, what=f"{count} deliveries")


def messages(webhook_id: str) -> list[WebhookMessage]:
    with session_scope() as s:
        return list(s.scalars(select(WebhookMessage).where(WebhookMessage.webhook_id == webhook_id)))


# ---------------------------------------------------------------------------------------------------------------


def test_cancel_delivers_a_signed_event_that_both_verifiers_accept_and_a_wrong_secret_fails(
        client, allow_private, receiver):
    headers, hook = owner_with_webhook(client, receiver.url)
    assert hook["secret"].startswith("whsec_") and hook["status"] == "active" and hook["object"] == "webhook"
    listed = client.get("/v1/webhooks", headers=headers).json()
    assert [h["id"] for h in listed["data"]] == [hook["id"]] and "secret" not in listed["data"][0]
    job_id = queued_job(headers)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()["status"] == "cancelled"
    [message] = messages(hook["id"])  # written with the cancel, before anything was sent
    assert message.state == WebhookMessageState.pending and message.event_type == "fine_tuning.job.cancelled"

    deliver_until(receiver, 1)
    [(got, body)] = receiver.requests
    event = standardwebhooks.Webhook(hook["secret"]).verify(body, got)
    assert event == {"id": message.event_id, "object": "event", "type": "fine_tuning.job.cancelled",
                     "created_at": event["created_at"], "data": {"id": job_id}}
    assert got["webhook-id"] == message.event_id
    sdk = openai.OpenAI(api_key="unused", webhook_secret=hook["secret"])
    sdk.webhooks.verify_signature(body, got)
    assert sdk.webhooks.unwrap(body, got).type == "fine_tuning.job.cancelled"

    wrong = standardwebhooks.Webhook("whsec_" + "QUFB" * 8)  # another secret of the same form
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        wrong.verify(body, got)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.verify_signature(body, got, secret="whsec_" + "QUFB" * 8)
    with pytest.raises(standardwebhooks.WebhookVerificationError):  # a body changed on the way
        standardwebhooks.Webhook(hook["secret"]).verify(body.replace(b"cancelled", b"succeeded"), got)

    [delivery] = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=headers).json()["data"]
    assert delivery["status_code"] == 200 and delivery["attempt"] == 1 and delivery["error"] is None
    assert delivery["event_id"] == message.event_id and delivery["object"] == "webhook.delivery"
    assert messages(hook["id"])[0].state == WebhookMessageState.delivered
    webhooks.tick()
    assert len(receiver.requests) == 1, "a delivered message is not sent again"


def test_every_way_a_job_ends_writes_its_event_in_the_same_transaction(client, allow_private, receiver):
    headers, hook = owner_with_webhook(client, receiver.url, ["fine_tuning.job.failed",
                                                              "fine_tuning.job.succeeded"])
    done, failed, lost, cancelled = (queued_job(headers) for _ in range(4))
    leases.finish(done, leases.claim(done), JobStatus.succeeded)  # the training child's success
    leases.finish(failed, leases.claim(failed), JobStatus.failed, {"code": "training_failed", "message": "x"})
    token = leases.claim(lost)
    with session_scope() as s:  # its worker vanished on the last attempt: the reconciler fails it
        s.execute(update(Job).where(Job.id == lost).values(lease_expires_at=time.time() - 1,
                                                           attempts=get_settings().max_attempts))
    reconcile.reconcile_once()
    assert token is not None
    assert client.post(f"/v1/jobs/{cancelled}/cancel", headers=headers).status_code == 200  # not subscribed
    with pytest.raises(leases.LostLease):  # a finish that loses its fence writes no event either
        leases.finish(done, 99, JobStatus.failed)
    sent = {(m.event_type, m.payload["data"]["id"]) for m in messages(hook["id"])}
    assert sent == {("fine_tuning.job.succeeded", done), ("fine_tuning.job.failed", failed),
                    ("fine_tuning.job.failed", lost)}


def test_a_failing_endpoint_gets_retries_with_the_same_id_and_fresh_timestamps(client, allow_private):
    receiver = Receiver(statuses=[500, 500])
    try:
        headers, hook = owner_with_webhook(client, receiver.url)
        job_id = queued_job(headers)
        client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
        deliver_until(receiver, 3)
        ids = {got["webhook-id"] for got, _ in receiver.requests}
        stamps = [int(got["webhook-timestamp"]) for got, _ in receiver.requests]
        assert len(ids) == 1 and stamps == sorted(stamps) and stamps[0] < stamps[-1], stamps
        for got, body in receiver.requests:  # each attempt signed at its own time
            standardwebhooks.Webhook(hook["secret"]).verify(body, got)
        rows = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=headers).json()["data"]
        assert [(d["attempt"], d["status_code"]) for d in reversed(rows)] == [(1, 500), (2, 500), (3, 200)]
        assert rows[-1]["error"].startswith("HTTP 500")
        [message] = messages(hook["id"])
        assert message.state == WebhookMessageState.delivered and message.attempts == 3
    finally:
        receiver.close()


def test_an_endpoint_that_keeps_failing_is_disabled_and_can_be_enabled_again(client, allow_private):
    receiver = Receiver(statuses=[500, 503, 500])  # the whole schedule: one attempt and two retries
    try:
        headers, hook = owner_with_webhook(client, receiver.url)
        client.post(f"/v1/jobs/{queued_job(headers)}/cancel", headers=headers)
        deliver_until(receiver, 3)
        webhooks.tick()
        [listed] = client.get("/v1/webhooks", headers=headers).json()["data"]
        assert listed["status"] == "disabled" and "3 failed attempts" in listed["disabled_reason"], listed
        assert messages(hook["id"])[0].state == WebhookMessageState.failed
        client.post(f"/v1/jobs/{queued_job(headers)}/cancel", headers=headers)
        assert len(messages(hook["id"])) == 1, "a disabled endpoint gets no new events"

        enabled = client.post(f"/v1/webhooks/{hook['id']}/enable", headers=headers).json()
        assert enabled["status"] == "active" and enabled["disabled_reason"] is None
        job_id = queued_job(headers)
        client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
        deliver_until(receiver, 4)
        assert json.loads(receiver.requests[-1][1])["data"]["id"] == job_id
        assert client.delete(f"/v1/webhooks/{hook['id']}", headers=headers).json() == {
            "id": hook["id"], "object": "webhook", "deleted": True}
        assert messages(hook["id"]) == []
    finally:
        receiver.close()


def test_private_addresses_are_refused_unless_allowed(client, service_env, receiver):
    key, _ = make_key("ssrf")
    headers = {"Authorization": f"Bearer {key}"}
    refused = [receiver.url, "http://localhost:9/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
               "http://[::1]:9/x", "http://[::ffff:127.0.0.1]/x", "http://100.64.0.1/x", "http://0.0.0.0/x",
               "ftp://93.184.215.14/x", "http://user:pw@93.184.215.14/x", "/relative", "http://no-such-host.invalid/"]
    with environment({"SPARSETUNE_WEBHOOK_ALLOW_PRIVATE": "false"}):
        for url in refused:
            r = client.post("/v1/webhooks", headers=headers, json={"url": url, "events": ALL_EVENTS})
            assert r.status_code == 422 and r.json()["error"]["param"] == "url", (url, r.text)
        assert client.post("/v1/webhooks", headers=headers,
                           json={"url": "https://93.184.215.14/hook", "events": ALL_EVENTS}).status_code == 201
    with environment({"SPARSETUNE_WEBHOOK_ALLOW_PRIVATE": "true"}):
        hook = client.post("/v1/webhooks", headers=headers, json={"url": receiver.url, "events": ALL_EVENTS}).json()
        r = client.post("/v1/webhooks", headers=headers, json={"url": "http://169.254.169.254/", "events": ALL_EVENTS})
        assert r.status_code == 422 and "metadata" in r.json()["error"]["message"]
    with pytest.raises(Invalid):
        webhook_urls.check("http://[fd00:ec2::254]/", allow_private=True)

    # allowed when created, refused when sent: checked again before every attempt, nothing goes out
    with environment({"SPARSETUNE_WEBHOOK_ALLOW_PRIVATE": "false", "SPARSETUNE_WEBHOOK_RETRY_SCHEDULE": "60"}):
        client.post(f"/v1/jobs/{queued_job(headers)}/cancel", headers=headers)
        webhooks.tick()
        [delivery] = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=headers).json()["data"]
        assert delivery["status_code"] is None and "loopback" in delivery["error"], delivery
        assert receiver.requests == []


def test_a_webhook_deleted_while_a_message_is_in_flight_takes_the_attempt_quietly(client, allow_private, receiver):
    headers, hook = owner_with_webhook(client, receiver.url)
    client.post(f"/v1/jobs/{queued_job(headers)}/cancel", headers=headers)
    claimed = webhooks.claim(limit=100)
    assert hook["id"] in {m.webhook_id for m in claimed}
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=headers).status_code == 200
    for m in claimed:  # the attempt comes back after the delete: nothing to record, no error
        webhooks.deliver(m) if m.webhook_id != hook["id"] else webhooks.record(m, webhooks.Attempt(200, None, 3))
    assert client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=headers).status_code == 404


@pytest.mark.timeout(180)
def test_a_worker_killed_mid_delivery_delivers_once_one_is_back(client, allow_private, tmp_path):
    receiver = Receiver(hold=True)
    env = {**allow_private, "SPARSETUNE_WEBHOOK_TIMEOUT_SECONDS": "0.5"}  # a claim holds 4 x 0.5 + 5 = 7 s
    proc = start_worker(env, tmp_path / "worker1.log")
    try:
        headers, hook = owner_with_webhook(client, receiver.url)
        client.post(f"/v1/jobs/{queued_job(headers)}/cancel", headers=headers)
        assert receiver.arrived.wait(30), (tmp_path / "worker1.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # while the receiver still holds the request
        proc.wait(10)
        receiver.release.set()
        assert client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=headers).json()["data"] == []
        proc = start_worker(env, tmp_path / "worker2.log")
        wait_for(lambda: len(receiver.requests) >= 2, timeout=60, what="the delivery after the restart")
        first, again = receiver.requests[0][0], receiver.requests[1][0]
        assert first["webhook-id"] == again["webhook-id"]
        standardwebhooks.Webhook(hook["secret"]).verify(receiver.requests[1][1], again)
        rows = wait_for(lambda: client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=headers).json()["data"],
                        timeout=20, what="the recorded delivery")
        assert [(d["attempt"], d["status_code"]) for d in rows] == [(1, 200)]
    finally:
        stop_process(proc, timeout=20)
        receiver.close()


def test_why_not_names_each_kind_of_forbidden_address():
    import ipaddress

    cases = {"127.0.0.1": "loopback", "10.0.0.1": "private", "192.168.1.1": "private", "169.254.1.1": "link-local",
             "224.0.0.1": "multicast", "0.0.0.0": "unspecified", "::1": "loopback", "fc00::1": "private",
             "fe80::1": "link-local", "::ffff:10.0.0.1": "private", "100.64.0.1": "not a public",
             "169.254.169.254": "metadata", "240.0.0.1": "reserved"}
    for text, kind in cases.items():
        reason = webhook_urls.why_not(ipaddress.ip_address(text), allow_private=False)
        assert reason and kind in reason, (text, reason)
    assert webhook_urls.why_not(ipaddress.ip_address("93.184.215.14"), allow_private=False) is None
    assert webhook_urls.why_not(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
