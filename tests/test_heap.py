"""Freed memory goes back to the system (xsc/heap.py): a node does not stay as large as its busiest moment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xsc.heap import HeapTrim, give_back

MiB = 1024 * 1024


def _anonymous() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon"))


@pytest.mark.parametrize("way", ["the trim loop's turn", "give_back"])
async def test_freed_pages_are_handed_back(way: str) -> None:
    trim = HeapTrim()
    if not trim.loops():
        pytest.skip("not glibc: there is no malloc_trim")

    async def hand_back() -> None:
        if way == "give_back":
            give_back()
        else:
            await trim.trim()

    await hand_back()
    # 2,000-byte buffers come from malloc (not Python's small-object arenas); one in eight stays alive, so the
    # freed ones leave holes of whole pages inside the heap, which malloc keeps for itself until it is trimmed.
    buffers = [bytearray(2000) for _ in range(48 * MiB // 2000)][::8]
    before = _anonymous()
    await hand_back()
    after = _anonymous()
    del buffers  # alive until measured: the holes are between its buffers
    assert after < before - 8 * MiB


async def test_a_node_runs_the_trim(node) -> None:
    status = await (await node.get("/v1/node/status")).json()
    assert status["loops"]["heap-trim"]["running"]


# Buffers under the mmap threshold made and freed on two threads (a segment's blocks encoded, hashed and decoded
# back), in a fresh process (where glibc's thresholds are its own): with the node's thresholds (`node`), or with
# only its mmap threshold fixed (`mapped`: the trim threshold is then frozen at glibc's 128 KiB).
_SEGMENTS = """
import ctypes, os, resource, sys
from concurrent.futures import ThreadPoolExecutor
from xsc import heap
from xsc.storage.core import erasure
from xsc.storage.core.merkle import block_hash
if sys.argv[1] == "node":
    fixed = heap.set_malloc_thresholds()
else:
    fixed = bool(ctypes.CDLL("libc.so.6").mallopt(-3, heap.MMAP_THRESHOLD))
segment = os.urandom(heap.MMAP_THRESHOLD - 64)
def work(index):
    blocks = erasure.encode(segment)
    [block_hash(block) for block in blocks]
    erasure.decode(dict(enumerate(blocks[2:], 2)), len(segment))
with ThreadPoolExecutor(2) as pool:
    list(pool.map(work, range(8)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    list(pool.map(work, range(64)))
print(fixed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _fresh(script: str, how: str) -> tuple[bool, int]:
    """What `script` prints, run in a fresh process with argument `how`: whether it fixed a threshold, a count."""
    out = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, check=True).stdout
    fixed, count = out.split()
    return fixed == "True", int(count)


def test_a_segments_blocks_reuse_the_pages_freed_at_the_heaps_top() -> None:
    fixed, faults = _fresh(_SEGMENTS, "node")
    if not fixed:
        pytest.skip("not glibc: there is no mallopt")
    _, mapped = _fresh(_SEGMENTS, "mapped")
    # Given back as soon as 128 KiB of the top is free, the blocks' pages would be faulted in again: ~220 a segment.
    assert faults < 64 * 10 < 64 * 100 < mapped, (faults, mapped)


# In a fresh process, one 16 MiB body made and freed, then rounds of four, something made meanwhile kept (above
# them, if they are in the heap): with the node's thresholds (`node`) or glibc's own (`glibc`, whose mmap threshold
# rises to the largest buffer freed so far).
_BODIES = """
import sys
from xsc import heap
fixed = heap.set_malloc_thresholds() if sys.argv[1] == "node" else True
def anonymous():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon"))
kept = []
def bodies(count):
    made = [b"x" * (16 * 1024 * 1024 - 64) for _ in range(count)]  # written: resident
    kept.append(b"k" * 200_000)
    del made
bodies(1)
before = anonymous()
for _ in range(3):
    bodies(4)
print(fixed, anonymous() - before)
"""


def test_large_bodies_are_given_back_as_soon_as_they_are_freed() -> None:
    fixed, kept = _fresh(_BODIES, "node")
    if not fixed:
        pytest.skip("not glibc: there is no mallopt")
    _, kept_by_glibc = _fresh(_BODIES, "glibc")
    assert kept < 4 * MiB < 16 * MiB < kept_by_glibc, (kept, kept_by_glibc)
