"""The inference process's internal HTTP app: the API forwards ``/v1/chat/completions``, ``/v1/completions``
and ``/v1/jobs/{id}/predict`` here, after it has checked the caller's key, the job's owner and the request's
fields. Not public: every request must carry ``Authorization: Bearer <inference token>`` (see
``Settings.inference_secret``), compared in constant time, before anything else is read — 401 otherwise.

Routes (bodies are JSON; errors are ``{"error": {"status", "code", "message", "param"}}`` with that status):

- ``POST /internal/generate`` ``{"target": {"base": alias, "job_id": id|null}, "prompt": str|null,
  "messages": [...]|null, "sampling": {"max_tokens", "temperature", "top_p", "stop", "seed"}, "stream": bool}``
  → ``{"text", "finish_reason", "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``; streamed
  (``application/x-ndjson``): one ``{"text": piece}`` line per piece, then ``{"finish_reason", "usage"}`` (or
  ``{"error": {...}}`` if the engine fails mid-stream). The first piece is awaited before the status line is
  sent, so a model that cannot load is a status code, not a broken stream.
- ``POST /internal/predict`` ``{"target": {...}, "texts": [...]}`` → ``{"data": [{"label", "probabilities"}]}``.
- ``GET /internal/health`` → ``{"models": [bases held], "load": requests in hand}``.

A client that goes away cancels its generation (the engine stops it at the next decode step), so a dropped
stream does not go on using the engine.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from inference import adapters
from inference.engine import Engine
from inference.requests import Generation, InferenceError, Sampling, Target
from service.db import is_disconnect

log = logging.getLogger("sparsetune.inference")
NDJSON = "application/x-ndjson"


class TargetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str | None = Field(default=None, max_length=500)
    job_id: str | None = Field(default=None, max_length=64)


class SamplingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None

    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                        stop=tuple(s for s in self.stop if s), seed=self.seed)


class GenerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: TargetIn
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    sampling: SamplingIn = Field(default_factory=SamplingIn)
    stream: bool = False


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: TargetIn
    texts: list[str] = Field(min_length=1)


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message, "param": param}}


def error_response(exc: InferenceError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.code, exc.message, exc.param), status_code=exc.status)


class BearerToken:
    """Refuses (401) any request without the inference token, before its body is read or a route is matched."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = error_body(401, "unauthorized", "missing or wrong inference token", "Authorization")
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def resolve(target: TargetIn) -> Target:
    """The engine's target (database and adapter copy in a worker thread: they block). The database away for
    a moment is a 503 (the API says retry), not a crash."""
    try:
        return await anyio.to_thread.run_sync(adapters.resolve_target, target.base, target.job_id)
    except Exception as exc:
        if is_disconnect(exc):
            raise InferenceError(503, "the database is unavailable; retry shortly") from None
        raise


async def first_piece(gen: Generation) -> tuple[AsyncIterator[str], str]:
    """Start reading: the first piece ('' if the generation ended at once); a load error is raised here."""
    stream = gen.__aiter__()
    try:
        return stream, await stream.__anext__()
    except StopAsyncIteration:
        return stream, ""
    except BaseException:
        gen.cancel()
        raise


async def cancel_on_disconnect(request: Request, gen: Generation) -> None:
    """Wait for the client to go away (the body is read, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gen.cancel()
            return


async def whole(request: Request, gen: Generation, stream: AsyncIterator[str], first: str) -> JSONResponse:
    watcher = asyncio.create_task(cancel_on_disconnect(request, gen))
    try:
        pieces = [first]
        async for piece in stream:
            pieces.append(piece)
    finally:
        watcher.cancel()
    return JSONResponse({"text": "".join(pieces), "finish_reason": gen.finish_reason, "usage": gen.usage()})


async def ndjson(gen: Generation, stream: AsyncIterator[str], first: str) -> AsyncIterator[bytes]:
    """The streamed body. Starlette cancels this generator when the client disconnects: ``finally`` then
    cancels the generation, so the engine stops at its next step."""
    try:
        if first:
            yield _line({"text": first})
        try:
            async for piece in stream:
                yield _line({"text": piece})
        except InferenceError as exc:
            yield _line(error_body(exc.status, exc.code, exc.message, exc.param))
            return
        yield _line({"finish_reason": gen.finish_reason, "usage": gen.usage()})
    finally:
        gen.cancel()  # no-op once it finished
        await stream.aclose()


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


def add_routes(app: FastAPI, engine: Engine) -> None:
    @app.post("/internal/generate")
    async def generate(body: GenerateIn, request: Request) -> Any:
        if (body.prompt is None) == (body.messages is None):
            raise InferenceError(422, "give exactly one of prompt and messages", "prompt")
        target = await resolve(body.target)
        gen = engine.generate(target, body.sampling.sampling(), prompt=body.prompt, messages=body.messages)
        stream, first = await first_piece(gen)
        if body.stream:
            return StreamingResponse(ndjson(gen, stream, first), media_type=NDJSON)
        return await whole(request, gen, stream, first)

    @app.post("/internal/predict")
    async def predict(body: PredictIn) -> dict[str, Any]:
        target = await resolve(body.target)
        return {"data": await anyio.to_thread.run_sync(engine.predict, target, body.texts)}

    @app.get("/internal/health")
    def health() -> dict[str, Any]:
        return {"models": engine.held_models(), "load": engine.load()}


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferenceError)
    async def inference_error(_: Request, exc: InferenceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return JSONResponse(error_body(422, "invalid_request", str(first.get("msg")), param), status_code=422)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.error("inference request failed", exc_info=exc)
        return JSONResponse(error_body(500, "internal_error", f"inference failed: {exc.__class__.__name__}"),
                            status_code=500)


def create_app(engine: Engine, token: str) -> FastAPI:
    """The internal app on ``engine``; every request must bear ``token``."""
    if not token:
        raise ValueError("the inference token must not be empty")
    app = FastAPI(title="sparsetune inference (internal)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    add_routes(app, engine)
    add_error_handlers(app)
    app.add_middleware(BearerToken, token=token)
    return app
