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
import threading
from collections.abc import Callable, Sequence

from ...errors import IntegrityError

KEY_BYTES = 32
TAG_BYTES = 16
_BLOCK = 16  # AES's block: GCM's update_into wants that much room past what it writes
_STORAGE_INDEX_TAG = b"xsc:storage-index:v1:"
_local = threading.local()  # per thread, the buffer a segment is encrypted into (`encrypt_pieces`)


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
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._invalid_tag = InvalidTag
        aes = algorithms.AES(key)  # once: a segment's encryptor and decryptor (`*_pieces`) take it as it is
        self._gcm = lambda nonce, tag: Cipher(aes, modes.GCM(nonce, tag)).decryptor()
        self._gcm_encryptor = lambda nonce: Cipher(aes, modes.GCM(nonce)).encryptor()

    def encrypt(self, segment: int, plaintext: bytes) -> bytes:
        return self._aead.encrypt(_nonce(segment), plaintext, None)

    def encrypt_pieces(self, segment: int, pieces: Sequence[bytes | bytearray | memoryview]) -> memoryview:
        """The ciphertext (tag included) of the segment the pieces make in order, as `encrypt` gives it, without
        joining them first: written into this thread's buffer, kept from one segment to the next, and valid until
        this thread's next call, so the caller copies what it keeps (erasure.encode cuts its blocks).  A segment's
        plaintext joined, or its ciphertext returned as bytes, is a fresh buffer that glibc maps on its own
        (heap.MMAP_THRESHOLD), faulting in and zeroing each of its pages, for every segment."""
        length = sum(len(p) for p in pieces) + TAG_BYTES
        out = getattr(_local, "out", None)
        if out is None or len(out) < length + _BLOCK:  # update_into's room: a block more than it writes
            out = _local.out = memoryview(bytearray(length + _BLOCK))
        encryptor = self._gcm_encryptor(_nonce(segment))
        at = 0
        for piece in pieces:
            at += encryptor.update_into(piece, out[at:])
        encryptor.finalize()
        out[at:at + TAG_BYTES] = encryptor.tag
        return out[:at + TAG_BYTES]

    def decrypt(self, segment: int, ciphertext: bytes | Sequence[bytes | memoryview],
                buffer: Callable[[int], bytearray] | None = None) -> bytes | list[bytearray] | list[memoryview]:
        """The plaintext of a segment's ciphertext; or of the pieces it is made of (erasure.pieces: the data blocks
        as they came), decrypted piece by piece, not joined first, into a buffer of its own for each: a segment's
        ciphertext or plaintext whole is a buffer glibc maps on its own (heap.MMAP_THRESHOLD), faulting in and
        zeroing each of its pages, where a block's comes from the heap.  `buffer(n)`, if given, hands out each
        piece's buffer (n bytes at least, one its caller reuses once the piece is passed on: a fresh bytearray is
        zeroed first), and the pieces are views of those.  Nothing is returned unless the tag holds
        (IntegrityError)."""
        if not isinstance(ciphertext, (bytes, bytearray, memoryview)):
            if len(ciphertext) > 1 and len(ciphertext[-1]) >= TAG_BYTES:
                return self._decrypt_pieces(segment, ciphertext, buffer)
            ciphertext = b"".join(ciphertext)
        try:
            return self._aead.decrypt(_nonce(segment), ciphertext, None)
        except self._invalid_tag:
            raise IntegrityError(f"segment {segment} failed authentication") from None

    def _decrypt_pieces(self, segment: int, pieces: Sequence[bytes | memoryview],
                        buffer: Callable[[int], bytearray] | None) -> list[bytearray] | list[memoryview]:
        *body, last = (memoryview(p) for p in pieces)
        body.append(last[:-TAG_BYTES])
        decryptor = self._gcm(_nonce(segment), bytes(last[-TAG_BYTES:]))
        plain: list = []
        for piece in body:
            if len(piece):
                room = len(piece) + _BLOCK - 1  # update_into's room: a block more than it writes
                if buffer is None:
                    out = bytearray(room)
                    del out[decryptor.update_into(piece, out):]
                    plain.append(out)
                else:
                    out = buffer(room)
                    plain.append(memoryview(out)[:decryptor.update_into(piece, out)])
        try:
            decryptor.finalize()
        except self._invalid_tag:
            raise IntegrityError(f"segment {segment} failed authentication") from None
        return plain
