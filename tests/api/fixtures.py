"""Service test fixtures: a fresh Postgres database and Redis queue per session, the app, keys, a worker.

Imported by the conftest of tests/api, tests/worker and tests/e2e (``from tests.api.fixtures import *``).
Everything started here is stopped in teardown; the database is dropped and the Redis keys removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.helpers import wait_for  # noqa: F401 - re-exported: the tests import it from here

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("SPARSETUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("SPARSETUNE_TEST_REDIS", "redis://127.0.0.1:6379")
TINY_LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "vocab_size": 30522, "tie_word_embeddings": True}


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN, autocommit=True)


def create_database() -> tuple[str, str]:
    name = f"st_test_{os.getpid()}_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic(url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=120)


def cleanup_redis(url: str, queue: str) -> None:
    r = redis.Redis.from_url(url)
    keys = [k for k in r.scan_iter(f"*{queue}*")]
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture(scope="session")
def config_only_model(tmp_path_factory) -> Path:
    """A folder with just a tiny LLaMA config.json: enough for validation and estimates (no torch)."""
    folder = tmp_path_factory.mktemp("cfg-llama")
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    return folder


@pytest.fixture(scope="session")
def service_env(tmp_path_factory, config_only_model) -> Iterator[dict[str, str]]:
    """Point the settings at a fresh Postgres database and a private Redis queue for this session."""
    name, url = create_database()
    alembic(url, "upgrade", "head")
    queue = f"st-test-{uuid.uuid4().hex[:10]}"
    broker = f"{REDIS_HOST}/{secrets.randbelow(8) + 8}"
    home = tmp_path_factory.mktemp("home")
    env = {"DATABASE_URL": url, "BROKER_URL": broker, "SPARSETUNE_QUEUE": queue, "SPARSETUNE_HOME": str(home),
           "SPARSETUNE_MODELS": json.dumps({"cfg-llama": str(config_only_model)}),
           "SPARSETUNE_LEASE_SECONDS": "6", "SPARSETUNE_RECONCILE_SECONDS": "1",
           "SPARSETUNE_REQUEUE_AFTER_SECONDS": "4", "SPARSETUNE_CHECKPOINT_EVERY": "2",
           "SPARSETUNE_MAX_UPLOAD_BYTES": str(256 * 1024), "SPARSETUNE_SSE_POLL_SECONDS": "0.2",
           "SPARSETUNE_ALLOWED_HOSTS": "testserver",  # httpx's TestClient's Host; never allowed by default
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        with environment(env):
            yield env
    finally:
        cleanup_redis(broker, queue)
        drop_database(name)


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set these variables for the block (settings, engines and producer re-read), then put back what was."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reset_caches()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reset_caches()


def _reset_caches() -> None:
    from service import db, queue, settings

    settings.get_settings.cache_clear()
    db.reset_engines()
    queue.producer.cache_clear()


def set_models(models: dict[str, str]) -> None:
    """Change the allowlist for this process (and for processes started afterwards)."""
    os.environ["SPARSETUNE_MODELS"] = json.dumps(models)
    from service import settings

    settings.get_settings.cache_clear()


@pytest.fixture(scope="session")
def app(service_env):
    from api.main import create_app

    return create_app()


@pytest.fixture()
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def make_key(name: str = "test", owner_id: str | None = None) -> tuple[str, str]:
    """Create a key directly in the database (what `sparsetune keys create` does); returns (key, owner_id)."""
    from service.db import session_scope
    from service.security import create_key

    with session_scope() as s:
        row, key = create_key(s, name, owner_id)
        return key, row.owner_id


@pytest.fixture()
def auth(service_env) -> dict[str, str]:
    key, _ = make_key("alice")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def other_auth(service_env) -> dict[str, str]:
    key, _ = make_key("mallory")
    return {"Authorization": f"Bearer {key}"}


def count_rows(table: str) -> int:
    from sqlalchemy import text

    from service.db import get_engine

    with get_engine().connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """A real Celery worker process (solo pool), as production runs it; ready when it says so."""
    fh = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env={**os.environ, **env},
                            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if b"ready." in log_path.read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError("worker did not start:\n" + log_path.read_text()[-3000:])


@pytest.fixture()
def worker(service_env, tmp_path) -> Iterator[subprocess.Popen]:  # noqa: F811
    proc = start_worker({}, tmp_path / "worker.log")
    try:
        yield proc
    finally:
        stop_process(proc, timeout=20)


