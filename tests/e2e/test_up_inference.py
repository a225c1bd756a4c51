"""`sparsetune up` starts an inference process beside the API and the worker and supervises it: SIGKILL it and
`up` reaps it, logs it, marks its row lost at once (the API stops routing there) and starts a new one on a
fresh free port, which answers with the token `up` made under home. Embedded default, real processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from cli.bootstrap import stop_process_group
from service.workdirs import alive
from tests.api.fixtures import wait_for
from tests.e2e.test_http import free_port
from tests.e2e.test_up_supervisor import live_workers, start_up


def _inference(http: httpx.Client, auth: dict) -> dict[int, dict]:
    return live_workers(http, auth, kind="inference")


def _row_status(home: Path, pid: int) -> str:
    engine = sa.create_engine(f"sqlite:///{home / 'sparsetune.db'}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT status FROM workers WHERE kind = 'inference' AND pid = :pid"),
                                {"pid": pid}).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_up_restarts_a_killed_inference_process(tiny_llama_dir, tmp_path):
    port, home = free_port(), tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "SPARSETUNE_QUEUE",
                                                            "SPARSETUNE_API_KEY", "SPARSETUNE_INFERENCE_TOKEN")}
    env.update({"SPARSETUNE_HOME": str(home), "SPARSETUNE_MODELS": json.dumps({"tiny-llama": str(tiny_llama_dir)}),
                "SPARSETUNE_HEARTBEAT_SECONDS": "1", "SPARSETUNE_RESTART_BACKOFF_SECONDS": "0.5",
                "HF_HUB_OFFLINE": "1"})
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        up, key = start_up(env, port, log)
        try:
            auth = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                first = wait_for(lambda: _inference(http, auth), 120, 0.3, "the inference process's heartbeat")
                (pid,) = first
                assert first[pid]["models"] == [] and first[pid]["pool"] == "inference"
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda: not alive(pid), 10, 0.1, "up to reap the dead inference process")
                wait_for(lambda: _row_status(home, pid) == "lost", 10, 0.1, "its row marked lost")
                new = wait_for(lambda: [p for p in _inference(http, auth) if p != pid], 120, 0.3, "a new one")
                assert len(new) == 1 and len(live_workers(http, auth)) == 1  # and the one trainer
            _answers_with_the_token_from_home(home, _address(home, new[0]))
        finally:
            stop_process_group(up, grace=90)
    assert up.returncode == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    (death,) = [e for e in lines if e.get("supervised") == "inference"]
    assert death["pid"] == pid and death["exit_code"] == -signal.SIGKILL and death["restart_in_seconds"] == 0.5


def _address(home: Path, pid: int) -> str:
    engine = sa.create_engine(f"sqlite:///{home / 'sparsetune.db'}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT address FROM workers WHERE pid = :pid"), {"pid": pid}).scalar_one()
    finally:
        engine.dispose()


def _answers_with_the_token_from_home(home: Path, address: str) -> None:
    token = (home / "inference_token").read_text().strip()
    with httpx.Client(base_url=address, timeout=30) as http:
        assert http.get("/internal/health").status_code == 401
        assert http.get("/internal/health", headers={"Authorization": f"Bearer {token}"}).json() == {
            "models": [], "load": 0}


def test_up_inference_false_starts_no_inference_process(monkeypatch):
    from cli import bootstrap
    from service.settings import get_settings

    for value, names in (("false", ["worker"]), ("true", ["worker", "inference"])):
        monkeypatch.setenv("SPARSETUNE_UP_INFERENCE", value)
        get_settings.cache_clear()
        assert [c.name for c in bootstrap.supervised_worker().children] == names
    get_settings.cache_clear()
