"""Structured JSON logs, one object a line (no secrets: keys never reach a log call)."""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(time.time(), 3), "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        for key in ("job_id", "status", "path", "method", "status_code", "duration_ms", "supervised", "pid",
                    "exit_code", "restart_in_seconds"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("sparsetune")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
