"""A small HTTP client for the CLI's `datasets` and `jobs` commands (the public REST API, nothing else)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """An error response; ``status`` decides the exit code (4xx: bad input, 2; else 1)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body


def default_key() -> str | None:
    """SPARSETUNE_API_KEY, else the key `sparsetune up` kept under SPARSETUNE_HOME for local use."""
    key = os.environ.get("SPARSETUNE_API_KEY")
    if key:
        return key
    from service.settings import get_settings

    path = get_settings().home / "api_key"
    return path.read_text().strip() if path.is_file() else None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while piece := fh.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60) -> None:
        self.url = (url or os.environ.get("SPARSETUNE_API_URL") or DEFAULT_URL).rstrip("/")
        key = key or default_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                body = r.json()
                err = body.get("error", {})
                msg = err.get("message") or r.text
                details = err.get("details") or []
                if details:
                    msg += "".join(f"\n  line {d.get('line')}: {d.get('field') or ''} {d.get('message')}".rstrip()
                                   for d in details[:10] if "line" in d)
            except ValueError:
                body, msg = None, r.text or r.reason_phrase
            raise ApiError(r.status_code, f"{r.status_code}: {msg}", body)
        return r

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the API at {self.url}: {exc}") from None
        return self._check(r).json()

    def upload(self, path: Path) -> Any:
        with path.open("rb") as fh:
            return self.request("POST", "/v1/datasets", files={"file": (path.name, fh, "application/jsonl")})

    def download(self, job_id: str, name: str, out: Path) -> dict[str, Any]:
        """Stream an artifact to ``out`` and check the file against its sha256. An ``out.part`` left by an
        interrupted download is resumed with a Range request (a stored artifact never changes, and the check
        reads the whole file, old bytes too); a partial copy that fails the check is removed, so a retry starts
        afresh."""
        tmp = out.with_name(out.name + ".part")
        have = tmp.stat().st_size if tmp.is_file() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}", headers=headers) as r:
            expected = r.headers.get("x-checksum-sha256")
            if not (r.status_code == 416 and have):  # 416: the partial copy is already whole (or too long)
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                if not (r.status_code == 206 and r.headers.get("content-range", "").startswith(f"bytes {have}-")):
                    have = 0  # the whole artifact came: start the file again
                with tmp.open("ab" if have else "wb") as fh:
                    for chunk in r.iter_bytes():
                        fh.write(chunk)
        got = _sha256_of(tmp)
        if expected and got != expected:
            tmp.unlink(missing_ok=True)
            raise ApiError(0, f"{name}: sha256 mismatch (got {got}, expected {expected}); the partial download "
                              "was removed: run the command again")
        size = tmp.stat().st_size
        tmp.replace(out)
        return {"name": name, "path": str(out), "bytes": size, "sha256": got, "resumed_from": have}

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Follow the job's SSE stream to `end`, reconnecting with Last-Event-ID if the connection drops."""
        last: str | None = None
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last} if last else {})}
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(60, read=120)) as r:
                    if r.status_code == 204:
                        return
                    if r.status_code >= 400:
                        r.read()
                        self._check(r)
                    event: dict[str, Any] = {}
                    for line in r.iter_lines():
                        if not line:
                            if "data" in event:
                                data = json.loads(event["data"])
                                last = event.get("id", last)
                                yield data
                                if data.get("type") == "end":
                                    return
                            event = {}
                            continue
                        field, _, value = line.partition(":")
                        if field in ("id", "event", "data"):
                            event[field] = value.lstrip(" ")
            except httpx.TransportError:
                continue  # reconnect; Last-Event-ID makes sure nothing is missed
