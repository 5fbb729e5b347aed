"""Freed memory given back to the system, and malloc's thresholds for a node's buffers.

glibc's malloc keeps the pages a process freed for its next allocations (in each of its arenas, and below the top of
its main heap), so a node whose memory churns (TLS handshakes, peers' messages parsed and dropped) stays as large as
its busiest moment; `malloc_trim(0)` hands every free page back.  `HeapTrim` does that every TRIM_EVERY seconds;
where the C library is not glibc it does nothing.

`set_malloc_thresholds` (once, as a node or the S3 front starts) fixes two of glibc's thresholds:
- buffers of MMAP_THRESHOLD and more are mapped on their own and given back as soon as they are freed.  By default
  glibc raises that threshold to the size of the largest buffer freed so far (up to 32 MiB): after a few 16 MiB
  bodies, later ones come from the heap and stay in the process once freed (a stranger's four 16 MiB segment bodies
  left a holder 65 MiB larger for good);
- free memory at the top of the heap is given back by itself only past KEEP_FREE_UP_TO.  Fixing the first
  threshold freezes this one at glibc's 128 KiB: the heap top would be given back as soon as that much of it is
  free, and a segment's blocks (256 KiB each, made and freed on the pool's threads) would fault in their pages
  afresh, a fault and the zeroing of a page per 4 KiB (14,000 faults for 64 segments' blocks encoded and decoded on
  two threads, 3 with it kept: tests/test_heap.py), a large part of a node's CPU on a put.  What stays free goes
  back at the next trim."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any, Callable

from .tasks import periodic

TRIM_EVERY = 30.0  # seconds; a trim of a node's heap takes well under a millisecond
MMAP_THRESHOLD = 1024 * 1024  # buffers this large and larger are mapped on their own (M_MMAP_THRESHOLD)
# Free memory at the heap's top is given back by itself past this (M_TRIM_THRESHOLD): room for the blocks of the
# segments in flight, not for a stranger's bodies too (64 MiB kept four 16 MiB bodies' chunks in a holder until the
# next trim: tests/node/test_collector.py).
KEEP_FREE_UP_TO = 16 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@functools.cache  # find_library runs `ldconfig -p` in a child process each call, and every get passed on trims
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    return getattr(_libc(), "malloc_trim", None)  # not glibc: nothing to trim


def give_back() -> None:
    """Every free page handed back to the system now (malloc_trim(0)); nothing where the C library is not glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def set_malloc_thresholds() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD and its trim threshold at KEEP_FREE_UP_TO (module docstring);
    False where the C library is not glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_UP_TO))


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
