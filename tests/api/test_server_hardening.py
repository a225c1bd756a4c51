"""Against a real uvicorn (the protocol production runs, api/server.py): many open event streams leave the
connection pool to the other requests, a revoked key's streams close, and clients trickling headers or a
body are cut off."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import factories
from tests.api.fixtures import ROOT, make_key, stop_process, wait_for
from tests.helpers import free_port

SERVER_ENV = {"SPARSETUNE_HEADER_TIMEOUT_SECONDS": "1", "SPARSETUNE_BODY_TIMEOUT_SECONDS": "1",
              "SPARSETUNE_MIN_BODY_BYTES_PER_SECOND": "20",
              "SPARSETUNE_KEY_CHECK_SECONDS": "0.5", "SPARSETUNE_SSE_POLL_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def server(service_env, tmp_path_factory) -> Iterator[str]:
    port, logs = free_port(), tmp_path_factory.mktemp("hardening") / "api.log"
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level",
                            "warning", "--http", "api.server:HttpToolsProtocol"], cwd=ROOT,
                           env={**os.environ, **SERVER_ENV}, start_new_session=True,
                           stdout=open(logs, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url) or api.poll() is not None, 60, 0.3, "the API to serve")
        assert api.poll() is None, Path(logs).read_text()[-3000:]
        yield url
    finally:
        stop_process(api)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Stream(threading.Thread):
    """One SSE stream read in a thread: its status, the data lines so far, and when it ended."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, {**headers, "Accept": "text/event-stream"}
        self.status, self.data, self.ended_at, self.error = None, [], None, None
        self.opened = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(10, read=60)) as r:
                self.status = r.status_code
                self.opened.set()
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        self.data.append(json.loads(line[5:]))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()


def _job(url: str, headers: dict[str, str]) -> str:
    data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(8)).encode()
    ds = httpx.post(f"{url}/v1/datasets", headers=headers, files={"file": ("t.jsonl", data)}, timeout=10)
    assert ds.status_code == 201, ds.text
    body = {"model": "cfg-llama", "training_dataset": ds.json()["id"], "method": "lora",
            "hyperparameters": {"steps": 2, "batch_size": 2, "max_seq_len": 32}}
    job = httpx.post(f"{url}/v1/jobs", headers=headers, json=body, timeout=10)
    assert job.status_code == 201, job.text
    return job.json()["id"]


def test_more_open_streams_than_pooled_connections_leave_the_api_answering(server):
    from service.db import get_engine

    pool = get_engine().pool
    size = pool.size() + pool._max_overflow  # the API process builds the same engine from the same settings
    key, _ = make_key("many-streams")
    auth = {"Authorization": f"Bearer {key}"}
    streams = [Stream(f"{server}/v1/events", auth) for _ in range(size + 5)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.opened.wait(20) and s.status == 200, (s.status, s.error)
    time.sleep(1)  # every stream past its first read, waiting
    start = time.monotonic()
    r = httpx.get(f"{server}/v1/jobs", headers=auth, timeout=30)
    assert r.status_code == 200 and time.monotonic() - start < 2, (r.status_code, time.monotonic() - start)
    job = _job(server, auth)  # its creation is an event: every stream hears of it
    wait_for(lambda: all(any(d.get("job_id") == job for d in s.data) for s in streams), 15, 0.2,
             "every stream to get the new job's event")
    assert all(s.ended_at is None for s in streams)


def test_a_revoked_keys_open_streams_close_within_seconds(server):
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import ApiKey
    from service.security import revoke_key

    first, owner = make_key("revoke-streams")
    job = _job(server, {"Authorization": f"Bearer {first}"})  # queued: no worker here, its stream stays open
    key, _ = make_key("revoke-streams-2", owner)
    auth = {"Authorization": f"Bearer {key}"}
    streams = [Stream(f"{server}/v1/events", auth), Stream(f"{server}/v1/jobs/{job}/events", auth)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.opened.wait(20) and s.status == 200, (s.status, s.error)
    time.sleep(1)
    assert all(s.ended_at is None for s in streams), "the streams stay open while the key is valid"
    with session_scope() as session:
        revoke_key(session, session.scalar(select(ApiKey).where(ApiKey.prefix == key.split("_")[1])).id)
    revoked = time.monotonic()
    wait_for(lambda: all(s.ended_at for s in streams), 10, 0.1, "the revoked key's streams to close")
    assert max(s.ended_at for s in streams) - revoked < 4


def _raw(server: str) -> socket.socket:
    host, port = server.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if it was still open after ``seconds``."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return got


def test_a_client_trickling_its_headers_is_cut_off(server):
    with _raw(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        start = time.monotonic()
        closed = False
        for i in range(20):  # one header line every 0.4 s, for up to 8 s
            time.sleep(0.4)
            try:
                sock.sendall(f"X-Slow-{i}: y\r\n".encode())
            except OSError:
                closed = True
                break
        if not closed:
            closed = _closed_within(sock, 0.5) is not None
        assert closed and time.monotonic() - start < 4, "the header timeout (1 s here) cut the connection"
    with _raw(server) as sock:  # a connection that sends nothing at all is closed too
        assert _closed_within(sock, 4) == b""


def test_a_client_trickling_its_body_gets_408_and_is_cut_off(server):
    key, _ = make_key("slow-body")
    with _raw(server) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 1000\r\n\r\n{")
        start = time.monotonic()
        got = _closed_within(sock, 6)
        assert got is not None and got.startswith(b"HTTP/1.1 408"), got
        assert time.monotonic() - start < 4


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_by_its_average_rate(server):
    """Each byte arrives well inside the 1 s per-piece timeout, but at 4 bytes/s, under the 20 bytes/s floor."""
    key, _ = make_key("trickle-body")
    with _raw(server) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 1000\r\n\r\n")
        start, answer = time.monotonic(), b""
        sock.settimeout(0.25)
        while time.monotonic() - start < 8 and not answer:
            try:
                sock.sendall(b" ")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - start < 4  # 1 s of grace + the bytes' worth at 20 bytes/s


def test_a_refused_body_is_not_read_the_connection_closes(server):
    """A keyless 100 MiB upload: the 401 comes at once and the server hangs up instead of draining the body."""
    with _raw(server) as sock:
        sock.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: localhost\r\nContent-Length: 104857600\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n" + b"x" * 65536)
        got = _closed_within(sock, 3)
        assert got is not None, "the connection stayed open, waiting for the rest of the body"
        assert got.startswith(b"HTTP/1.1 401") and b"connection: close" in got.lower(), got


def test_a_keyless_chunked_upload_is_refused_before_its_body(server):
    with _raw(server) as sock:
        sock.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        piece = b"x" * 65536
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.settimeout(5)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 401"), head


def test_an_event_stream_carries_the_security_headers_and_still_streams(server):
    key, _ = make_key("secure-stream")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", f"{server}/v1/events", headers={**auth, "Accept": "text/event-stream"},
                      timeout=httpx.Timeout(10, read=15)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        job = _job(server, auth)
        for line in r.iter_lines():  # a read timeout fails the test: the headers must not hold the stream
            if line.startswith("data:") and json.loads(line[5:]).get("job_id") == job:
                break


def test_a_request_naming_an_unknown_host_is_400_over_the_wire(server):
    r = httpx.get(f"{server}/healthz", headers={"Host": "rebound.example"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "Host"
    assert httpx.get(f"{server}/healthz", headers={"Host": "localhost:1"}, timeout=10).status_code == 200


def _transactions() -> int:
    """Transactions the test database has run so far (every API query is one), from Postgres's statistics."""
    import psycopg

    from service.settings import get_settings

    url = get_settings().db_url.replace("postgresql+psycopg://", "postgresql://")
    time.sleep(1.5)  # a backend reports its counts at most once a second
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()[0]


def test_many_streams_of_one_owner_cost_no_query_per_stream_per_event(server):
    """40 streams of one owner hear of 5 new jobs: the hub reads each event once for all of them (it used to
    wake every stream to run its own query: 40 queries per event)."""
    key, _ = make_key("one-owner-many-streams")
    auth = {"Authorization": f"Bearer {key}"}
    streams = [Stream(f"{server}/v1/events", auth) for _ in range(40)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.opened.wait(20) and s.status == 200, (s.status, s.error)
    before = _transactions()
    for _ in range(10):  # every stream past its opening catch-up read: the count settles to the hub's polls
        before, previous = _transactions(), before
        if before - previous < 20:
            break
    jobs = [_job(server, auth) for _ in range(5)]
    wait_for(lambda: all({d.get("job_id") for d in s.data} >= set(jobs) for s in streams), 15, 0.2,
             "every stream to get the new jobs' events")
    spent = _transactions() - before
    # the uploads and creations, the hub's polls (5 a second here), the test's own reads: well below 5 x 40
    assert spent < 100, f"{spent} transactions for 5 events to 40 streams"
