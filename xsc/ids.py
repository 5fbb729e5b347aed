"""Ids that must be unique, not secret (a provenance record's, a put's need group's, an upload's): drawn from a
generator seeded once from the OS, so that making one costs no system call (`os.urandom` releases the GIL, and
under load the event loop then waits to get it back).  Keys and nonces come from a cryptographic generator: a
file's key from OpenSSL's (storage/core/crypto.py, which keeps the GIL for the same reason), others `os.urandom`.
And the one way a command given a prefix of an id finds the id."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable

from .errors import MAX_ID_SHOWN, InvalidArgument, NotFound, shown

_RANDOM = random.Random(os.urandom(32))
# A forked child starts with a copy of this state: it is seeded again there, or parent and child would draw alike.
os.register_at_fork(after_in_child=lambda: _RANDOM.seed(os.urandom(32)))


def unique_bytes(n: int) -> bytes:
    """`n` bytes no other id of this process, or of another, is likely to repeat."""
    return _RANDOM.randbytes(n)


def unique_bits(bits: int) -> int:
    """A `bits`-bit number, as `unique_bytes`."""
    return _RANDOM.getrandbits(bits)


def one_starting_with(prefix: str, ids: Iterable[str], *, what: str, listing: str, whats: str | None = None,
                      missing: type[NotFound] = NotFound) -> str:
    """The one id of `ids` that starts with `prefix`: what every command taking an id or a prefix of one resolves
    it with.  An empty prefix, none (`missing`, hinting at `listing`, the command that lists them) or several
    (`whats`: their plural; naming each, cut a few characters past the prefix) is an error of one line."""
    if not prefix:  # every id starts with "": the one known would be named by nothing typed at all
        raise InvalidArgument(f"no id given: an empty prefix names no {what}", hint=f"see them with: {listing}")
    found = sorted({i for i in ids if i.startswith(prefix)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise missing(f"no {what} starts with {shown(prefix, MAX_ID_SHOWN)}", hint=f"see them with: {listing}")
    named = ", ".join(i[: len(prefix) + 6] + "…" for i in found[:4])
    more = f" and {len(found) - 4} more" if len(found) > 4 else ""
    raise InvalidArgument(f"{len(found)} {whats or what + 's'} start with {prefix}: {named}{more}",
                          hint="give more of the id")
