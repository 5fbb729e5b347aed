"""HTTP byte ranges (RFC 9110 section 14) over a file of known size.  Pure."""

from __future__ import annotations

import re

from ...errors import RangeNotSatisfiable

# ASCII digits: int() reads any script's, where a cache in front of the node reads none but ASCII
_RANGE = re.compile(r"^[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a single `Range: bytes=...` over `size` bytes; None for no range
    (no header, a malformed one or several ranges: the whole file is sent, as RFC 9110 allows).
    RangeNotSatisfiable when the range starts past the end (or asks for the last 0 bytes)."""
    if not header:
        return None
    match = _RANGE.match(header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first_text, last_text = match.groups()
    if not first_text:
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"the range {header.strip()!r} selects no byte of {size}", size=size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else max(first, size - 1)
    if last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable(f"the range {header.strip()!r} starts past the end ({size} bytes)", size=size)
    return first, min(last, size - 1)


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"
