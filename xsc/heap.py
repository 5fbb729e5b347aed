"""Freed memory given back to the system.  glibc's malloc keeps the pages a process freed for its next allocations
(in each of its arenas, and below the top of its main heap), so a node whose memory churns (TLS handshakes, peers'
messages parsed and dropped) stays as large as its busiest moment; `malloc_trim(0)` hands every free page back.
`HeapTrim` does that every TRIM_EVERY seconds; where the C library is not glibc it does nothing.

It also keeps large buffers in the heap while the node works (`keep_large_buffers`).  By itself glibc maps large
allocations afresh and unmaps them when freed (past a threshold it moves as such buffers are freed), and shrinks a
heap as soon as a little memory at its top is free: a segment's buffers (1 MiB and more: the segment, its ciphertext,
its blocks), made and freed on the pool's threads, then cost a page fault per 4 KiB and the zeroing of each page,
15,000 faults for 64 segments encoded and decoded on two threads (tests/test_heap.py), about a fifth of the node's
CPU on a 256 MiB put.  Kept in the heap, they reuse the pages the segment before freed; what stays free goes back at
the next trim."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Callable

from .tasks import periodic

TRIM_EVERY = 30.0  # seconds; a trim of a node's heap takes well under a millisecond
# Allocations below this come from the heap (glibc's M_MMAP_THRESHOLD): a holder's share batch (16 MiB) included.
HEAP_BUFFERS_UP_TO = 16 * 1024 * 1024
# Free memory at the top of the heap is given back by itself only past this (M_TRIM_THRESHOLD); the trim every
# TRIM_EVERY seconds gives back the rest.
KEEP_FREE_UP_TO = 64 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    return getattr(_libc(), "malloc_trim", None)  # not glibc: nothing to trim


def keep_large_buffers() -> bool:
    """Serve buffers up to HEAP_BUFFERS_UP_TO from the heap, and keep up to KEEP_FREE_UP_TO free at its top between
    trims (module docstring); False where the C library is not glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BUFFERS_UP_TO) and mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_UP_TO))


class HeapTrim:
    """The node's loop that returns its freed memory to the system (see the module docstring)."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()

    def start(self) -> None:
        if self._trim is not None:
            keep_large_buffers()

    def close(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        return {"heap-trim": periodic("heap-trim", TRIM_EVERY, self.trim)} if self._trim is not None else {}

    async def trim(self) -> None:
        self._trim(0)
