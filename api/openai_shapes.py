"""OpenAI's objects made from an inference process's answers, and the request's sampling parameters for it.

The inference process speaks a small internal contract (inference/server.py): a whole answer is
``{"text", "finish_reason", "usage"}``; a stream is NDJSON, ``{"text": "…"}`` lines then one
``{"finish_reason", "usage"}`` line (or an ``{"error": {…}}`` line). Here that becomes what OpenAI's clients
read: ``chat.completion`` / ``text_completion`` objects, or Server-Sent Events of ``chat.completion.chunk`` /
``text_completion`` chunks ending ``data: [DONE]``. Kept apart from the routes (thin) and from the HTTP
forwarding (api/upstream.py), so the shapes can be checked against the openai SDK's types on their own.

As OpenAI streams them: a chat stream opens with a chunk whose delta carries the role; every text piece is a
chunk with ``finish_reason`` null; the last choice chunk carries ``finish_reason``; with
``stream_options.include_usage`` every chunk has ``usage: null`` and one more chunk with ``choices: []``
carries the usage. (The openai SDK types a legacy completion choice's ``finish_reason`` as never null, but
OpenAI's and vLLM's streams send null until the end, and clients test for it: we do as they do.)
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from api.errors import invalid
from api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionPublic,
    CompletionChoice,
    CompletionPublic,
    SamplingRequest,
    TokenUsage,
)

DEFAULT_MAX_TOKENS_CHAT = 256  # OpenAI's chat has no fixed default (the model's context); ours is bounded
DEFAULT_MAX_TOKENS_COMPLETION = 16  # OpenAI's documented default for /v1/completions
FINISH_REASONS = ("stop", "length")
DONE = "data: [DONE]\n\n"


def sampling_of(body: SamplingRequest, default_max_tokens: int) -> dict[str, Any]:
    """The internal ``sampling`` object; the two names of the token limit must agree when both are given,
    and ``stream_options`` needs ``stream`` (as OpenAI refuses it)."""
    if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
        raise invalid("max_completion_tokens", "give max_tokens or max_completion_tokens, not two different values")
    if body.stream_options is not None and not body.stream:
        raise invalid("stream_options", "only allowed with stream: true")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return {"max_tokens": body.max_completion_tokens or body.max_tokens or default_max_tokens,
            "temperature": 1.0 if body.temperature is None else body.temperature,
            "top_p": 1.0 if body.top_p is None else body.top_p, "stop": stop, "seed": body.seed}


def include_usage(body: SamplingRequest) -> bool:
    return bool(body.stream and body.stream_options and body.stream_options.include_usage)


def new_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"


def finish_reason(value: Any) -> str:
    """OpenAI's reasons are stop and length; anything else the process says (cancelled…) ended the text too."""
    return value if value in FINISH_REASONS else "stop"


def usage_of(raw: Any) -> TokenUsage:
    raw = raw if isinstance(raw, dict) else {}
    prompt, completion = int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion,
                      total_tokens=int(raw.get("total_tokens") or prompt + completion))


def chat_completion(result: dict[str, Any], model: str) -> ChatCompletionPublic:
    """A whole ``chat.completion`` from the process's ``{"text", "finish_reason", "usage"}``."""
    choice = ChatChoice(message=AssistantMessage(content=str(result.get("text") or "")),
                        finish_reason=finish_reason(result.get("finish_reason")))
    return ChatCompletionPublic(id=new_id(True), created=int(time.time()), model=model, choices=[choice],
                                usage=usage_of(result.get("usage")))


def text_completion(result: dict[str, Any], model: str) -> CompletionPublic:
    """A whole ``text_completion`` from the process's ``{"text", "finish_reason", "usage"}``."""
    choice = CompletionChoice(text=str(result.get("text") or ""), finish_reason=finish_reason(result.get("finish_reason")))
    return CompletionPublic(id=new_id(False), created=int(time.time()), model=model, choices=[choice],
                            usage=usage_of(result.get("usage")))


class ChunkMaker:
    """The chunks of one streamed answer: same id, created and model on each."""

    def __init__(self, chat: bool, model: str, with_usage: bool) -> None:
        self.chat, self.model, self.with_usage = chat, model, with_usage
        self.id, self.created = new_id(chat), int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], usage: TokenUsage | None = None) -> dict[str, Any]:
        chunk = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "created": self.created, "model": self.model, "choices": choices}
        if self.with_usage:
            chunk["usage"] = usage.model_dump() if usage is not None else None
        return chunk

    def _choice(self, text: str | None, reason: str | None, role: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": reason}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if role:
            delta = {"role": "assistant", **delta}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}

    def opening(self) -> list[dict[str, Any]]:
        """A chat stream's first chunk says the role (with empty content), as OpenAI's does."""
        return [self._chunk([self._choice("", None, role=True)])] if self.chat else []

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk([self._choice(text, None)])

    def closing(self, reason: Any, usage: Any) -> list[dict[str, Any]]:
        """The chunk with the finish reason, then (with include_usage) the one with the usage."""
        out = [self._chunk([self._choice(None, finish_reason(reason))])]
        if self.with_usage:
            out.append(self._chunk([], usage_of(usage)))
        return out


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def stream_error(message: str, code: str = "unavailable") -> dict[str, Any]:
    """An error inside an SSE stream (the status line is long sent): the one error shape, as an event; the
    openai SDK raises it as an APIError."""
    return {"error": {"code": code, "message": message, "param": None}}


async def sse_from_ndjson(lines: AsyncIterator[str], maker: ChunkMaker) -> AsyncIterator[str]:
    """The process's NDJSON lines as OpenAI's SSE events: ``data: [DONE]`` after the finish chunk; a stream
    that breaks off or reports an error ends with an error event and no ``[DONE]``, so no client mistakes a
    cut-off answer for a whole one."""
    for chunk in maker.opening():
        yield sse(chunk)
    async for line in lines:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            yield sse(stream_error("the inference process sent a malformed line", "upstream_error"))
            return
        if not isinstance(msg, dict) or "error" in msg:
            err = msg.get("error") if isinstance(msg, dict) else None
            yield sse({"error": err} if isinstance(err, dict) else stream_error("the inference process failed"))
            return
        if msg.get("text"):
            yield sse(maker.piece(str(msg["text"])))
        if "finish_reason" in msg:
            for chunk in maker.closing(msg.get("finish_reason"), msg.get("usage")):
                yield sse(chunk)
            yield DONE
            return
    yield sse(stream_error("the inference process ended the stream early"))
