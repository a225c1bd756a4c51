"""The web dashboard in headless Chromium (Debian's, driven by Playwright through its executable path) against
a real `sparsetune up` on a tiny LLaMA: sign in, upload, launch SMT from the form, watch it succeed over the
live stream, check the heatmap against /blocks, download the adapter, compare jobs. Screenshots of every view
go to test-artifacts/screenshots/ for a person to look at."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cli.bootstrap import stop_process_group
from tests import factories
from tests.helpers import free_port, read_up_banner

ROOT = Path(__file__).resolve().parents[2]
BIN = str(ROOT / ".venv" / "bin" / "sparsetune")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
TERMINAL = ("succeeded", "failed", "cancelled")

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # scripts/setup_test_deps.sh installs it
    sync_playwright = None

if sync_playwright is None or not os.access(CHROMIUM, os.X_OK):
    why = "Playwright or Debian's chromium is missing: run scripts/setup_test_deps.sh"
    if os.environ.get("CI"):
        raise RuntimeError(why)
    pytest.skip(why, allow_module_level=True)


class Service:
    """A running `sparsetune up` and a REST client with its first key."""

    def __init__(self, url: str, key: str, env: dict[str, str]):
        self.url, self.key, self.env = url, key, env
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def cli(self, *args: str) -> dict:
        """`sparsetune … --json` on the service's home (key administration talks to its database)."""
        r = subprocess.run([BIN, *args, "--json"], env=self.env, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def get(self, path: str) -> dict:
        r = self.http.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    def upload(self, path: Path) -> dict:
        r = self.http.post("/v1/datasets", files={"file": (path.name, path.read_bytes())})
        assert r.status_code == 201, r.text
        return r.json()

    def create_job(self, **body) -> dict:
        r = self.http.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def wait(self, job_id: str, timeout: float = 240) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.get(f"/v1/jobs/{job_id}")
            if job["status"] in TERMINAL:
                return job
            time.sleep(1)
        raise AssertionError(f"{job_id} did not finish in {timeout}s: {job}")


@pytest.fixture(scope="module")
def service(tiny_llama_dir, tmp_path_factory):
    subprocess.run([str(ROOT / "scripts" / "build_frontend.sh")], check=True, cwd=ROOT, timeout=600)
    assert (ROOT / "frontend" / "dist" / "index.html").is_file()
    tmp = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "SPARSETUNE_QUEUE", "SPARSETUNE_API_KEY")}
    env.update({"SPARSETUNE_HOME": str(tmp / "home"), "SPARSETUNE_MODELS": json.dumps({"tiny": str(tiny_llama_dir)}),
                "HF_HUB_OFFLINE": "1"})
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


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, service):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    elsewhere: list[str] = []  # every asset is bundled: the page asks nothing of any other origin
    refused: list[str] = []  # what the Content-Security-Policy blocked (Chromium says so on the console)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: None if r.url.startswith((service.url, "data:", "blob:")) else elsewhere.append(r.url))
    pg.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    pg.goto(service.url + "/")
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not elsewhere, f"requests to other origins: {elsewhere}"
    assert not refused, f"blocked by the Content-Security-Policy: {refused}"


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot, test-artifacts/screenshots/NAME.png (names are unique across the tests)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()  # the one /v1/events stream


def wait_status(page: Page, status: str, timeout_s: float = 240) -> None:
    expect(page.locator("section[data-job-id]")).to_have_attribute("data-status", status, timeout=timeout_s * 1000)


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_wrong_key_is_refused_in_words_a_new_owner_sees_what_to_do_and_a_revoked_key_signs_out(page, service):
    page.get_by_label("API key").fill("st_not_a_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    shot(page, "sign-in-wrong-key")

    fresh = service.cli("keys", "create", "--name", "browser")  # a new owner: nothing to list yet
    page.get_by_label("API key").fill("")  # keyboard only: the field has focus, Enter submits
    page.get_by_label("API key").focus()
    page.keyboard.type(fresh["key"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('sparsetune.apiKey')") == fresh["key"]
    expect(page.get_by_text("No jobs yet")).to_be_visible()  # an empty state that says what to do next
    page.get_by_role("main").get_by_role("link", name="New job").last.click()
    expect(page.get_by_label("Training dataset")).to_contain_text("No datasets yet: upload one above")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Compare").click()
    expect(page.get_by_text("No jobs to compare yet")).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    shot(page, "jobs-empty")

    service.cli("keys", "revoke", fresh["id"])  # a key revoked mid-session signs the page out, in words
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New job").click()
    expect(page.get_by_role("status").filter(has_text="no longer accepts this API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('sparsetune.apiKey')") is None
    page.get_by_label("API key").fill(service.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="New job")).to_be_visible()  # back where the user was

    page.reload()  # the key lasts for the browser session
    expect(page.get_by_role("heading", name="New job")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('sparsetune.apiKey')") is None


@pytest.mark.timeout(300)
def test_the_one_live_stream_sends_the_key_and_reconnects_with_last_event_id_after_a_drop(page, service):
    seen: list[dict] = []

    def drop_the_first(route):
        seen.append(route.request.headers)
        if len(seen) == 1:  # a stream that delivers one event and then ends, as a dropped connection does
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                          body='id: 1\r\nevent: log\r\ndata: {"id": "1", "job_id": "job_x", "type": "log", '
                               '"data": {"message": "hello"}, "created_at": 0}\r\n\r\n')
        else:
            route.continue_()

    page.route("**/v1/events", drop_the_first)
    sign_in(page, service.key)
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    page.wait_for_timeout(300)
    deadline = time.time() + 20
    while len(seen) < 2 and time.time() < deadline:
        page.wait_for_timeout(200)
    assert len(seen) == 2, seen  # one connection, replaced once after the drop, never two at a time
    assert all(h["authorization"] == f"Bearer {service.key}" for h in seen)
    assert "last-event-id" not in seen[0] and seen[1]["last-event-id"] == "1"
    for view in ("New job", "Compare", "Jobs"):  # moving between views opens no new connection
        page.get_by_role("navigation", name="Main").get_by_role("link", name=view, exact=True).click()
    page.wait_for_timeout(500)
    assert len(seen) == 2


@pytest.mark.timeout(300)
def test_a_dataset_with_bad_lines_shows_the_problem_on_each_line(page, service, tmp_path):
    rows = factories.classification_rows(6)
    text = "".join(json.dumps(r) + "\n" for r in rows).splitlines()
    text[1] = json.dumps({"text": "no label here"})
    text[3] = "{not json"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(text) + "\n")

    sign_in(page, service.key)
    page.get_by_role("link", name="New job").first.click()
    page.get_by_label("Upload a JSONL dataset").set_input_files(str(bad))
    problems = page.get_by_role("list", name="Problems by line")
    expect(problems).to_contain_text("Line 2")
    expect(problems).to_contain_text("Line 4")
    expect(page.get_by_role("alert").first).to_contain_text("line 2")
    shot(page, "new-job-upload-errors")


@pytest.mark.timeout(300)
def test_an_smt_job_launched_from_the_form_succeeds_live_and_its_heatmap_shows_exactly_the_chosen_blocks(
        page, service, tmp_path):
    data = factories.write_jsonl(tmp_path / "reviews.jsonl", factories.classification_rows(64))
    sign_in(page, service.key)
    page.get_by_role("link", name="New job").first.click()
    expect(page.get_by_role("heading", name="New job")).to_be_visible()
    page.get_by_label("Base model").select_option("tiny")
    page.get_by_label("Upload a JSONL dataset").set_input_files(str(data))
    expect(page.get_by_role("status").filter(has_text="Uploaded reviews.jsonl")).to_contain_text("64 rows")
    expect(page.get_by_label("Training dataset")).to_contain_text("reviews.jsonl")

    page.get_by_role("radio", name="SMT", exact=True).check()
    page.get_by_label("Budget", exact=True).fill("1536")
    page.get_by_label("Steps (instead of epochs)").fill("36")  # long enough to be seen moving
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Max sequence length").fill("32")
    page.get_by_label("Block size").fill("16")
    page.get_by_label("Selection steps").fill("2")
    page.get_by_label("Name suffix").fill("from-the-form")
    expect(page.get_by_label("Devices (data parallel)")).to_have_value("1")
    page.get_by_label("Gradient checkpointing").check()

    # before launch: every method's trainable parameters and memory, as the estimate endpoint says
    table = page.get_by_role("table", name=re.compile("Estimated trainable parameters"))
    for method in ("smt", "snell", "lora", "dora", "full"):
        # the chosen method's row is estimated with the options set in the form, the others with defaults
        own = '&method_options={"block_size": 16, "selection_steps": 2}' if method == "smt" else ""
        est = service.get(f"/v1/models/tiny/estimate?method={method}&budget=1536&batch_size=4&max_seq_len=32"
                          f"&targets=q,k,v{own}")
        expect(table.locator(f"tr[data-method={method}] [data-trainable]")).to_have_attribute(
            "data-trainable", str(est["trainable_params"]))
    smt_estimate = table.locator("tr[data-method=smt] [data-trainable]").get_attribute("data-trainable")
    shot(page, "new-job")

    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/jobs")) as sent:
        page.get_by_role("button", name="Launch job").click()
    posted = sent.value.post_data_json["hyperparameters"]
    assert posted["num_devices"] == 1 and posted["gradient_checkpointing"] is True  # the form sends both fields
    expect(page.get_by_role("heading", name=re.compile(r"^Job job_"))).to_be_visible()
    job_id = page.locator("section[data-job-id]").get_attribute("data-job-id")
    job = service.get(f"/v1/jobs/{job_id}")
    assert (job["method"], job["model"], job["budget"], job["suffix"]) == ("smt", "tiny", 1536, "from-the-form")
    assert job["hyperparameters"]["steps"] == 36 and job["method_options"] == {"block_size": 16, "selection_steps": 2}
    assert job["hyperparameters"]["gradient_checkpointing"] is True and job["hyperparameters"]["num_devices"] == 1

    # progress arrives over the live stream (no reload): record every value the bar shows on its way to 36/36
    progress = page.get_by_role("progressbar", name=f"Progress of {job_id}")
    progress.evaluate("""bar => { window.seen = []; new MutationObserver(() => window.seen.push(
        bar.getAttribute('aria-valuetext'))).observe(bar, {attributes: true}); }""")
    expect(page.locator("section[data-job-id]")).to_have_attribute("data-status", "running", timeout=120_000)
    shot(page, "job-detail-running")
    wait_status(page, "succeeded")
    assert service.get(f"/v1/jobs/{job_id}")["trainable_params"] == int(smt_estimate), \
        "the estimate shown before launch is the count the run got"
    expect(progress).to_have_attribute("aria-valuetext", re.compile(r"^36/36 steps"))
    seen = page.evaluate("window.seen")
    assert any(re.match(r"^([1-9]|[12]\d|3[0-5])/36 steps", v or "") for v in seen), seen  # live, not just the end
    expect(page.get_by_role("list", name="Events, newest first")).to_contain_text("finished: succeeded")
    points = len([m for m in service.get(f"/v1/jobs/{job_id}/metrics")["data"] if m["train_loss"] is not None])
    assert points == 36
    expect(page.get_by_role("img", name=re.compile(r"^Loss: train loss, 36 points; eval loss"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile(r"^Learning rate: learning rate, 36 points"))).to_be_visible()

    # the heatmap draws exactly the blocks the API lists, with their scores
    blocks = service.get(f"/v1/jobs/{job_id}/blocks")
    scores = {(m["name"], m["target"], b["row"], b["col"]): b["score"] for m in blocks["modules"] for b in m["blocks"]}
    assert len(scores) == 1536 // (16 * 16)
    heatmap = page.locator(".heatmap")
    expect(heatmap).to_have_attribute("data-blocks-count", str(len(scores)))
    drawn = heatmap.locator("rect.block").evaluate_all(
        "els => els.map(e => [e.dataset.module, e.dataset.target, +e.dataset.row, +e.dataset.col, +e.dataset.score])")
    assert {tuple(d[:4]) for d in drawn} == set(scores) and len(drawn) == len(scores)
    assert all(d[4] == pytest.approx(scores[tuple(d[:4])]) for d in drawn)
    # every matrix at its true shape: 2 layers × q, k, v, drawn with width/height in the ratio cols/rows
    mats = heatmap.locator("svg.matrix").evaluate_all(
        "els => els.map(e => [e.dataset.module, +e.dataset.rows, +e.dataset.cols, e.getBoundingClientRect().width,"
        " e.getBoundingClientRect().height])")
    assert len(mats) == len(blocks["modules"]) == 6
    for _, rows, cols, w, h in mats:
        assert w / h == pytest.approx(cols / rows, rel=0.02)
    expect(page.get_by_role("table", name="Training memory by component")).to_contain_text("Full fine-tuning")
    # what SMT chose, as numbers (metrics.selection): the summary's shares are the API's, by target and by layer
    sel = service.get(f"/v1/jobs/{job_id}")["metrics"]["selection"]
    assert sum(t["params"] for t in sel["by_target"].values()) == 1536
    assert sum(t["share"] for t in sel["by_target"].values()) == pytest.approx(1.0)
    by_target = page.get_by_role("table", name="Chosen parameters by target")
    shown = by_target.locator("tr[data-target]").evaluate_all(
        "els => els.map(e => [e.dataset.target, +e.dataset.share, +e.dataset.params, e.innerText])")
    assert {d[0]: (pytest.approx(d[1]), d[2]) for d in shown} == {
        t: (s["share"], s["params"]) for t, s in sel["by_target"].items()}
    assert all(f"{sel['by_target'][d[0]]['share'] * 100:.1f}%" in d[3] for d in shown)
    expect(page.get_by_role("table", name="Chosen parameters by layer").locator("tr[data-layer]")).to_have_count(
        len(sel["by_layer"]))

    # download the adapter: the bytes are the ones the API lists
    arts = {a["name"]: a for a in service.get(f"/v1/jobs/{job_id}/artifacts")["data"]}
    # headless Chromium's save dialog aborts at once: the path of browsers without showSaveFilePicker, a Blob
    page.evaluate("window.showSaveFilePicker = undefined")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download adapter.safetensors").click()
    path = tmp_path / "adapter.safetensors"
    dl.value.save_as(path)
    assert dl.value.suggested_filename == "adapter.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == arts["adapter.safetensors"]["sha256"]
    expect(page.get_by_role("status").filter(has_text="Downloaded adapter.safetensors")).to_contain_text("sha256 checked")
    shot(page, "job-detail")
    page.get_by_role("button", name="Build merged model").click()
    expect(page.get_by_role("row").filter(has_text="merged.tar")).to_be_visible(timeout=180_000)
    assert "merged.tar" in {a["name"] for a in service.get(f"/v1/jobs/{job_id}/artifacts")["data"]}
    page.locator(".heatmap").screenshot(path=str(SHOTS / "job-detail-heatmap.png"))

    page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.get_by_role("row").filter(has_text=job_id)
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("1,536")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    page.get_by_label("Status").select_option("failed")
    expect(page.get_by_text("No failed jobs")).to_be_visible()
    page.get_by_label("Status").select_option("succeeded")
    expect(page.get_by_role("row").filter(has_text=job_id)).to_be_visible()
    shot(page, "jobs")


@pytest.mark.timeout(300)
def test_two_jobs_are_compared_in_one_table_with_overlaid_losses_and_accuracy_against_parameters(
        page, service, tmp_path):
    ds = service.upload(factories.write_jsonl(tmp_path / "cmp.jsonl", factories.classification_rows(48, seed=1)))
    common = {"model": "tiny", "training_dataset": ds["id"],
              "hyperparameters": {"steps": 8, "batch_size": 4, "max_seq_len": 32}}
    smt = service.create_job(method="smt", budget=1024, method_options={"block_size": 16, "selection_steps": 2},
                             **common)
    lora = service.create_job(method="lora", budget=1024, **common)
    jobs = [service.wait(smt["id"]), service.wait(lora["id"])]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], [j["error"] for j in jobs]

    sign_in(page, service.key)
    page.get_by_role("link", name="Compare").click()
    expect(page.get_by_text("Pick two or more jobs")).to_be_visible()
    every = service.get("/v1/jobs?limit=100")["data"]
    expect(page.get_by_role("group", name="Jobs to compare").get_by_role("checkbox")).to_have_count(len(every))
    for j in jobs:
        page.get_by_role("checkbox", name=re.compile(j["id"])).check()
    table = page.get_by_role("table", name="Compared jobs")
    for j in jobs:
        row = table.get_by_role("row").filter(has_text=j["id"])
        expect(row).to_contain_text(j["method"])
        expect(row).to_contain_text(f"{j['trainable_params']:,}")
        expect(row).to_contain_text(f"{j['metrics']['eval_accuracy'] * 100:.1f}%")
    losses = page.get_by_role("img", name=re.compile("^Loss curves"))
    expect(losses.locator("path")).to_have_count(2)  # one train-loss line a job (eval is one point each)
    expect(page.get_by_role("img", name=re.compile("^Eval accuracy vs trainable parameters")).locator("circle")
           ).to_have_count(2)
    assert f"ids={jobs[0]['id']},{jobs[1]['id']}" in page.url  # a comparison is a link one can share
    # the selecting job's share per target (metrics.selection); the LoRA job has none and no row
    shares = page.get_by_role("table", name="Share of the chosen parameters by target")
    for target, s in jobs[0]["metrics"]["selection"]["by_target"].items():
        expect(shares.locator(f"tr[data-job-id={smt['id']}] td[data-target={target}]")).to_have_text(
            f"{s['share'] * 100:.1f}%")
    expect(shares.locator(f"tr[data-job-id={lora['id']}]")).to_have_count(0)
    shot(page, "compare")


@pytest.mark.timeout(300)
def test_the_jobs_list_pages_and_filters_and_a_running_job_is_cancelled_from_its_page(page, service, tmp_path):
    ds = service.upload(factories.write_jsonl(tmp_path / "many.jsonl", factories.classification_rows(16)))
    body = {"model": "tiny", "training_dataset": ds["id"], "method": "lora", "budget": 1024,
            "hyperparameters": {"steps": 100000, "batch_size": 2, "max_seq_len": 16}}
    long = service.create_job(**body, suffix="long-run")  # first in the queue: the idle worker starts it
    batch = []
    for i in range(21):  # cancelled while queued: they never start
        batch.append(service.create_job(**body, suffix=f"batch-{i}"))
        assert service.http.post(f"/v1/jobs/{batch[-1]['id']}/cancel").status_code == 200

    sign_in(page, service.key)
    first = page.get_by_role("table").get_by_role("row").nth(1)
    expect(first).to_contain_text(batch[-1]["id"])  # newest first
    usage = page.get_by_test_id("usage")  # GET /v1/usage: the long run is this owner's one active job
    expect(usage.locator("[data-usage=active]")).to_have_text("1")
    expect(usage).to_contain_text("/ 20")
    expect(usage).to_contain_text("Storage")
    assert service.get("/v1/usage")["queued_jobs"] + service.get("/v1/usage")["running_jobs"] == 1
    expect(page.get_by_role("row").filter(has_text=long["id"])).to_have_count(0)
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()  # 22+ jobs: two pages of 20
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text("Page 2")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text=batch[-1]["id"])).to_have_count(0)
    expect(page.get_by_role("row").filter(has_text=long["id"])).to_be_visible()
    shot(page, "jobs-page-2")
    page.get_by_role("button", name="Previous page").click()
    expect(page.get_by_role("row").filter(has_text=batch[-1]["id"])).to_be_visible()
    page.get_by_label("Status").select_option("cancelled")
    expect(page.get_by_role("row").filter(has_text="batch-20")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text=long["id"])).to_have_count(0)

    page.goto(f"{service.url}/#/jobs/{long['id']}")
    expect(page.locator("section[data-job-id]")).to_have_attribute("data-status", "running", timeout=120_000)
    # the Workers page: `up`'s one trainer, in the default pool, busy with this job (from its heartbeat); its
    # inference process is listed beside it
    page.get_by_role("link", name="Workers").click()
    row = page.locator("tr[data-worker-id][data-kind=trainer]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "busy", timeout=30_000)
    expect(row.get_by_role("link", name=long["id"])).to_be_visible()
    expect(row).to_contain_text("default")
    expect(page.locator("tr[data-worker-id][data-kind=inference]")).to_have_count(1)
    listed = next(w for w in service.get("/v1/workers")["data"] if w["kind"] == "trainer")
    assert listed["current_job"] == long["id"] and listed["status"] == "busy"
    shot(page, "workers")
    row.get_by_role("link", name=long["id"]).click()
    expect(page.locator("section[data-job-id]")).to_have_attribute("data-status", "running")
    page.get_by_role("button", name="Cancel job").click()
    wait_status(page, "cancelled", 120)
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.get_by_role("list", name="Events, newest first")).to_contain_text("finished: cancelled")
    assert service.get(f"/v1/jobs/{long['id']}")["status"] == "cancelled"
    shot(page, "job-detail-cancelled")

    page.get_by_role("button", name="Delete job", exact=True).click()  # asks once more before deleting
    page.get_by_role("button", name="Delete job and its artifacts").click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.get_by_role("row").filter(has_text=long["id"])).to_have_count(0)
    assert service.http.get(f"/v1/jobs/{long['id']}").status_code == 404


@pytest.mark.timeout(300)
def test_the_dashboard_and_the_api_docs_run_under_a_strict_content_security_policy(page, service):
    """Every response carries the policy; the page fixture fails the test on any blocked script, style or
    request, and on any request to another origin (the docs' Swagger UI included)."""
    def policy(response) -> str:
        headers = response.all_headers()
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        return headers["content-security-policy"]

    home = page.goto(service.url + "/")
    csp = policy(home)
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    sign_in(page, service.key)
    for view, heading in (("New job", "New job"), ("Workers", "Workers"), ("Compare", "Compare jobs")):
        page.get_by_role("link", name=view).first.click()
        expect(page.get_by_role("heading", name=heading).first).to_be_visible()
    docs = page.goto(service.url + "/docs")
    assert "unsafe" not in policy(docs)
    expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)  # Swagger UI ran, from this server
    expect(page.locator(".opblock-summary-path", has_text="/v1/jobs/{job_id}/artifacts/{name}").first).to_be_visible()
    shot(page, "api-docs")


STUB_PICKER = """() => {
  window.saved = {writes: 0, bytes: [], closed: false, aborted: false};
  window.showSaveFilePicker = async () => ({createWritable: async () => ({
    write: async (chunk) => { saved.writes += 1; for (const b of chunk) saved.bytes.push(b); },
    close: async () => { saved.closed = true; }, abort: async () => { saved.aborted = true; }})});
  window.wholeReads = 0;  // a download read whole into memory: blob(), arrayBuffer() or text() on its response
  for (const m of ["blob", "arrayBuffer", "text"]) {
    const read = Response.prototype[m];
    Response.prototype[m] = function () { if (this.url.includes("/artifacts/")) wholeReads += 1; return read.call(this); };
  }
}"""


@pytest.mark.timeout(300)
def test_an_artifact_is_hashed_as_it_streams_to_disk_and_a_corrupt_download_is_never_kept(page, service, tmp_path):
    ds = service.upload(factories.write_jsonl(tmp_path / "dl.jsonl", factories.classification_rows(16, seed=3)))
    job = service.create_job(model="tiny", training_dataset=ds["id"], method="lora", budget=1024,
                             hyperparameters={"steps": 2, "batch_size": 4, "max_seq_len": 32})
    assert service.wait(job["id"])["status"] == "succeeded"
    art = {a["name"]: a for a in service.get(f"/v1/jobs/{job['id']}/artifacts")["data"]}["adapter.safetensors"]
    sign_in(page, service.key)
    page.goto(f"{service.url}/#/jobs/{job['id']}")
    button = page.get_by_role("button", name="Download adapter.safetensors")
    expect(button).to_be_visible()

    # where the browser can save as bytes arrive, it writes chunk by chunk and never holds the file whole
    page.evaluate(STUB_PICKER)
    button.click()
    expect(page.get_by_role("status").filter(has_text="Downloaded adapter.safetensors")).to_contain_text("sha256 checked")
    saved = page.evaluate("saved")
    assert saved["writes"] >= 1 and saved["closed"] and not saved["aborted"]
    assert hashlib.sha256(bytes(saved["bytes"])).hexdigest() == art["sha256"] and len(saved["bytes"]) == art["bytes"]
    assert page.evaluate("wholeReads") == 0, "the download was read whole into memory"

    # bytes that do not match the sha256 are thrown away, on disk (the writable aborted) or as a Blob (no download)
    served: list[int] = []

    def corrupt(route):
        served.append(1)
        real = route.fetch()
        body = bytearray(real.body())
        body[-1] ^= 0xFF
        route.fulfill(response=real, body=bytes(body))

    page.route("**/artifacts/adapter.safetensors", corrupt)
    page.evaluate(STUB_PICKER)
    button.click()
    expect(page.get_by_role("alert")).to_contain_text("is not the expected")
    saved = page.evaluate("saved")
    assert saved["aborted"] and not saved["closed"]
    page.evaluate("window.showSaveFilePicker = undefined")
    downloads: list = []
    page.on("download", lambda d: downloads.append(d))
    button.click()
    while len(served) < 2:
        page.wait_for_timeout(100)
    expect(page.get_by_role("alert")).to_contain_text("nothing was saved")
    page.wait_for_timeout(500)
    assert downloads == []


def test_the_new_job_form_offers_exactly_the_methods_and_options_the_api_lists(page, service):
    """The form is built from GET /v1/methods: one radio per method, one field per option (a choice for
    enums and booleans, the listed default or "the method's default"), the budget off where it is unused."""
    listed = service.get("/v1/methods")["data"]
    sign_in(page, service.key)
    page.get_by_role("link", name="New job").first.click()
    expect(page.get_by_role("radiogroup", name="Method").get_by_role("radio")).to_have_count(len(listed))
    for m in listed:
        page.locator(f"#method-{m['id']}").check()
        fields = page.locator(f"[id^='opt-{m['id']}-']:is(input, select)")
        expect(fields).to_have_count(len(m["options"]))
        assert fields.evaluate_all("els => els.map(e => e.id)") == [f"opt-{m['id']}-{o['name']}" for o in m["options"]]
        for o in m["options"]:
            field = page.locator(f"#opt-{m['id']}-{o['name']}")
            default = _as_js_text(o["default"])
            if o["enum"] is not None or o["type"] == "boolean":
                shown = field.locator("option").all_inner_texts()
                assert shown == [f"default ({default})", *(map(str, o["enum"] or ["true", "false"]))], shown
            else:
                expect(field).to_have_attribute("placeholder", default)
            expect(page.locator(f"#opt-{m['id']}-{o['name']}-help")).to_have_text(o["help"])
        budget = page.get_by_label("Budget", exact=True)
        expect(budget).to_be_enabled() if m["uses_budget"] else expect(budget).to_be_disabled()


def _as_js_text(value) -> str:
    """A listed default as the page writes it (JavaScript's String(): 0.0 is "0", False is "false")."""
    if value is None:
        return "the method's default"
    if isinstance(value, bool):
        return str(value).lower()
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
