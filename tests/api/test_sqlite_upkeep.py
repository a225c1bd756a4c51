"""The embedded SQLite database stays bounded: its WAL file is cut back to a limit after large writes, deleted
datasets give their space back to the file system, and a database made before this is converted once."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import sqlite_upkeep
from service.blobstore import get_store
from tests.api.fixtures import environment, make_key
from tests.helpers import sqlite_with_free_pages

MIB = 1024 * 1024


@pytest.fixture()
def embedded(tmp_path) -> Iterator[Path]:
    """The embedded default (SQLite and the filesystem queue in a fresh home), migrated; returns the home."""
    from cli.bootstrap import migrate

    home = tmp_path / "home"
    env = {"DATABASE_URL": "", "BROKER_URL": "", "SPARSETUNE_HOME": str(home),  # empty = unset
           "SPARSETUNE_MAX_UPLOAD_BYTES": str(16 * MIB), "SPARSETUNE_ALLOWED_HOSTS": "testserver"}
    with environment(env):
        migrate()
        yield home


def checkpointed_size(db: Path) -> int:
    """The database file's size once everything in the WAL is copied back (what the disk really holds)."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return db.stat().st_size


def test_wal_file_stays_under_its_limit_after_a_burst_of_writes(embedded):
    from service.db import session_scope

    wal = embedded / "sparsetune.db-wal"
    store = get_store()
    with session_scope() as s:  # one transaction larger than the limit: the WAL must hold all of it for now
        store.write_bytes(s, os.urandom(sqlite_upkeep.WAL_SIZE_LIMIT_BYTES + 8 * MIB))
    assert wal.stat().st_size > sqlite_upkeep.WAL_SIZE_LIMIT_BYTES
    for _ in range(50):  # then a burst of small commits
        with session_scope() as s:
            store.write_bytes(s, os.urandom(64 * 1024))
    assert wal.stat().st_size <= sqlite_upkeep.WAL_SIZE_LIMIT_BYTES


def test_deleting_a_dataset_gives_its_space_back_to_the_file_system(embedded):
    from fastapi.testclient import TestClient

    from api.main import create_app

    key, _ = make_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    line = json.dumps({"prompt": "p" * 1000, "completion": os.urandom(3000).hex()}) + "\n"
    data = (line * (12 * MIB // len(line))).encode()
    db = embedded / "sparsetune.db"
    with TestClient(create_app()) as client:
        r = client.post("/v1/datasets", headers=auth, files={"file": ("train.jsonl", data)})
        assert r.status_code == 201, r.text
        full = checkpointed_size(db)
        assert full > len(data)
        r = client.delete(f"/v1/datasets/{r.json()['id']}", headers=auth)
        assert r.status_code == 200, r.text
    assert checkpointed_size(db) < full - 0.9 * len(data)


def test_a_database_made_without_incremental_vacuum_is_converted_once_and_shrinks(tmp_path):
    from service.db import make_engine

    db = tmp_path / "old.db"
    sqlite_with_free_pages(db)  # how earlier versions made it: WAL first, so auto_vacuum stayed NONE
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE kept (x TEXT)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
        conn.commit()
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    assert db.stat().st_size > 8 * MIB
    engine = make_engine(f"sqlite:///{db}")
    try:
        assert sqlite_upkeep.convert_to_incremental(engine) is True
        assert sqlite_upkeep.convert_to_incremental(engine) is False  # once
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
            assert conn.exec_driver_sql("SELECT x FROM kept").scalar() == "still here"
    finally:
        engine.dispose()
    assert db.stat().st_size < MIB
