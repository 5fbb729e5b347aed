"""The headers an object keeps and gives back, and the conditions a read or a copy is made under.  Pure.

- User metadata (`x-amz-meta-*`) and the stored headers (Cache-Control, Content-Disposition, Content-Encoding
  but aws-chunked, Content-Language, Expires) are kept as text.  A value's bytes are read as their sender
  meant them: UTF-8, or Latin-1 when they are not UTF-8 (what Python's http.client, and so boto3, sends).
  Values that are not printable ASCII go back RFC 2047 encoded (`=?UTF-8?Q?...?=`), as S3 returns them.
- Conditions follow S3's rules: If-Match decides and If-Unmodified-Since is not looked at when it is
  given; If-None-Match decides and If-Modified-Since is not looked at when it is given.  A read answers
  412 PreconditionFailed or 304 Not Modified; a copy (`x-amz-copy-source-if-*`) answers 412 for both.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Mapping

from ...errors import S3Error

META_PREFIX = "x-amz-meta-"
STORED = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires")
CHECKSUM_PREFIX = "x-amz-checksum-"  # the body's checksum (checksums.py), kept beside the stored headers
# The stored headers of one object, all together, with room left for its checksum within the index's bound.
MAX_STORED_BYTES = 8192 - 128
_Q_SAFE = frozenset(b"!*+-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def text_of(value: str) -> str:
    """A header value as its sender meant it.  aiohttp reads header bytes as UTF-8 and keeps bytes that are
    not as surrogates: those were Latin-1."""
    try:
        value.encode()
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")


def wire(value: str) -> str:
    """A stored value as a response header: printable ASCII as it is, anything else RFC 2047 encoded."""
    if all(" " <= c <= "~" for c in value):
        return value
    encoded = "".join(chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in value.encode())
    return f"=?UTF-8?Q?{encoded}?="


def metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's x-amz-meta-* headers: {name without the prefix, lower case: value}."""
    return {k.lower()[len(META_PREFIX):]: text_of(v) for k, v in headers.items() if k.lower().startswith(META_PREFIX)}


def stored(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers an object keeps from its PutObject, CopyObject (REPLACE) or CreateMultipartUpload."""
    kept = {}
    for name in STORED:
        value = headers.get(name)
        if value is None:
            continue
        if name == "Content-Encoding":  # aws-chunked is how the body was sent, not what it is
            value = ",".join(t.strip() for t in value.split(",") if t.strip() and t.strip().lower() != "aws-chunked")
            if not value:
                continue
        kept[name] = text_of(value)
    size = sum(len(k) + len(v.encode()) for k, v in kept.items())
    if size > MAX_STORED_BYTES:
        raise S3Error(f"the object's stored headers are at most {MAX_STORED_BYTES} bytes, got {size}",
                      s3_code="InvalidArgument", status=400)
    return kept


def response_headers(record: Mapping) -> dict[str, str]:
    """An object's metadata and stored headers, as GetObject and HeadObject send them (its checksum only when asked
    for: checksum_headers)."""
    out = {name: wire(value) for name, value in (record.get("headers") or {}).items()
           if not name.startswith(CHECKSUM_PREFIX)}
    out.update({META_PREFIX + k: wire(v) for k, v in (record.get("metadata") or {}).items()})
    return out


def checksum_headers(record: Mapping) -> dict[str, str]:
    """The checksum an object was stored with, as a GetObject or HeadObject that asks for it is answered: its type
    is kept only for a multipart object's COMPOSITE one (a checksum of its parts' checksums)."""
    found = checksum_of(record)
    return {"x-amz-checksum-type": "FULL_OBJECT", **found} if found else {}


def checksum_of(record: Mapping) -> dict[str, str]:
    """The checksum an object was stored with, as its stored headers (x-amz-checksum-ALG, and x-amz-checksum-type
    where it is COMPOSITE; none: {})."""
    return {name: value for name, value in (record.get("headers") or {}).items() if name.startswith(CHECKSUM_PREFIX)}


def _date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # S3 ignores a date it cannot read


def _matches(text: str, etag: str) -> bool:
    return text.strip() == "*" or etag in [t.strip().strip('"') for t in text.split(",")]


def _failed(what: str) -> S3Error:
    return S3Error(f"the object does not meet {what}", s3_code="PreconditionFailed", status=412, condition=what)


def read_condition(headers: Mapping[str, str], etag: str, modified: float) -> int | None:
    """304 when a GetObject/HeadObject is not to be answered with the object, None when it is; raises 412."""
    stamp = int(modified)  # Last-Modified is sent in whole seconds, and compared as sent
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _matches(if_match, etag):
            raise _failed("If-Match")
    else:
        since = _date(headers.get("If-Unmodified-Since"))
        if since is not None and stamp > since:
            raise _failed("If-Unmodified-Since")
    none_match = headers.get("If-None-Match")
    if none_match is not None:
        return 304 if _matches(none_match, etag) else None
    since = _date(headers.get("If-Modified-Since"))
    return 304 if since is not None and stamp <= since else None


def write_condition(headers: Mapping[str, str], current: Mapping | None) -> dict | None:
    """The condition a PutObject is written under ({"if_none_match": "*"} or {"if_match": ETAG}, for the index to
    check again as it records it), or None; raises 412 (or 404 for If-Match with no object) when it does not hold of
    `current`, the object there now."""
    if headers.get("If-None-Match") is not None:
        if current is not None:
            raise _failed("If-None-Match")
        return {"if_none_match": "*"}
    if_match = headers.get("If-Match")
    if if_match is None:
        return None
    etag = if_match.strip().strip('"')
    if current is None:
        raise S3Error("If-Match names an object that does not exist", s3_code="NoSuchKey", status=404)
    if current["etag"] != etag:
        raise _failed("If-Match")
    return {"if_match": etag}


def complete_condition(headers: Mapping[str, str]) -> dict | None:
    """The condition a CompleteMultipartUpload asks the index to judge as it makes the object, or None."""
    if headers.get("If-None-Match") is not None:
        return {"if_none_match": "*"}
    if_match = headers.get("If-Match")
    return None if if_match is None else {"if_match": if_match.strip().strip('"')}


def copy_condition(headers: Mapping[str, str], etag: str, modified: float) -> None:
    """Raise 412 when a CopyObject's x-amz-copy-source-if-* conditions do not hold of its source."""
    stamp = int(modified)
    prefix = "x-amz-copy-source-if-"
    if_match = headers.get(prefix + "match")
    if if_match is not None:
        if not _matches(if_match, etag):
            raise _failed(prefix + "match")
    else:
        since = _date(headers.get(prefix + "unmodified-since"))
        if since is not None and stamp > since:
            raise _failed(prefix + "unmodified-since")
    none_match = headers.get(prefix + "none-match")
    if none_match is not None:
        if _matches(none_match, etag):
            raise _failed(prefix + "none-match")
        return
    since = _date(headers.get(prefix + "modified-since"))
    if since is not None and stamp <= since:
        raise _failed(prefix + "modified-since")
