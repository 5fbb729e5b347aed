"""What HTTP asks of a web function's answer once its CGI head is read (RFC 9110), whatever the function wrote:
its declared length checked, its conditional requests answered 304 or 412, and `Accept-Ranges` on what may be
asked for in ranges.  Pure."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from ..errors import FunctionFailed, PreconditionFailed

_DIGITS = re.compile(r"[0-9]{1,19}")
# each entity tag of a list, weak or not (a tag may hold a ',': a list is not split on it)
_ETAGS = re.compile(r'(W/)?("[^"]*")')
_ETAGC = re.compile("[\x21\x23-\x7e\x80-\U0010ffff]*")  # what an entity tag holds between its quotes (RFC 9110 8.8.3)
_VISIBLE = "".join(map(chr, range(0x21, 0x7F)))  # what a query keeps in a Location; the rest is percent-encoded
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


def entity_tag(value: str) -> str | None:
    """A function's ETag as HTTP spells one (RFC 9110 8.8.3): as written when it is a quoted tag, weak or not; quoted
    when it is written bare (`v1`, `W/v1`), as many servers and frameworks write them, so that a caller who sends it
    back in quotes, as clients do, matches it; None when no quoting makes it a tag (a space, a '"' inside, nothing)."""
    value = value.strip()
    weak, tag = ("W/", value[2:]) if value.startswith("W/") else ("", value)
    if len(tag) >= 2 and tag[0] == tag[-1] == '"' and _ETAGC.fullmatch(tag[1:-1]):
        return value
    return f'{weak}"{tag}"' if tag and _ETAGC.fullmatch(tag) else None


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


def slash_location(method: str, target: str, script_name: str, query: str) -> str | None:
    """Where a GET or HEAD of a function's own path without its '/' (`/fn/NAME`) is redirected (301), its query
    kept, as static hosts redirect a directory: served there, a page's relative links (`img/cat.jpg`) would
    resolve against `/fn/`.  None for any other request (a webhook POSTing to `/fn/NAME` is served there).  The
    Location is a path, never a URL: `script_name` is the function's own (its name, and a placed one's owner,
    those of a function served here), so no path or Host a caller sends can send a browser to another site, and
    the query's bytes that could end a header line are percent-encoded."""
    if method not in ("GET", "HEAD") or not target or target.partition("?")[0].endswith("/"):
        return None
    return script_name + "/" + ("?" + quote(query.encode("utf-8", "surrogateescape"), safe=_VISIBLE) if query else "")


def conditional(method: str, status: int, headers: list[tuple[str, str]],
                request_headers: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """A GET or HEAD's preconditions judged against the validators of its function's answer, in RFC 9110 13.2.2's
    order: PreconditionFailed (412) when its `If-Match` names no tag that strongly matches the answer's ETag, or,
    with no `If-Match`, its `If-Unmodified-Since` is before the answer's Last-Modified (13.1.1, 13.1.4); else the
    headers of a 304 when its `If-None-Match` names the answer's ETag (weak comparison), or, with no
    `If-None-Match`, its `If-Modified-Since` is not before the answer's Last-Modified (13.1.2, 13.1.3); else None.
    Only a 2xx answer is judged (13.2.1), and only a 200 is made a 304.  A request of another method is its
    function's to judge (it sees the headers as HTTP_IF_MATCH, ...): the node cannot tell what it would change."""
    if method not in ("GET", "HEAD") or not 200 <= status < 300:
        return None
    asked: dict[str, str] = {}
    for name, value in request_headers:
        if name[:3].lower() == "if-":  # a request with no condition costs this one pass
            name = name.lower()
            asked[name] = asked[name] + ", " + value if name in asked else value  # a list sent on two lines
    if not asked:
        return None
    if (if_match := asked.get("if-match")) is not None:
        if if_match.strip() != "*" and not _strong_match(if_match, _header(headers, "etag")):
            raise PreconditionFailed(f"the answer's ETag {_shown(_header(headers, 'etag'))} is none of If-Match's "
                                     f"{if_match[:200]!r}", hint="fetch it again without If-Match")
    elif (since := _date(asked.get("if-unmodified-since"))) is not None:
        modified = _date(_header(headers, "last-modified"))
        if modified is not None and modified > since:
            raise PreconditionFailed(f"the answer was modified ({_header(headers, 'last-modified')}) after "
                                     f"If-Unmodified-Since's {asked['if-unmodified-since'][:60]!r}",
                                     hint="fetch it again without If-Unmodified-Since")
    if status != 200:
        return None
    if_none_match = asked.get("if-none-match")
    if if_none_match is not None:
        if not _weak_match(if_none_match, _header(headers, "etag")):
            return None
    else:
        since, modified = _date(asked.get("if-modified-since")), _date(_header(headers, "last-modified"))
        if since is None or modified is None or modified > since:
            return None
    return [(k, v) for k, v in headers if k.lower() in NOT_MODIFIED_KEEPS]


def _weak_match(listed: str, etag: str | None) -> bool:
    if listed.strip() == "*":  # any answer there is
        return True
    opaque = None if etag is None else _opaque(etag)
    return opaque is not None and any(tag == opaque for _, tag in _ETAGS.findall(listed))


def _strong_match(listed: str, etag: str | None) -> bool:
    """Whether a listed tag is `etag`, neither of them weak (RFC 9110 8.8.3.2)."""
    etag = None if etag is None else etag.strip()
    return etag is not None and not etag.startswith("W/") and any(
        not weak and tag == etag for weak, tag in _ETAGS.findall(listed))


def _shown(etag: str | None) -> str:
    return "(none)" if etag is None else repr(etag[:200])


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
