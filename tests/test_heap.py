"""Freed memory goes back to the system (xsc/heap.py): a node does not stay as large as its busiest moment."""

from __future__ import annotations

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
