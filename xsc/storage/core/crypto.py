"""Per-file keys, segment encryption (AES-256-GCM) and the storage index.

Each file gets a fresh random 256-bit key, so (key, nonce) pairs never repeat
across files; within a file the 96-bit nonce is the segment index, so no nonce
is ever used twice under one key.  The GCM tag (16 bytes) follows each
ciphertext segment and binds it to its position.
"""

from __future__ import annotations

import hashlib
import os
import struct

from ...errors import IntegrityError

KEY_BYTES = 32
TAG_BYTES = 16
_STORAGE_INDEX_TAG = b"xsc:storage-index:v1:"


def new_key() -> bytes:
    """A fresh file key from OpenSSL's CSPRNG (seeded from the OS, and again in a forked child).  Not os.urandom:
    its system call releases the GIL, and a put's event loop, busy with other puts, then waits for another thread
    to give it back.  ssl is imported at the first key: what parses a capability needs none."""
    from ssl import RAND_bytes

    return RAND_bytes(KEY_BYTES)


def storage_index(key: bytes) -> bytes:
    """A tagged hash of the key: what peers see.  It reveals neither the key nor links files."""
    return hashlib.sha256(_STORAGE_INDEX_TAG + key).digest()


def _nonce(segment: int) -> bytes:
    return struct.pack(">4xQ", segment)


class SegmentCipher:
    def __init__(self, key: bytes) -> None:
        # Imported here, once a cipher is made: what parses a capability (the CLI, before each store command)
        # needs no cipher.
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._invalid_tag = InvalidTag

    def encrypt(self, segment: int, plaintext: bytes) -> bytes:
        return self._aead.encrypt(_nonce(segment), plaintext, None)

    def decrypt(self, segment: int, ciphertext: bytes) -> bytes:
        try:
            return self._aead.decrypt(_nonce(segment), ciphertext, None)
        except self._invalid_tag:
            raise IntegrityError(f"segment {segment} failed authentication") from None
