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
        suffix = _offset(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"the range {header.strip()!r} selects no byte of {size}", size=size)
        return max(0, size - suffix), size - 1
    first = _offset(first_text)
    last = _offset(last_text) if last_text else max(first, size - 1)
    if last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable(f"the range {header.strip()!r} starts past the end ({size} bytes)", size=size)
    return first, min(last, size - 1)


def _offset(digits: str) -> int:
    """A byte offset's digits as a number, one past any file's size (PAST_ANY) for more digits than a size has:
    int() of thousands of digits raises, and a header holds 8,190 bytes."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else PAST_ANY


PAST_ANY = 2**63  # more than any file holds (a size is a signed 64-bit number)


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"
