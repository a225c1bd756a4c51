"""The four JSONL training formats, validated line by line without torch (the API validates uploads).

``prompt_completion`` {"prompt", "completion"} · ``chat`` {"messages": [{"role", "content"}, ...]} ·
``classification`` {"text", "label"} · ``multiple_choice`` {"prompt", "choices": [...], "label": int}.
One format a file, detected from the first valid object's keys; every line is checked against it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS: dict[str, tuple[str, ...]] = {
    "prompt_completion": ("prompt", "completion"),
    "chat": ("messages",),
    "classification": ("text", "label"),
    "multiple_choice": ("prompt", "choices", "label"),
}
CHAT_ROLES = ("system", "user", "assistant")
# OpenAI's chat fine-tuning format, as OpenAI documents it: a message may carry ``name`` (accepted; chat
# templates do not render it) and an assistant message ``weight`` 0 or 1 (0: no loss on that turn). Tool and
# function calling is not trained here: those fields and roles are a per-line error naming the field.
CHAT_MESSAGE_FIELDS = ("role", "content", "name", "weight")
TOOL_FIELDS = ("tool_calls", "function_call", "tools", "functions", "parallel_tool_calls", "tool_call_id")
TOOL_ROLES = ("tool", "function")
TOOLS_UNSUPPORTED = "tool and function calling is not supported: give text turns only"
MAX_ERRORS = 100
MAX_LABELS = 1000  # distinct classification labels in one file
MAX_LABEL_CHARS = 200


@dataclass
class LineError:
    line: int  # 1-based line number in the file
    field: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass
class ValidationReport:
    format: str | None
    rows: int
    errors: list[LineError] = field(default_factory=list)  # the first MAX_ERRORS
    total_errors: int = 0
    label_names: list[str] | None = None  # classification: sorted distinct labels (as strings)

    @property
    def ok(self) -> bool:
        return self.total_errors == 0 and self.rows > 0 and self.format is not None


class DataFormatError(ValueError):
    """A data file that cannot be used; ``details`` lists per-line problems (line, field, message)."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None, total: int = 0) -> None:
        super().__init__(message)
        self.details = details or []
        self.total = total or len(self.details)


def detect_format(obj: dict[str, Any]) -> str | None:
    keys = set(obj)
    if "messages" in keys:
        return "chat"
    if "choices" in keys:
        return "multiple_choice"
    if "text" in keys and "label" in keys:
        return "classification"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    return None


def _check(fmt: str, obj: dict[str, Any]) -> list[tuple[str | None, str]]:
    """Problems with one object under ``fmt``, as (field, message)."""
    problems: list[tuple[str | None, str]] = []
    for key in FORMATS[fmt]:
        if key not in obj:
            problems.append((key, "missing"))
    extra = sorted(set(obj) - set(FORMATS[fmt]))
    if extra:
        tools = extra[0] in TOOL_FIELDS and fmt == "chat"
        problems.append((extra[0], TOOLS_UNSUPPORTED if tools else f"unknown field for format {fmt}"))
    if problems:
        return problems
    if fmt == "prompt_completion":
        for key in ("prompt", "completion"):
            if not isinstance(obj[key], str):
                problems.append((key, "must be a string"))
        if isinstance(obj["completion"], str) and not obj["completion"]:
            problems.append(("completion", "must not be empty"))
    elif fmt == "classification":
        if not isinstance(obj["text"], str) or not obj["text"]:
            problems.append(("text", "must be a non-empty string"))
        label = obj["label"]
        if isinstance(label, bool) or not isinstance(label, str | int) or label == "":
            problems.append(("label", "must be a string or an integer"))
        elif len(str(label)) > MAX_LABEL_CHARS:
            problems.append(("label", f"{len(str(label))} characters, over the {MAX_LABEL_CHARS}-character limit"))
    elif fmt == "multiple_choice":
        choices = obj["choices"]
        if not isinstance(obj["prompt"], str):
            problems.append(("prompt", "must be a string"))
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            problems.append(("choices", "must be a list of at least two strings"))
        label = obj["label"]
        if isinstance(label, bool) or not isinstance(label, int):
            problems.append(("label", "must be an integer index into choices"))
        elif isinstance(choices, list) and not 0 <= label < len(choices):
            problems.append(("label", f"index {label} out of range for {len(choices)} choices"))
    elif fmt == "chat":
        return _check_chat(obj["messages"])
    return problems


def _check_message(i: int, m: Any) -> tuple[str | None, str] | None:
    """The first problem with one chat message, as (field, message), or None."""
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        return where, "must be an object with role and content"
    tools = [k for k in m if k in TOOL_FIELDS]
    if tools:
        return f"{where}.{tools[0]}", TOOLS_UNSUPPORTED
    if m.get("role") in TOOL_ROLES:
        return f"{where}.role", f"role {m['role']!r}: {TOOLS_UNSUPPORTED}"
    extra = sorted(set(m) - set(CHAT_MESSAGE_FIELDS))
    if extra or "role" not in m or "content" not in m:
        return (f"{where}.{extra[0]}" if extra else where,
                f"must be an object with role and content (and optionally {', '.join(CHAT_MESSAGE_FIELDS[2:])})")
    if m["role"] not in CHAT_ROLES:
        return f"{where}.role", f"must be one of {', '.join(CHAT_ROLES)}"
    if not isinstance(m["content"], str):
        return f"{where}.content", "must be a string"
    if "name" in m and not isinstance(m["name"], str):
        return f"{where}.name", "must be a string"
    if "weight" in m:
        if m["role"] != "assistant":
            return f"{where}.weight", "only assistant messages take a weight"
        if isinstance(m["weight"], bool) or m["weight"] not in (0, 1):
            return f"{where}.weight", "must be 0 or 1"
    return None


def _check_chat(msgs: Any) -> list[tuple[str | None, str]]:
    """A chat row's problems: each message's first, then whether any assistant turn is there to learn from."""
    if not isinstance(msgs, list) or not msgs:
        return [("messages", "must be a non-empty list")]
    problems = [p for i, m in enumerate(msgs) if (p := _check_message(i, m)) is not None]
    if not problems and not any(is_trained_turn(m) for m in msgs):
        problems.append(("messages", "needs at least one assistant turn with weight 1 (or no weight) to learn from"))
    return problems


def is_trained_turn(message: dict[str, Any]) -> bool:
    """An assistant turn the loss is computed on: OpenAI's ``weight`` 0 turns are context only."""
    return message["role"] == "assistant" and message.get("weight", 1) != 0


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The messages as a chat template is given them: role and content only (``weight`` is ours to read, and
    templates differ on ``name``, so it is left out for the same rendering everywhere)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _text_problem(value: Any, path: str = "") -> tuple[str | None, str] | None:
    """The first string (key or value) in ``value`` that cannot be stored or encoded: NUL, or a lone UTF-16
    surrogate (JSON's "\\ud800" parses to one; it has no UTF-8 form). As (field, message), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return path or None, "must not contain NUL (\\u0000)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or None, "must be valid Unicode (no lone surrogates such as \\ud800)"
    elif isinstance(value, dict):
        for key, item in value.items():
            if _text_problem(key) is not None:
                return path or None, "a field name contains NUL or a lone surrogate"
            found = _text_problem(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _text_problem(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def iter_lines(fh: Any, max_line_bytes: int) -> Iterator[bytes | int]:
    """The lines of a binary file, each read with at most ``max_line_bytes + 1`` bytes in memory: a longer
    line is skipped to its end and yielded as its size (an int) for ``validate_lines`` to report."""
    while True:
        line = fh.readline(max_line_bytes + 2)  # room for the content and "\r\n"
        if not line:
            return
        if line.endswith(b"\n") or len(line) < max_line_bytes + 2:
            yield line  # whole (validate_lines measures it without its line break)
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = fh.readline(1024 * 1024)
            if not line:
                break
            size += len(line)
        yield size


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]}… is out of range")
    return value


def parse_line(text: str) -> Any:
    """Strict JSON: NaN, Infinity and numbers beyond a double are refused, as a JSON parser elsewhere would."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


_BLANK = object()  # a line with nothing on it: skipped, not an error


def _line_object(raw: bytes | str | int, max_line_bytes: int | None) -> tuple[Any, str | None]:
    """One line as a parsed JSON object, or (None, why it is refused), or (_BLANK, None) for an empty line:
    the checks a line must pass before its format is looked at, in the order a user would fix them."""
    if isinstance(raw, int):  # iter_lines: a line over the limit, skipped unread
        return None, f"line is {raw} bytes, over the {max_line_bytes}-byte limit"
    if max_line_bytes is not None:
        size = len(raw.rstrip(b"\r\n")) if isinstance(raw, bytes) else len(
            raw.rstrip("\r\n").encode("utf-8", "surrogatepass"))
        if size > max_line_bytes:
            return None, f"line is {size} bytes, over the {max_line_bytes}-byte limit"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not valid UTF-8"
    if raw.startswith("\ufeff"):
        return None, "starts with a byte order mark; save the file as UTF-8 without BOM"
    text = raw.strip()
    if not text:
        return _BLANK, None
    try:
        obj = parse_line(text)
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, out-of-range or over-long numbers
        return None, f"not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]})"
    if not isinstance(obj, dict):
        return None, "must be a JSON object"
    return obj, None


def _label_order(label: str) -> tuple[bool, int, str]:
    """Integer labels first, in numeric order, then the others alphabetically. An integer is ASCII digits
    with at most one minus sign: "--5" or "²" pass ``str.isdigit`` but ``int()`` refuses them."""
    numeric = re.fullmatch(r"-?[0-9]+", label) is not None
    return (not numeric, int(label) if numeric else 0, label)


def validate_lines(lines: Iterable[bytes | str | int], max_errors: int = MAX_ERRORS,
                   max_line_bytes: int | None = None, keep_rows: bool = True) -> tuple[ValidationReport, list[dict]]:
    """Validate JSONL lines (a list, or ``iter_lines`` of a file); returns the report and the parsed rows
    (valid ones only; none kept with ``keep_rows=False``, so a file of any size validates in flat memory)."""
    fmt: str | None = None
    rows: list[dict[str, Any]] = []
    count = 0
    errors: list[LineError] = []
    total = 0
    labels: set[str] = set()

    def err(line: int, fld: str | None, msg: str) -> None:
        nonlocal total
        total += 1
        if len(errors) < max_errors:
            errors.append(LineError(line, fld, msg))

    for number, raw in enumerate(lines, start=1):
        obj, refused = _line_object(raw, max_line_bytes)
        if refused is not None:
            err(number, None, refused)
            continue
        if obj is _BLANK:
            continue
        text_problem = _text_problem(obj)
        if text_problem is not None:
            err(number, *text_problem)
            continue
        line_fmt = detect_format(obj)
        if fmt is None:
            if line_fmt is None:
                err(number, None, "cannot tell the format: expected keys of one of " + ", ".join(
                    f"{k} {{{', '.join(v)}}}" for k, v in FORMATS.items()))
                continue
            fmt = line_fmt
        if line_fmt not in (fmt, None):
            problems = [(None, f"looks like {line_fmt}, but the file is {fmt} (one format a file)")]
        else:
            problems = _check(fmt, obj)
        for fld, msg in problems:
            err(number, fld, msg)
        if not problems and fmt == "classification" and str(obj["label"]) not in labels:
            if len(labels) >= MAX_LABELS:
                problems = [("label", f"more than {MAX_LABELS} distinct labels in one file")]
                err(number, *problems[0])
            else:
                labels.add(str(obj["label"]))
        if not problems:
            count += 1
            if keep_rows:
                rows.append(obj)
    report = ValidationReport(fmt, count, errors, total)
    if fmt == "classification":
        report.label_names = sorted(labels, key=_label_order)
    return report, rows


def read_jsonl(path: str | Path) -> tuple[str, list[dict[str, Any]], list[str] | None]:
    """Read and validate a data file; raises DataFormatError (with per-line details) if anything is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"data: no such file {path}")
    with path.open("rb") as fh:
        report, rows = validate_lines(fh.readlines())
    if report.total_errors:
        first = report.errors[0]
        raise DataFormatError(
            f"data: {path.name} line {first.line}"
            + (f" field {first.field!r}" if first.field else "")
            + f": {first.message} ({report.total_errors} problem(s) in all)",
            [e.to_dict() for e in report.errors], report.total_errors,
        )
    if not rows:
        raise DataFormatError(f"data: {path.name} has no rows")
    assert report.format is not None
    return report.format, rows, report.label_names
