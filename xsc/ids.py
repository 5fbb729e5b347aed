"""Ids that must be unique, not secret (a provenance record's, a put's need group's, an upload's): drawn from a
generator seeded once from the OS, so that making one costs no system call (`os.urandom` releases the GIL, and
under load the event loop then waits to get it back).  Keys and nonces come from a cryptographic generator: a
file's key from OpenSSL's (storage/core/crypto.py, which keeps the GIL for the same reason), others `os.urandom`."""

from __future__ import annotations

import os
import random

_RANDOM = random.Random(os.urandom(32))


def unique_bytes(n: int) -> bytes:
    """`n` bytes no other id of this process, or of another, is likely to repeat."""
    return _RANDOM.randbytes(n)


def unique_bits(bits: int) -> int:
    """A `bits`-bit number, as `unique_bytes`."""
    return _RANDOM.getrandbits(bits)
