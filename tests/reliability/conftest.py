"""Fault-test fixtures: a private PostgreSQL and Redis (restartable without disturbing anything else), the
settings pointed at them for this package only, the API as a uvicorn process, a key and a small dataset.

The environment follows tests/api/fixtures.py (same variables, short leases and reconciler periods); it is
package-scoped and restored afterwards, so later packages see their own database again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import factories
from tests.api.fixtures import alembic, environment, make_key
from tests.reliability.servers import ApiServer, PrivatePostgres, PrivateRedis


@dataclass
class Faults:
    """What a fault test may restart, and the environment every process it starts gets."""

    pg: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    logs: Path


@pytest.fixture(scope="package")
def faults(tmp_path_factory, tiny_llama_dir) -> Iterator[Faults]:
    logs = tmp_path_factory.mktemp("reliability")
    pg = PrivatePostgres()
    rds = PrivateRedis(logs)
    try:
        pg.start()
        rds.start()
        alembic(pg.url, "upgrade", "head")
        env = {"DATABASE_URL": pg.url, "BROKER_URL": rds.url, "SPARSETUNE_QUEUE": "st-reliability",
               "SPARSETUNE_HOME": str(logs / "home"), "SPARSETUNE_MODELS": json.dumps({"tiny-llama": str(tiny_llama_dir)}),
               "SPARSETUNE_LEASE_SECONDS": "8", "SPARSETUNE_RECONCILE_SECONDS": "1",
               "SPARSETUNE_REQUEUE_AFTER_SECONDS": "3", "SPARSETUNE_CHECKPOINT_EVERY": "2",
               "SPARSETUNE_SSE_POLL_SECONDS": "0.2", "SPARSETUNE_CHILD_MEMORY_BYTES": "",
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with environment(env):
            yield Faults(pg, rds, env, logs)
    finally:
        rds.stop()
        pg.destroy()


@pytest.fixture(scope="package")
def api(faults) -> Iterator[ApiServer]:
    server = ApiServer(faults.env, faults.logs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def auth(faults) -> dict[str, str]:
    key, _ = make_key("faults")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def http(api) -> Iterator[httpx.Client]:
    """A client of the API process (same paths and calls as the TestClient: tests/jobs.py works on both)."""
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="package")
def dataset(api, auth) -> str:
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(48)).encode()
    r = httpx.post(f"{api.url}/v1/datasets", headers=auth, files={"file": ("pc.jsonl", data)}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]
