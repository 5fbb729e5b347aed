"""ListObjects (V2 and V1) and ListMultipartUploads over any ordered key source: prefix, delimiter, common
prefixes, continuation.

Pure.  Keys sort as S3 sorts them, by their UTF-8 bytes.  `scan(start)` yields (key, object) for every
key whose UTF-8 bytes are >= `start`, in order; a common prefix is rolled up by seeking past all of its
keys at once (`prefix + b"\\xff"`: 0xFF never occurs in UTF-8), so a listing with a delimiter costs one
seek per common prefix, not one step per key under it.

A page's `next` is the position to resume from (base64 of the start bytes).  What the node's user API (its `start`
and `next`) and an S3 client are given is a `Tokens` token: that position with a MAC binding it to its listing (the
bucket, prefix and delimiter; a user's buckets and prefix), under a key of the data dir the node and its front share.  It is
opaque to clients, stateless on the server, stable across writes (a resumed listing never repeats a key) and across
restarts of the front; one altered, forged, or given for another listing is refused as S3 refuses it (InvalidArgument,
"The continuation token provided is incorrect").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
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


class Tokens:
    """Continuation tokens bound to their listing (module docstring): `token(position, *listing)` gives one,
    `position(token, *listing)` takes it back, or refuses it."""

    MAC_BYTES = 16

    def __init__(self, key: bytes) -> None:
        self._key = key

    def token(self, position: bytes, *listing: str) -> str:
        return base64.urlsafe_b64encode(position + self._mac(position, listing)).decode()

    def position(self, token: str, *listing: str) -> bytes:
        """Where the listing `token` was given for resumes; S3's refusal of a token it did not give this listing."""
        try:
            raw = base64.b64decode(token.encode(), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        position, mac = raw[:-self.MAC_BYTES], raw[-self.MAC_BYTES:]
        if len(raw) < self.MAC_BYTES or not hmac.compare_digest(mac, self._mac(position, listing)):
            # S3's words, and its element naming the argument; the hint is the front's (a client shows <Message>)
            raise S3Error("The continuation token provided is incorrect", s3_code="InvalidArgument", status=400,
                          hint="list again without it: a token goes on only the listing that gave it (its bucket, "
                               "prefix and delimiter)", ArgumentName="continuation-token")
        return position

    def resume(self, token: str | None, *listing: str) -> bytes:
        """Where a page of `listing` resumes (the user API's `start`, a token as the front gives S3 clients): from
        its beginning without one; refused as `position` refuses one forged or given for another listing."""
        return self.position(token, *listing) if token else b""

    def bound(self, page: dict, *listing: str) -> dict:
        """`page` (list_page's) with its `next` a token bound to `listing`, as `token` makes them."""
        return {**page, "next": self.token(decode_token(page["next"]), *listing)} if page["truncated"] else page

    def _mac(self, position: bytes, listing: tuple[str, ...]) -> bytes:
        # Each field with its length first: no two listings (a prefix that ends where a delimiter begins) sign alike.
        fields = [part.encode("utf-8", "surrogatepass") for part in listing] + [position]
        message = b"".join(struct.pack(">I", len(f)) + f for f in fields)
        return hmac.new(self._key, message, hashlib.sha256).digest()[:self.MAC_BYTES]


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
