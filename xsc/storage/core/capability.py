"""Capabilities: `xsc:chk:<key>:<manifest hash>:<k>:<m>:<size>`.

The key and the manifest hash are unpadded lower-case base32 of 32 bytes each.
Whoever holds the capability can read the file; nothing else can.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from functools import cached_property

from ...errors import InvalidCapability
from .erasure import K, M
from ...units import is_whole_number

PREFIX = "xsc:chk:"
# A log line names a capability by its first 24 characters (its key's first 16): enough to tell files apart, too few
# to read one.  `cut_capabilities` cuts those in a text the node logs whole (a request's path).
_IN_TEXT = re.compile(r"(xsc:chk:[^:/\s]{0,16})[^/\s]*")
MAX_DIGITS = 20  # of k, m and size: 2**64 has 20
MAX_TEXT = len(PREFIX) + 2 * 52 + 4 + 2 + MAX_DIGITS  # the longest a node makes (4 colons, k, m): 138 characters
REMOVED_AT_ONCE = 1000  # files one request removes at most (POST /v1/store/remove), as S3's DeleteObjects keys
_HINT = "a capability looks like xsc:chk:<key>:<manifest hash>:4:2:<size>, as printed by `xsc store put`"


def cut_capabilities(text: str) -> str:
    """`text` with each capability in it cut to its first 24 characters and an ellipsis."""
    return _IN_TEXT.sub(lambda m: m.group(1) + "…", text)


def _unb32(text: str, what: str) -> bytes:
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise InvalidCapability(f"the capability's {what} is not base32", hint=_HINT) from None
    if len(raw) != 32:
        raise InvalidCapability(f"the capability's {what} is truncated or too long", hint=_HINT)
    return raw


@dataclass(frozen=True)
class Capability:
    key: bytes
    manifest_hash: bytes
    size: int
    k: int = K
    m: int = M

    def __str__(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        """The capability as users hold it (made once: a put writes it in its record and answers it)."""
        from ...codec import base32  # here: xsc.codec loads orjson and json, which a get's parse does without

        return f"{PREFIX}{base32(self.key)}:{base32(self.manifest_hash)}:{self.k}:{self.m}:{self.size}"

    @property
    def storage_index(self) -> bytes:
        # Imported here: `xsc store get` parses its capability before the request, and starts without hashlib's
        # OpenSSL (~2 ms).
        from .crypto import storage_index

        return storage_index(self.key)

    @classmethod
    def parse(cls, text: str) -> "Capability":
        text = text.strip()
        if not text.startswith(PREFIX):
            raise InvalidCapability(f"not an xsc capability: {text[:40]!r}", hint=_HINT)
        fields = text[len(PREFIX):].split(":")
        if len(fields) != 5:
            raise InvalidCapability(f"a capability has 7 fields separated by ':', this has {len(fields) + 2}",
                                    hint=_HINT)
        key_text, hash_text, k_text, m_text, size_text = fields
        key = _unb32(key_text, "key")
        digest = _unb32(hash_text, "manifest hash")
        for name, digits in (("k", k_text), ("m", m_text), ("size", size_text)):
            # Counted before int() reads them: no file, nor k or m, has more digits than a 64-bit count.
            if digits.isascii() and digits.isdigit() and len(digits) > MAX_DIGITS:
                raise InvalidCapability(f"the capability's {name} has {len(digits):,} digits: too large for any "
                                        "file, so this is not a capability a node made", hint=_HINT)
        if not (is_whole_number(k_text) and is_whole_number(m_text) and is_whole_number(size_text)):
            raise InvalidCapability("the capability's k, m and size must be whole numbers", hint=_HINT)
        k, m, size = int(k_text), int(m_text), int(size_text)
        if (k, m) != (K, M):
            # Made by a node that codes files otherwise, or its k and m mistyped: either way this node cannot read it.
            raise InvalidCapability(f"this node stores RS(k={K}, m={M}) files; the capability says k={k}, m={m}",
                                    hint=f"read it on a node that stores RS(k={k}, m={m}) files, or copy it again: "
                                         f"this node's capabilities end in :{K}:{M}:<size>")
        return cls(key=key, manifest_hash=digest, size=size, k=k, m=m)
