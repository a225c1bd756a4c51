"""What a caller hands the engine and what it gets back: a target (base + optional adapter), sampling
parameters, and a :class:`Generation` handle that streams text out of the engine thread."""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InferenceError(Exception):
    """A request the engine refuses or cannot serve: ``status`` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or {404: "not_found", 409: "conflict", 422: "invalid_request",
                             503: "unavailable"}.get(status, "inference_error")


@dataclass(frozen=True)
class Target:
    """What a request runs: a base model, and optionally one finished job's adapter on it.

    ``base`` is what :func:`smt_core.models.resolve_model` takes (alias, folder, hub id); ``adapter`` names the
    adapter (the job id) and ``adapter_dir`` is a local folder holding its ``adapter.safetensors``."""

    base: str
    adapter: str | None = None
    adapter_dir: Path | None = None


@dataclass(frozen=True)
class Sampling:
    """OpenAI's sampling parameters (``n`` is always 1). ``temperature`` 0 is greedy."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


END = object()  # sentinel closing a generation's queue


@dataclass(eq=False)
class Generation:
    """One request's stream of text pieces. The engine thread writes (``put``/``finish``); the caller reads
    with ``for piece in gen`` (blocking) or ``async for piece in gen``. ``cancel()`` (e.g. the client went away)
    stops it at the next decode step. After the stream ends: ``finish_reason`` (``stop`` | ``length`` |
    ``cancelled``), ``prompt_tokens``, ``completion_tokens``; an engine failure is raised to the reader."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: InferenceError | None = None
    _q: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- engine side ---------------------------------------------------------------------------------
    def put(self, piece: str) -> None:
        if piece:
            self._q.put(piece)
            self._wake()

    def finish(self, reason: str | None = None, error: InferenceError | None = None) -> None:
        self.finish_reason, self.error = reason, error
        self._q.put(END)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            for loop, event in self._waiters:
                loop.call_soon_threadsafe(event.set)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # ---- caller side ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is END:
                self._raise()
                return
            yield item

    async def __aiter__(self):
        loop, event = asyncio.get_running_loop(), asyncio.Event()
        with self._lock:
            self._waiters.append((loop, event))
        try:
            while True:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    event.clear()
                    if self._q.empty():
                        await event.wait()
                    continue
                if item is END:
                    self._raise()
                    return
                yield item
        finally:
            with self._lock:
                self._waiters.remove((loop, event))

    def text(self) -> str:
        """The whole text (blocking)."""
        return "".join(self)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def usage(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}
