"""Freed memory given back to the system.  glibc's malloc keeps the pages a process freed for its next allocations
(in each of its arenas, and below the top of its main heap), so a node whose memory churns (TLS handshakes, peers'
messages parsed and dropped) stays as large as its busiest moment; `malloc_trim(0)` hands every free page back.
`HeapTrim` does that every TRIM_EVERY seconds; where the C library is not glibc it does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Callable

from .tasks import periodic

TRIM_EVERY = 30.0  # seconds; a trim of a node's heap takes well under a millisecond


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


class HeapTrim:
    """The node's loop that returns its freed memory to the system (see the module docstring)."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        return {"heap-trim": periodic("heap-trim", TRIM_EVERY, self.trim)} if self._trim is not None else {}

    async def trim(self) -> None:
        self._trim(0)
