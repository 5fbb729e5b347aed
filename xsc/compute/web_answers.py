"""What HTTP asks of a web function's answer once its CGI head is read (RFC 9110), whatever the function wrote:
its declared length checked, its conditional requests answered 304, and `Accept-Ranges` on what may be asked
for in ranges.  Pure."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

from ..errors import FunctionFailed

_DIGITS = re.compile(r"[0-9]{1,19}")
# what a 304 keeps of the answer it stands for (RFC 9110 15.4.5): a cache refreshes its copy with them
NOT_MODIFIED_KEEPS = frozenset({"cache-control", "content-location", "date", "etag", "expires", "last-modified",
                                "vary"})


def declared_length(value: str | None) -> int | None:
    """The `Content-Length` a function's head declares (the node frames the answer: this is only checked against
    what it writes); None without one.  One that is no length is the function's failure (502)."""
    if value is None:
        return None
    if _DIGITS.fullmatch(value.strip()) is None:
        raise FunctionFailed(f"the function's Content-Length is not a length: {value[:40]!r}")
    return int(value)


def check_length(declared: int | None, written: int) -> None:
    """A function that declared a length and wrote another failed (502): a cache in front would keep a cut answer
    as whole, or bytes past what the function meant to send."""
    if declared is not None and declared != written:
        raise FunctionFailed(f"the function declared a Content-Length of {declared:,} bytes and wrote {written:,}")


def with_ranges(status: int, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A 200's headers with `Accept-Ranges: bytes` (the node cuts any 200 answer's ranges), unless the function
    set its own."""
    if status != 200 or any(k.lower() == "accept-ranges" for k, _ in headers):
        return headers
    return [*headers, ("Accept-Ranges", "bytes")]


def not_modified(method: str, status: int, headers: list[tuple[str, str]],
                 request_headers: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """The headers of a 304 when a GET or HEAD's `If-None-Match` names the answer's ETag (weak comparison), or,
    with no `If-None-Match`, its `If-Modified-Since` is not before the answer's Last-Modified (RFC 9110 13.1.2,
    13.1.3, 13.2.2); else None."""
    if status != 200 or method not in ("GET", "HEAD"):
        return None
    if_none_match = _header(request_headers, "if-none-match")
    if if_none_match is not None:
        if not _weak_match(if_none_match, _header(headers, "etag")):
            return None
    else:
        since, modified = _date(_header(request_headers, "if-modified-since")), _date(_header(headers, "last-modified"))
        if since is None or modified is None or modified > since:
            return None
    return [(k, v) for k, v in headers if k.lower() in NOT_MODIFIED_KEEPS]


def _weak_match(listed: str, etag: str | None) -> bool:
    if listed.strip() == "*":  # any answer there is
        return True
    opaque = None if etag is None else _opaque(etag)
    return opaque is not None and any(_opaque(tag) == opaque for tag in listed.split(","))


def _opaque(tag: str) -> str | None:
    tag = tag.strip()
    tag = tag[2:] if tag.startswith("W/") else tag
    return tag if len(tag) >= 2 and tag[0] == tag[-1] == '"' else None


def _date(value: str | None):
    """An HTTP date (one that is not is no date: the condition is ignored, RFC 9110 13.1.3)."""
    if value is None:
        return None
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return date if date.tzinfo is not None else None


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)
