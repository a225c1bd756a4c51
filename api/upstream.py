"""Forwarding to an inference process: its internal HTTP API (inference/server.py), reached at the address its
heartbeat gave (service/inference_routing.py picks the order to try them in).

One short connect timeout and no read timeout: a process that is down is skipped within seconds, while a long
answer (a big model, a long ``max_tokens``) is never cut off. A process that cannot be reached is skipped for
the next one; none left is a 503 with ``Retry-After``. The process's refusals come back with their own status
and message (an unknown adapter, a classification job asked to chat); its 5xx are a 502, ours to explain.

The caller going away cancels the work on the process: closing the upstream response drops its connection,
which the process notices and stops generating. A stream closes it when the client disconnects (Starlette
cancels the body iterator); a whole answer is read while watching the client's connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api.errors import APIError
from service.inference_routing import Endpoint

log = logging.getLogger("sparsetune.api")
RETRY_AFTER_SECONDS = 5  # an inference process restarted by `sparsetune up` is back within seconds
TIMEOUT = httpx.Timeout(connect=3.0, read=None, write=30.0, pool=5.0)
NO_PROCESS = ("no inference process is running: `sparsetune up` starts one, or run `sparsetune serve`; "
              "retry shortly")


def unavailable(message: str, retry_after: str | None = None) -> APIError:
    return APIError(503, message, headers={"Retry-After": retry_after or str(RETRY_AFTER_SECONDS)})


@dataclass
class Opened:
    """An answer being received from one inference process (status 200, body not yet read)."""

    client: httpx.AsyncClient
    response: httpx.Response
    endpoint: Endpoint

    async def aclose(self) -> None:
        """Drop the upstream connection (shielded: it runs while the request is being cancelled, and a close
        cut short would leave the process generating for nobody)."""
        with anyio.CancelScope(shield=True):
            await self.response.aclose()
            await self.client.aclose()

    async def lines(self) -> AsyncIterator[str]:
        """The NDJSON lines; a connection lost mid-answer becomes one error line (the stream then ends)."""
        try:
            async for line in self.response.aiter_lines():
                yield line
        except httpx.HTTPError as exc:
            log.warning("inference process %s went away mid-stream: %s", self.endpoint.id, exc.__class__.__name__)
            yield json.dumps({"error": {"code": "unavailable", "param": None,
                                        "message": "the inference process went away mid-answer; retry"}})


async def _refusal(resp: httpx.Response, endpoint: Endpoint) -> APIError:
    """The process's error answer as ours: its status, code, message and param (its 5xx a 502)."""
    try:
        body = json.loads(await resp.aread())
    except (ValueError, httpx.HTTPError):
        body = None
    finally:
        await resp.aclose()
    err: dict[str, Any] = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    message = str(err.get("message") or f"the inference process answered {resp.status_code}")
    status = resp.status_code
    if status in (401, 403):
        log.error("inference process %s refused the API's token: SPARSETUNE_INFERENCE_TOKEN (or "
                  "$SPARSETUNE_HOME/inference_token) differs between them", endpoint.id)
        return unavailable("the inference process refused the API's credentials")
    if status in (429, 503):
        return unavailable(message, resp.headers.get("Retry-After"))
    if status >= 500:
        return APIError(502, f"the inference process failed: {message}", code="upstream_error")
    param = err.get("param") if isinstance(err.get("param"), str) else None
    code = err.get("code") if isinstance(err.get("code"), str) else None
    return APIError(status, message, param=param, code=code)


async def open_post(endpoints: list[Endpoint], path: str, payload: dict[str, Any], token: str) -> Opened:
    """POST ``payload`` to the first process that can be reached, in order; its answer's headers are in
    (a refusal raised as an APIError), its body not yet read."""
    if not endpoints:
        raise unavailable(NO_PROCESS)
    client = httpx.AsyncClient(timeout=TIMEOUT, headers={"Authorization": f"Bearer {token}"}, trust_env=False)
    try:
        for endpoint in endpoints:
            request = client.build_request("POST", endpoint.address + path, json=payload)
            try:
                resp = await client.send(request, stream=True)
            except httpx.TransportError as exc:  # down since its last heartbeat: try the next
                log.warning("inference process %s at %s unreachable: %s", endpoint.id, endpoint.address,
                            exc.__class__.__name__)
                continue
            if resp.status_code >= 400:
                raise await _refusal(resp, endpoint)
            return Opened(client, resp, endpoint)
        raise unavailable("no inference process could be reached; retry shortly")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await client.aclose()
        raise


async def _read_unless_gone(request: Request, response: httpx.Response) -> bytes | None:
    """The whole body, or None as soon as the client disconnects (the caller then drops the upstream)."""
    got: list[bytes] = []
    async with anyio.create_task_group() as tg:
        async def read() -> None:
            got.append(await response.aread())
            tg.cancel_scope.cancel()

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(read)
        tg.start_soon(watch)
    return got[0] if got else None


async def post_json(request: Request, endpoints: list[Endpoint], path: str, payload: dict[str, Any],
                    token: str) -> dict[str, Any]:
    """A whole JSON answer from the first reachable process; the work there is dropped if our client leaves."""
    opened = await open_post(endpoints, path, payload, token)
    try:
        body = await _read_unless_gone(request, opened.response)
    except httpx.HTTPError as exc:
        log.warning("inference process %s went away mid-answer: %s", opened.endpoint.id, exc.__class__.__name__)
        raise unavailable("the inference process went away mid-answer; retry shortly") from None
    finally:
        await opened.aclose()
    if body is None:
        raise APIError(499, "the client closed the request", code="client_closed")
    try:
        result = json.loads(body)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise APIError(502, "the inference process sent a malformed answer", code="upstream_error")
    return result


def event_stream(opened: Opened, events: AsyncIterator[str]) -> StreamingResponse:
    """Server-Sent Events made from an upstream answer; the upstream is closed when the events end or the client
    goes away (Starlette then cancels the iterator), which cancels the generation on the process."""
    async def closing() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        finally:
            await opened.aclose()

    return StreamingResponse(closing(), media_type="text/event-stream", background=BackgroundTask(opened.aclose),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
