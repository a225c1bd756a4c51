"""Values Postgres can store: the checks that turn would-be database errors (a 500) into a 422 naming the field.

Python's JSON parser accepts what JSON and Postgres do not: NaN and Infinity, lone UTF-16 surrogates (which
cannot be encoded as UTF-8), and NUL (which neither ``text`` nor ``jsonb`` can hold). Nesting is bounded too,
so a free-form object such as ``metadata`` stays a small annotation rather than a recursion test.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 16


def string_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain NUL (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def check_value(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise ValueError naming the sub-path of the first value Postgres would refuse."""
    where = f" at {path}" if path else ""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels{where}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number{where}, got {value}")
    if isinstance(value, str):
        problem = string_problem(value)
        if problem:
            raise ValueError(problem + where)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_value(key, f"{path}.{key!r}" if path else repr(key), depth + 1)
            check_value(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)


def is_plausible_id(ident: str) -> bool:
    """Ids we issue are short printable ASCII; anything else cannot name a row (and must not reach the driver)."""
    return 0 < len(ident) <= 64 and ident.isascii() and ident.isprintable()
