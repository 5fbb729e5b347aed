"""Freed memory goes back to the system (xsc/heap.py): a node does not stay as large as its busiest moment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xsc.heap import HeapTrim

MiB = 1024 * 1024


def _anonymous() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon"))


async def test_a_trim_hands_freed_pages_back() -> None:
    trim = HeapTrim()
    if not trim.loops():
        pytest.skip("not glibc: there is no malloc_trim")
    await trim.trim()
    # 2,000-byte buffers come from malloc (not Python's small-object arenas); one in eight stays alive, so the
    # freed ones leave holes of whole pages inside the heap, which malloc keeps for itself until it is trimmed.
    buffers = [bytearray(2000) for _ in range(48 * MiB // 2000)][::8]
    before = _anonymous()
    await trim.trim()
    after = _anonymous()
    del buffers  # alive until measured: the holes are between its buffers
    assert after < before - 8 * MiB


async def test_a_node_runs_the_trim(node) -> None:
    status = await (await node.get("/v1/node/status")).json()
    assert status["loops"]["heap-trim"]["running"]


# A put's and a get's work on a segment, on two threads, in a fresh process (where glibc's thresholds are its own).
_SEGMENTS = """
import os, resource, sys
from concurrent.futures import ThreadPoolExecutor
from xsc.heap import keep_large_buffers
from xsc.storage.core import erasure
from xsc.storage.core.crypto import SegmentCipher, new_key
from xsc.storage.core.merkle import block_hash
kept = keep_large_buffers() if sys.argv[1] == "kept" else True
cipher, segment = SegmentCipher(new_key()), os.urandom(1024 * 1024)
def work(index):
    blocks = erasure.encode(cipher.encrypt(index, segment))
    [block_hash(block) for block in blocks]
    cipher.decrypt(index, erasure.decode(dict(enumerate(blocks[:4])), len(segment) + 16))
with ThreadPoolExecutor(2) as pool:
    list(pool.map(work, range(8)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    list(pool.map(work, range(64)))
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _segment_faults(how: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _SEGMENTS, how], capture_output=True, text=True, check=True).stdout
    kept, faults = out.split()
    return kept == "True", int(faults)


def test_a_segments_buffers_kept_in_the_heap_reuse_its_pages() -> None:
    kept, faults = _segment_faults("kept")
    if not kept:
        pytest.skip("not glibc: there is no mallopt")
    # Mapped afresh, each segment's few 1 MiB buffers would fault in their pages: ~270 a segment (`"mapped"`).
    assert faults < 64 * 10, faults
