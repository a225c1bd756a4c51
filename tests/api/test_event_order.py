"""The owner-wide event stream (/v1/events) against two jobs whose writers commit out of id order.

Event ids come from one sequence; the transaction that took id n can commit after the one that took n+1. A
stream that sent n+1 and moved its position past it would never send n. These tests hold real transactions
open on separate connections and read with the function the stream reads with."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, insert, select

from api.routes import events as stream
from service.db import get_engine
from service.models import Event
from tests import factories
from tests.api.fixtures import make_key


@pytest.fixture()
def two_jobs(client) -> tuple[str, str, str]:
    """(owner id, job a, job b): two queued jobs of one new owner (no worker runs here)."""
    key, owner_id = make_key("streams")
    auth = {"Authorization": f"Bearer {key}"}
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(16)).encode()
    ds = client.post("/v1/datasets", headers=auth, files={"file": ("t.jsonl", data)}).json()["id"]
    body = {"model": "cfg-llama", "training_dataset": ds, "method": "lora",
            "hyperparameters": {"steps": 2, "batch_size": 2, "max_seq_len": 32}}
    a, b = (client.post("/v1/jobs", headers=auth, json=body).json()["id"] for _ in range(2))
    return owner_id, a, b


def open_insert(job_id: str, owner_id: str, step: int, age: float = 0.0):
    """Insert one event (written ``age`` seconds ago) in a transaction left open; returns (connection, its id)."""
    conn = get_engine().connect()
    row = conn.execute(insert(Event).values(job_id=job_id, owner_id=owner_id, type="metric", data={"step": step},
                                            created_at=time.time() - age).returning(Event.id)).scalar_one()
    return conn, row


def newest_id() -> int:
    """Where each test starts reading: earlier tests' fresh gaps (a test makes one on purpose) lie behind it."""
    with get_engine().connect() as conn:
        return conn.execute(select(func.max(Event.id))).scalar() or 0


def read(owner_id: str, after: int) -> tuple[list[int], int]:
    events, position = stream._fetch(None, owner_id, after)
    return [e.id for e in events], position


def test_a_lower_id_committed_later_is_still_sent_first(two_jobs):
    owner_id, a, b = two_jobs
    start = newest_id()
    slow, low = open_insert(a, owner_id, 1)
    fast, high = open_insert(b, owner_id, 1)
    assert high > low
    fast.commit()
    fast.close()
    sent, position = read(owner_id, start)
    assert sent == [] and position < low  # not past the open transaction's id
    slow.commit()
    slow.close()
    sent, position = read(owner_id, position)
    assert sent == [low, high] and position == high


def test_a_rolled_back_id_is_waited_for_then_passed(two_jobs, monkeypatch):
    owner_id, a, b = two_jobs
    start = newest_id()
    doomed, lost = open_insert(a, owner_id, 1)
    doomed.rollback()
    doomed.close()
    kept, high = open_insert(b, owner_id, 2)
    kept.commit()
    kept.close()
    assert read(owner_id, start)[0] == []  # a fresh gap: it may be a transaction still open
    monkeypatch.setattr(stream, "SETTLE_SECONDS", 0.2)
    time.sleep(0.3)
    sent, position = read(owner_id, start)
    assert sent == [high] and lost < high and position == high


def test_an_old_gap_does_not_hold_the_stream(two_jobs):
    """A reconnect from far back crosses gaps left by deleted jobs and rollbacks long ago: no waiting there."""
    owner_id, a, b = two_jobs
    start = newest_id()
    doomed, _ = open_insert(a, owner_id, 1)
    doomed.rollback()
    doomed.close()
    kept, old = open_insert(b, owner_id, 2, age=2 * stream.SETTLE_SECONDS)
    kept.commit()
    kept.close()
    sent, position = read(owner_id, start)
    assert sent == [old] and position == old
