"""HTTP byte ranges (RFC 9110 §14): which part of an artifact a ``Range`` header asks for.

One range per request — what resuming a download needs. Anything this parser does not understand (another
unit, several ranges, bad syntax) is ignored and the whole artifact is sent, as the RFC allows; a range that
starts past the end is unsatisfiable (416). ``If-Range`` with an ETag other than the current one also means
"send it all": the client's partial copy is of something else.
"""

from __future__ import annotations

import re

SINGLE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    """The range lies wholly past the end of the representation: answer 416 with ``bytes */size``."""


def byte_range(header: str | None, size: int, if_range: str | None = None,
               etag: str | None = None) -> tuple[int, int] | None:
    """The half-open span [start, stop) to send, or None for the whole representation."""
    if header is None or (if_range is not None and if_range.strip() != etag):
        return None
    m = SINGLE.match(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable(header)
        return max(size - suffix, 0), size
    start = int(first)
    if last != "" and int(last) < start:  # last-pos before first-pos: invalid, so ignored
        return None
    if start >= size:
        raise Unsatisfiable(header)
    return start, size if last == "" else min(int(last) + 1, size)
