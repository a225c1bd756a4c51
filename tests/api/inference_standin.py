"""A stand-in inference process for the API's unit tests: a real HTTP server (a thread, a real socket) speaking
the internal contract of inference/server.py, with canned answers. It is only the far edge of the API tests —
the routes, the routing, the forwarding and OpenAI's shapes are the real code; what the real inference
process generates is tested end to end elsewhere (tests/e2e).

Answers: ``generate`` yields the pieces ``["Hello", ",", " world", "!"]`` (cut at ``max_tokens``, then
finish_reason ``length``); a prompt or last message ``slow`` trickles pieces every 20 ms for a minute (a
whole answer trickles leading spaces, which JSON allows), so a test can drop the client and see the
upstream connection closed (``cut``); the base ``missing-base`` is a 404, ``needs-predict`` a 422 and
``broken-base`` a 500. ``predict`` labels each text ``pos`` or ``neg``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PIECES = ["Hello", ",", " world", "!"]
REFUSALS = {"missing-base": (404, "not_found", "no base model 'missing-base'", "model"),
            "needs-predict": (422, "invalid_request", "chat on an encoder: use /predict", "model"),
            "broken-base": (500, "internal_error", "inference failed: RuntimeError", None)}


class StandIn:
    """``StandIn(token)``; ``start()`` returns its base URL; ``requests`` lists the bodies it received;
    ``cut`` is set when a client dropped a trickled answer (its write failed)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.cut = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> str:
        self.thread.start()
        return self.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes: no chunking to write

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self._authorized():
                    self._json(200, {"models": [], "load": 0})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                standin.requests.append((self.path, body))
                if self.path == "/internal/predict":
                    return self._json(200, {"data": [_prediction(t) for t in body["texts"]]})
                refusal = REFUSALS.get(body["target"]["base"])
                if refusal:
                    status, code, message, param = refusal
                    return self._json(status, {"error": {"status": status, "code": code, "message": message,
                                                         "param": param}})
                pieces, reason = _pieces(body)
                if _text_of(body) == "slow":
                    return self._trickle(body["stream"])
                usage = {"prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)}
                if not body["stream"]:
                    return self._json(200, {"text": "".join(pieces), "finish_reason": reason, "usage": usage})
                self._start(200, "application/x-ndjson")
                for piece in pieces:
                    self._write({"text": piece})
                self._write({"finish_reason": reason, "usage": usage})

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {standin.token}":
                    return True
                self._json(401, {"error": {"status": 401, "code": "unauthorized", "message": "wrong token",
                                           "param": "Authorization"}})
                return False

            def _trickle(self, stream: bool) -> None:
                self._start(200, "application/x-ndjson" if stream else "application/json")
                try:
                    for _ in range(3000):
                        if stream:
                            self._write({"text": "."})
                        else:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        time.sleep(0.02)
                except OSError:
                    standin.cut.set()

            def _start(self, status: int, media: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.end_headers()

            def _write(self, obj: dict[str, Any]) -> None:
                self.wfile.write(json.dumps(obj).encode() + b"\n")
                self.wfile.flush()

            def _json(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _text_of(body: dict[str, Any]) -> str:
    return body.get("prompt") or (body.get("messages") or [{}])[-1].get("content", "")


def _pieces(body: dict[str, Any]) -> tuple[list[str], str]:
    limit = body["sampling"]["max_tokens"]
    return (PIECES[:limit], "length") if limit < len(PIECES) else (list(PIECES), "stop")


def _prediction(text: str) -> dict[str, Any]:
    pos = 0.9 if "good" in text else 0.2
    return {"label": "pos" if pos > 0.5 else "neg", "probabilities": {"pos": pos, "neg": round(1 - pos, 6)}}
