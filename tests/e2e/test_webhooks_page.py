"""The Webhooks page in headless Chromium against a real `sparsetune up` (its embedded default lets webhooks reach
127.0.0.1; the metadata address stays refused): add an endpoint with the event checkboxes, see its secret once,
get a real signed delivery when a job is cancelled and see it in the deliveries table; an endpoint that keeps
failing shows as disabled with its reason and is enabled again; a webhook is deleted."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import standardwebhooks

from cli.bootstrap import stop_process_group
from tests import factories
from tests.e2e.test_dashboard import BIN, ROOT, Service, browser, page, shot, sign_in  # noqa: F401 - fixtures
from tests.helpers import free_port, read_up_banner, wait_for
from tests.webhook_receiver import Receiver

try:
    from playwright.sync_api import Page, expect
except ImportError:  # test_dashboard skipped the module already
    pass


@pytest.fixture(scope="module")
def service(tiny_llama_dir, tmp_path_factory):
    """`sparsetune up` as test_dashboard starts it, with a short retry schedule (one retry after 0.5 s)."""
    subprocess.run([str(ROOT / "scripts" / "build_frontend.sh")], check=True, cwd=ROOT, timeout=600)
    tmp = tmp_path_factory.mktemp("webhooks-page")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "SPARSETUNE_QUEUE", "SPARSETUNE_API_KEY")
           and not k.startswith("SPARSETUNE_WEBHOOK_")}
    env.update({"SPARSETUNE_HOME": str(tmp / "home"), "SPARSETUNE_MODELS": json.dumps({"tiny": str(tiny_llama_dir)}),
                "HF_HUB_OFFLINE": "1", "SPARSETUNE_WEBHOOK_RETRY_SCHEDULE": "0.5",
                "SPARSETUNE_WEBHOOK_POLL_SECONDS": "0.5", "SPARSETUNE_UP_INFERENCE": "false"})
    log = open(tmp / "up.log", "w")
    up = subprocess.Popen([BIN, "up", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                          start_new_session=True, cwd=ROOT)
    try:
        key, lines = read_up_banner(up.stdout)
        assert key and lines[-1].startswith("ready on"), (lines, (tmp / "up.log").read_text()[-3000:])
        svc = Service(f"http://127.0.0.1:{port}", key, env)
        yield svc
        svc.http.close()
    finally:
        stop_process_group(up, grace=60)
        log.close()


def add_webhook(pg: Page, url: str) -> str:
    """Fill the form (the default events: a job succeeded, failed or was cancelled) and return the secret shown."""
    pg.get_by_label("Endpoint URL").fill(url)
    pg.get_by_role("button", name="Add webhook").click()
    secret = pg.get_by_label("Signing secret")
    expect(secret).to_have_value(re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$"))  # base64 of 32 bytes
    value = secret.input_value()
    pg.get_by_role("button", name="I have copied it").click()
    expect(pg.get_by_label("Signing secret")).to_have_count(0)  # shown once
    return value


def cancelled_job(service: Service, tmp_path) -> str:
    ds = service.upload(factories.write_jsonl(tmp_path / "hook.jsonl", factories.classification_rows(16)))
    job = service.create_job(model="tiny", training_dataset=ds["id"], method="smt", budget=0.05,
                             hyperparameters={"steps": 500})
    r = service.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200, r.text
    service.wait(job["id"], timeout=120)
    return job["id"]


@pytest.mark.timeout(400)
def test_webhooks_are_added_deliver_signed_events_show_their_deliveries_are_disabled_enabled_and_deleted(
        page, service, tmp_path):  # noqa: F811 - page: the fixture imported above
    good, bad = Receiver(), Receiver(statuses=[500] * 20)
    try:
        sign_in(page, service.key)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
        expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
        expect(page.get_by_text("No webhooks yet")).to_be_visible()

        page.get_by_label("Endpoint URL").fill("http://169.254.169.254/latest/meta-data")
        page.get_by_role("button", name="Add webhook").click()
        expect(page.get_by_role("alert")).to_contain_text("cloud metadata address")

        page.get_by_label("Endpoint URL").fill("")
        good_secret = add_webhook(page, good.url)
        checkbox = page.get_by_role("checkbox", name="sparsetune.job.merged")
        expect(checkbox).not_to_be_checked()
        add_webhook(page, bad.url)
        rows = page.locator("tr[data-webhook-id]")
        expect(rows).to_have_count(2)
        expect(rows.filter(has_text=good.url)).to_have_attribute("data-status", "active")
        shot(page, "webhooks-list")

        job_id = cancelled_job(service, tmp_path)
        wait_for(lambda: good.requests, timeout=60, what="the signed delivery")
        got, body = good.requests[0]
        event = standardwebhooks.Webhook(good_secret).verify(body, got)
        assert event["type"] == "fine_tuning.job.cancelled" and event["data"] == {"id": job_id}

        good_row = rows.filter(has_text=good.url)
        good_row.get_by_role("button", name="Deliveries").click()
        deliveries = page.get_by_role("region", name=f"Deliveries of {good_row.get_attribute('data-webhook-id')}")
        expect(deliveries.locator("tr[data-delivery-id]").first).to_have_attribute("data-status-code", "200",
                                                                                   timeout=20_000)
        expect(deliveries).to_contain_text(event["id"])
        shot(page, "webhooks-deliveries")

        wait_for(lambda: len(bad.requests) >= 2, timeout=60, what="the failing endpoint's two attempts")
        bad_row = rows.filter(has_text=bad.url)
        wait_for(lambda: (page.reload(), bad_row.get_attribute("data-status", timeout=10_000))[1] == "disabled",
                 timeout=30, interval=1, what="the failing endpoint disabled")
        expect(bad_row).to_contain_text("2 failed attempts")
        shot(page, "webhooks-disabled")
        bad_row.get_by_role("button", name="Enable").click()
        expect(bad_row).to_have_attribute("data-status", "active")

        bad_row.get_by_role("button", name="Delete").click()
        bad_row.get_by_role("button", name="Delete webhook and its log").click()
        expect(rows).to_have_count(1)
        assert [h["url"] for h in service.get("/v1/webhooks")["data"]] == [good.url]
    finally:
        good.close()
        bad.close()
