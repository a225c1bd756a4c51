"""The hostile side of bench/api_load.py ``--hostile``: clients that try to take the API down while the normal
mix runs, in a process of their own so that their work does not slow the load client's clock.

- Event streams: ``streams`` per API process, half ``GET /v1/events`` and half ``GET /v1/jobs/{id}/events``
  (``Accept: text/event-stream``) of another owner's queued jobs, opened at ``ramp`` a second and held; a
  stream the server ends is opened again with ``Last-Event-ID``. That owner creates a job every
  ``create_every`` seconds, so every owner stream has events to deliver; the events received are counted.
- Slow clients: half send a request line and then one header line every ``slow_interval`` seconds (no key:
  the server cannot know who they are until the headers end); half send complete headers with a valid key
  and then trickle a JSON body a byte at a time. Each is reconnected when the server closes it; how long the
  server let each connection live, and what it answered, is recorded.
- Keyless uploads: ``uploads`` concurrent chunked ``POST /v1/datasets`` of ``upload_bytes`` each, without
  ``Authorization``, on raw sockets so that the bytes written are known: those written before the answer
  arrived (socket buffers included), and whether the server kept reading after it answered (all of the body
  went through) or closed the connection.

Run by api_load.py as ``python bench/hostile.py CONFIG_JSON``. It prints one JSON line when its streams are
open, then answers ``snapshot`` on stdin with a JSON line of its counters, and ``stop`` with the final counters.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

CHUNK = 1024 * 1024


class Stats:
    """Counters that only grow (the parent takes differences between snapshots), the streams open now, and
    the slow connections and uploads that ended (each snapshot sums up those that ended since the last)."""

    def __init__(self) -> None:
        self.streams_open = 0
        self.counts: Counter[str] = Counter()
        self.stream_refusals: Counter[str] = Counter()
        self.slow: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        self._seen = (0, 0)

    def snapshot(self, everything: bool = False) -> dict[str, Any]:
        slow, uploads = (self.slow, self.uploads) if everything else (
            self.slow[self._seen[0]:], self.uploads[self._seen[1]:])
        self._seen = (len(self.slow), len(self.uploads))
        return {"time": time.time(), "streams_open": self.streams_open, **self.counts,
                "stream_refusals": dict(self.stream_refusals), **summary(slow, uploads)}


def summary(slow: list[dict[str, Any]], uploads: list[dict[str, Any]]) -> dict[str, Any]:
    """Slow connections: how long the server let them live and what it answered (None: closed unanswered).
    Uploads: what the server answered, how many MiB were written before the answer (socket buffers included)
    and in all, whether the whole body went through (the server kept reading) or the server closed."""
    lived = {kind: sorted(c["seconds"] for c in slow if c["kind"] == kind) for kind in ("headers", "body")}
    answered = [u for u in uploads if u["status"] is not None]
    return {
        "slow_closed": len(slow), "slow_statuses": dict(Counter(str(c["status"]) for c in slow)),
        "slow_seconds_max": {k: round(v[-1], 1) for k, v in lived.items() if v},
        "slow_seconds_median": {k: round(statistics.median(v), 1) for k, v in lived.items() if v},
        "uploads_ended": len(uploads), "upload_statuses": dict(Counter(str(u["status"]) for u in uploads)),
        "upload_mib_before_answer_max": round(max((u["before_answer"] for u in answered), default=0) / CHUNK, 1),
        "upload_mib_written_max": round(max((u["written"] for u in uploads), default=0) / CHUNK, 1),
        "uploads_fully_sent": sum(1 for u in uploads if u["fully_sent"]),
        "uploads_closed_by_server": sum(1 for u in uploads if u["closed_by_server"]),
        "upload_seconds_to_answer_max": round(max((u["seconds_to_answer"] for u in answered), default=0), 2),
    }


# ---------------------------------------------------------------- event streams

async def hold_stream(session: aiohttp.ClientSession, url: str, key: str, stats: Stats, stop: asyncio.Event) -> None:
    """Keep one stream open, counting its events; reopen it (from the last event id) whenever it ends."""
    last_id: str | None = None
    while not stop.is_set():
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        opened = False
        try:
            async with session.get(url, headers=headers) as r:
                if r.status != 200:
                    stats.stream_refusals[str(r.status)] += 1
                    await r.read()
                    await asyncio.sleep(1.0)
                    continue
                opened = True
                stats.streams_open += 1
                stats.counts["streams_opened"] += 1
                async for raw in r.content:
                    line = raw.rstrip(b"\r\n")
                    if line.startswith(b"data:"):
                        stats.counts["stream_events"] += 1
                    elif line.startswith(b"id:"):
                        last_id = line[3:].strip().decode()
                    elif line.startswith(b":"):
                        stats.counts["stream_pings"] += 1
                stats.counts["streams_ended_by_server"] += 1
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            stats.counts["stream_errors"] += 1
        finally:
            if opened:
                stats.streams_open -= 1
        if not stop.is_set():
            await asyncio.sleep(1.0)


async def create_jobs(session: aiohttp.ClientSession, bases: list[str], key: str, body: dict[str, Any],
                      every: float, stats: Stats, stop: asyncio.Event) -> None:
    """The streams' owner creates a job now and then, so that its owner streams have events to deliver."""
    i = 0
    while not stop.is_set():
        try:
            async with session.post(f"{bases[i % len(bases)]}/v1/jobs", json=body,
                                    headers={"Authorization": f"Bearer {key}"}) as r:
                await r.read()
                stats.counts[f"owner_jobs_created_{r.status}"] += 1
        except (aiohttp.ClientError, TimeoutError):
            stats.counts["owner_jobs_errors"] += 1
        i += 1
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


# ---------------------------------------------------------------- raw-socket clients

async def read_status(reader: asyncio.StreamReader) -> int | None:
    """The status of the response's first line; None if the server closed without one."""
    line = await reader.readline()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def slow_client(base: str, kind: str, key: str, interval: float, stats: Stats, stop: asyncio.Event) -> None:
    """One connection at a time, as slow as the server allows; records how long the server let it live."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    while not stop.is_set():
        started, status, writer, answer = time.monotonic(), None, None, None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            answer = asyncio.ensure_future(read_status(reader))
            if kind == "headers":
                writer.write(f"GET /v1/jobs HTTP/1.1\r\nHost: {host}\r\n".encode())
            else:
                writer.write(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                             "Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{".encode())
            n = 0
            while not answer.done() and not stop.is_set():
                await writer.drain()
                await asyncio.wait({answer}, timeout=interval)
                if answer.done():
                    break
                n += 1
                writer.write(f"X-Slow-{n}: {'a' * 8}\r\n".encode() if kind == "headers" else b" ")
            if answer.done():
                status = answer.result()
            else:
                answer.cancel()
        except (ConnectionError, OSError):
            if answer is not None and answer.done() and not answer.cancelled() and answer.exception() is None:
                status = answer.result()
        finally:
            if writer is not None:
                writer.close()
        if not stop.is_set():  # closed by the server (or its answer), not by us
            stats.slow.append({"kind": kind, "seconds": time.monotonic() - started, "status": status})
            await asyncio.sleep(0.2)


async def keyless_upload(base: str, size: int, stats: Stats) -> None:
    """A chunked multipart upload without a key, sent whole unless the server closes the connection.

    Without ``Connection: close`` on its answer, uvicorn keeps reading (and dropping) the rest of a body the
    app never read, to reach the next request on the connection: the whole upload then goes through."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    started = time.monotonic()
    written, before_answer, status, closed, answered_at = 0, 0, None, False, None
    writer, answer = None, None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        boundary = "hostile0boundary"
        writer.write(f"POST /v1/datasets HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode())
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        line = b'{"prompt": "p", "completion": "c"}\n'
        filler = line * (CHUNK // len(line)) + line[:CHUNK % len(line)]  # exactly CHUNK bytes

        def framed(chunk: bytes) -> bytes:
            return b"%x\r\n" % len(chunk) + chunk + b"\r\n"

        first, rest = framed((head + filler)[:CHUNK]), framed(filler)
        answer = asyncio.ensure_future(read_status(reader))
        while written < size:
            writer.write(first if written == 0 else rest)
            written += CHUNK  # handed to the socket: the kernel's buffers may hold some of it still
            await writer.drain()
            await asyncio.sleep(0)  # drain() does not yield while the socket takes the bytes: let the answer in
            if answer.done() and answered_at is None:
                answered_at, status, before_answer = time.monotonic(), answer.result(), written
                if status is None:
                    break  # closed without an answer
        else:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        if answered_at is None:
            status = await asyncio.wait_for(answer, 60)
            answered_at, before_answer = time.monotonic(), written
    except (ConnectionError, OSError, TimeoutError):
        closed = True
        if answered_at is None and answer is not None and answer.done() and answer.exception() is None:
            answered_at, status, before_answer = time.monotonic(), answer.result(), written
    finally:
        if writer is not None:
            writer.close()
    stats.uploads.append({"status": status, "written": written, "before_answer": before_answer,
                          "fully_sent": written >= size and not closed, "closed_by_server": closed,
                          "seconds_to_answer": (answered_at or time.monotonic()) - started})


async def uploads_loop(base: str, size: int, stats: Stats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await keyless_upload(base, size, stats)
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- the process, from the parent's side

class HostileProcess:
    """This module run as a child process: start it, wait until its streams are open, ask for counters."""

    def __init__(self, cfg: dict[str, Any], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)

    def _line(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"the hostile clients exited ({self.proc.returncode}):\n"
                               + self.log.read_text()[-3000:])
        return json.loads(line)

    def ready(self) -> dict[str, Any]:
        """Blocks until the streams are open (the child gives up waiting after a minute and says how many)."""
        return self._line()

    def snapshot(self) -> dict[str, Any]:
        self.proc.stdin.write("snapshot\n")
        self.proc.stdin.flush()
        return self._line()

    def stop(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            return None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            final = self._line()
            self.proc.wait(30)
            return final
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
            return None


WINDOWED = {"streams_open", "slow_closed", "uploads_ended", "uploads_fully_sent", "uploads_closed_by_server"}


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What happened between two snapshots: counters as differences, everything else as it is after."""
    out = {}
    for k, v in after.items():
        counter = isinstance(v, int) and not isinstance(v, bool) and isinstance(before.get(k, 0), int)
        if counter and k not in WINDOWED:
            out[k] = v - before.get(k, 0)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------- main (the child)

async def run(cfg: dict[str, Any]) -> None:
    stats, stop = Stats(), asyncio.Event()
    bases, key = cfg["bases"], cfg["key"]
    # no total timeout: a stream lives as long as the run; a connect that hangs is still bounded
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
    tasks: list[asyncio.Task] = []
    urls = []
    for base in bases:
        for i in range(cfg["streams"]):
            job = cfg["job_ids"][i % len(cfg["job_ids"])]
            urls.append(f"{base}/v1/events" if i % 2 == 0 else f"{base}/v1/jobs/{job}/events")
    for i, url in enumerate(urls):  # ramp up: a thousand opens in the same instant is not the test
        tasks.append(asyncio.create_task(hold_stream(session, url, key, stats, stop)))
        if (i + 1) % max(1, int(cfg["ramp"] / 10)) == 0:
            await asyncio.sleep(0.1)
    deadline = time.monotonic() + 60
    while stats.streams_open < 0.98 * len(urls) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    tasks.append(asyncio.create_task(create_jobs(session, bases, key, cfg["job_body"], cfg["create_every"],
                                                 stats, stop)))
    for i in range(cfg["slow_clients"]):
        kind = "headers" if i % 2 == 0 else "body"
        tasks.append(asyncio.create_task(slow_client(bases[i % len(bases)], kind, key, cfg["slow_interval"],
                                                     stats, stop)))
    for i in range(cfg["uploads"]):
        tasks.append(asyncio.create_task(uploads_loop(bases[i % len(bases)], cfg["upload_bytes"], stats, stop)))
    print(json.dumps({"ready": True, **stats.snapshot()}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if command == "snapshot":
            print(json.dumps(stats.snapshot()), flush=True)
        elif command in ("stop", ""):  # "" is end of input: the parent has gone
            break
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    print(json.dumps({**stats.snapshot(), "whole_run": stats.snapshot(everything=True)}), flush=True)


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
