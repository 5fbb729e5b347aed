"""ListObjects (V2 and V1) and ListMultipartUploads over any ordered key source: prefix, delimiter, common
prefixes, continuation.

Pure.  Keys sort as S3 sorts them, by their UTF-8 bytes.  `scan(start)` yields (key, object) for every
key whose UTF-8 bytes are >= `start`, in order; a common prefix is rolled up by seeking past all of its
keys at once (`prefix + b"\\xff"`: 0xFF never occurs in UTF-8), so a listing with a delimiter costs one
seek per common prefix, not one step per key under it.

A continuation token is the position to resume from (base64 of the start bytes): opaque to clients,
stateless on the server, and stable across writes (a resumed listing never repeats a key).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Iterator

from ...errors import S3Error

Scan = Callable[[bytes], Iterator[tuple[str, Any]]]
MAX_KEYS = 1000


def after(key: str) -> bytes:
    """The first position after `key` (its bytes followed by the smallest byte)."""
    return key.encode() + b"\x00"


def past_prefix(prefix: str) -> bytes:
    """The first position after every key that starts with `prefix`."""
    return prefix.encode() + b"\xff"


def encode_token(position: bytes) -> str:
    return base64.urlsafe_b64encode(position).decode()


def decode_token(token: str) -> bytes:
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("the continuation token is not one this server gave", s3_code="InvalidArgument",
                      status=400) from None


def list_page(scan: Scan, *, prefix: str = "", delimiter: str = "", max_keys: int = MAX_KEYS,
              start: bytes = b"") -> dict:
    """One page: `contents` [(key, object)], `prefixes` [common prefix], `truncated`, `next` (the token to
    resume from when truncated), `last` (the last key or prefix returned: V1's NextMarker)."""
    contents: list[tuple[str, Any]] = []
    prefixes: list[str] = []
    position = max(prefix.encode(), start)
    truncated, last, resume = False, "", b""
    if max_keys <= 0:
        return {"contents": contents, "prefixes": prefixes, "truncated": False, "next": "", "last": ""}
    items = scan(position)
    while True:
        item = next(items, None)
        if item is None:
            break
        key, obj = item
        if not key.startswith(prefix):
            break
        if len(contents) + len(prefixes) == max_keys:
            truncated = True
            break
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[:cut + len(delimiter)]
                prefixes.append(common)
                last, resume = common, past_prefix(common)
                items = scan(resume)
                continue
        contents.append((key, obj))
        last, resume = key, after(key)
    return {"contents": contents, "prefixes": prefixes, "truncated": truncated,
            "next": encode_token(resume) if truncated else "", "last": last}


def is_common_prefix(marker: str, prefix: str, delimiter: str) -> bool:
    """Whether `marker` is a common prefix a page of this prefix and delimiter rolled up (its first delimiter past
    the prefix ends it), not a key: a key listed under `prefix` holds no delimiter past it."""
    if not delimiter or not marker.startswith(prefix):
        return False
    cut = marker.find(delimiter, len(prefix))
    return cut >= 0 and cut + len(delimiter) == len(marker)


def v1_start(marker: str, delimiter: str, prefix: str = "") -> bytes:
    """Where ListObjects V1 resumes after `marker` (a key, or a common prefix it returned)."""
    if not marker:
        return b""
    return past_prefix(marker) if is_common_prefix(marker, prefix, delimiter) else after(marker)
