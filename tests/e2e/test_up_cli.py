"""The embedded default: `sparsetune up` as a subprocess (SQLite + filesystem broker under
SPARSETUNE_HOME, no servers), driven by the `sparsetune datasets|jobs …` client commands; the job, trained on
a made-up fact, says it through `up`'s inference process (tests/e2e/test_inference_e2e.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from cli.bootstrap import stop_process_group
from tests import factories
from tests.api.fixtures import ROOT
from tests.e2e.test_http import free_port
from tests.e2e.test_inference_e2e import check_serves_the_secret_word, secret_rows
from tests.helpers import read_up_banner, wait_for

BIN = str(Path(ROOT) / ".venv" / "bin" / "sparsetune")


def cli(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.timeout(420)
def check_openai_fine_tuning(client, job: dict, data: Path) -> None:
    """The job through OpenAI's fine-tuning routes on `up`, and a second job made from an uploaded file and
    cancelled through the pinned SDK: every object strictly valid under the SDK's own types."""
    from openai.types import FileObject, Model
    from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
    from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

    def strict(cls, obj):
        return cls.model_validate(obj.to_dict(), strict=True)

    ft = strict(FineTuningJob, client.fine_tuning.jobs.retrieve(job["id"]))
    assert ft.status == "succeeded" and ft.fine_tuned_model == job["fine_tuned_model"]
    assert ft.method.type == "supervised" and ft.organization_id
    events = client.fine_tuning.jobs.list_events(job["id"], limit=100).data
    assert events and all(strict(FineTuningJobEvent, e) for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job["id"]).data
    assert [strict(FineTuningJobCheckpoint, c).fine_tuned_model_checkpoint for c in checkpoints] == [
        job["fine_tuned_model"]]
    assert job["fine_tuned_model"] in [strict(Model, m).id for m in client.models.list().data]

    with data.open("rb") as fh:
        file = strict(FileObject, client.files.create(file=fh, purpose="fine-tune"))
    made = strict(FineTuningJob, client.fine_tuning.jobs.create(
        model=job["model"], training_file=file.id, suffix="sdk",
        method={"type": "smt", "smt": {"budget": 0.2, "hyperparameters": {"n_epochs": 1}}}))
    assert made.status in ("queued", "running") and made.training_file == file.id
    strict(FineTuningJob, client.fine_tuning.jobs.cancel(made.id))
    wait_for(lambda: client.fine_tuning.jobs.retrieve(made.id).status == "cancelled", 120, 0.5,
             "the SDK-made job to be cancelled")


def test_up_embedded_with_jobs_commands(tiny_llama_dir, tmp_path):
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "SPARSETUNE_QUEUE")}
    env.update({"SPARSETUNE_HOME": str(home), "SPARSETUNE_MODELS": json.dumps({"tiny": str(tiny_llama_dir)}),
                "SPARSETUNE_API_URL": f"http://127.0.0.1:{port}", "SPARSETUNE_CHECKPOINT_EVERY": "2",
                "HF_HUB_OFFLINE": "1"})
    env.pop("SPARSETUNE_API_KEY", None)
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([BIN, "up", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=log,
                          text=True, start_new_session=True, cwd=ROOT)
    try:
        key, lines = read_up_banner(up.stdout, timeout=90)
        assert key and key.startswith("st_"), lines
        assert lines == [f"SPARSETUNE_API_KEY={key}", f"ready on http://127.0.0.1:{port}"]  # nothing else
        assert (home / "sparsetune.db").is_file() and (home / "api_key").read_text().strip() == key
        env["SPARSETUNE_API_KEY"] = key

        data = factories.write_jsonl(tmp_path / "chat.jsonl", secret_rows(48))
        r = cli(env, "datasets", "upload", str(data), "--json")
        assert r.returncode == 0, r.stderr
        ds = json.loads(r.stdout)
        assert ds["rows"] == 48

        bad = factories.write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p"}])
        r = cli(env, "datasets", "upload", str(bad))
        assert r.returncode == 2 and "line 1" in r.stderr and "completion" in r.stderr

        r = cli(env, "jobs", "create", "--model", "tiny", "--training-dataset", ds["id"], "--method", "nope",
                "--budget", "4096")
        assert r.returncode == 2 and "unknown method" in r.stderr

        r = cli(env, "jobs", "create", "--model", "tiny", "--training-dataset", ds["id"], "--method", "smt",
                "--budget", "0.2", "--steps", "8", "--batch-size", "4", "--max-seq-len", "32",
                "--learning-rate", "0.03", "--method-option", "block_size=16", "--method-option", "selection_steps=2")
        assert r.returncode == 0, r.stderr
        job_id = r.stdout.strip()
        assert job_id.startswith("job_")

        r = cli(env, "jobs", "watch", job_id)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "step 8/8" in r.stdout and "succeeded" in r.stdout

        job = json.loads(cli(env, "jobs", "show", job_id, "--json").stdout)
        assert job["status"] == "succeeded" and job["steps_completed"] == 8
        client = check_serves_the_secret_word(env["SPARSETUNE_API_URL"], key, job)  # up's inference process
        listed = json.loads(cli(env, "--json", "jobs", "list").stdout)
        assert [j["id"] for j in listed["data"]] == [job_id]
        check_openai_fine_tuning(client, job, data)

        out = tmp_path / "adapter.safetensors"
        r = cli(env, "jobs", "download", job_id, "adapter.safetensors", "--out", str(out), "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()

        r = cli(env, "jobs", "cancel", job_id)
        assert r.returncode == 2 and "already succeeded" in r.stderr
        r = cli(env, "jobs", "show", "job_missing")
        assert r.returncode == 2 and "no job" in r.stderr

        # `keys create` prints only the new key; a new key is a new owner who sees none of these rows
        r = cli(env, "keys", "create", "--name", "bob")
        assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stdout.startswith("st_")
        bob = {**env, "SPARSETUNE_API_KEY": r.stdout.strip()}
        assert json.loads(cli(bob, "jobs", "list", "--json").stdout)["data"] == []
        r = cli(bob, "jobs", "show", job_id)
        assert r.returncode == 2 and "no job" in r.stderr
        r = cli({**env, "SPARSETUNE_API_KEY": "st_bad_key"}, "jobs", "list")
        assert r.returncode == 2 and "invalid or revoked API key" in r.stderr
    finally:
        stop_process_group(up, grace=90)
        log.close()
    assert up.returncode == 0
    # a second start on the same home migrates (a no-op) and creates no key
    up = subprocess.Popen([BIN, "up", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, start_new_session=True, cwd=ROOT)
    try:
        first = up.stdout.readline()
        assert first.startswith("ready on http://"), first
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        assert up.wait(90) == 0
