"""The node's garbage collection (xsc/node/collector.py): full collections scan what came since the last one; and
the node process's GIL switch interval (node/app.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import urllib.request
import weakref

import aiohttp
import pytest

from tests.support.shares import DEAL_PRICE, EncodedFile, lease
from tests.support.waiting import eventually_async
from xsc.devnet import HOST
from xsc.errors import PeerRefused
from xsc.heap import TRIM_EVERY
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc.storage.holder_client import RemoteHolder
from xsc.storage.core.wire import MAX_PUT_BYTES, block_lengths
from xsc.config import MiB
from xsc.node.app import GIL_SWITCH_INTERVAL
from xsc.node.collector import FULL_AFTER, Collector


class _Cycle:
    """An object in a reference cycle with itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector():
    collector = Collector(rescan_seconds=3600)
    collector.install()
    try:
        yield collector
    finally:
        collector.uninstall()
        gc.unfreeze()


def test_what_survives_a_full_collection_leaves_the_collectors_sight(collector) -> None:
    kept = [[i] for i in range(20_000)]  # long-lived and tracked, as a market book's objects are
    gc.collect()
    assert collector.full_collections == 1
    assert gc.get_freeze_count() >= 20_000 and len(gc.get_objects()) < 20_000  # the next ones scan the rest only
    garbage = _Cycle()
    made_since = weakref.ref(garbage)
    del garbage
    gc.collect()
    assert made_since() is None  # garbage made since is collected as before
    frozen = gc.get_freeze_count()
    del kept
    assert gc.get_freeze_count() <= frozen - 20_000  # frozen objects are still freed with their last reference


def test_full_collections_come_often_enough_that_each_scans_a_bounded_number_of_new_objects(collector) -> None:
    """A flood that makes long-lived objects (a market book filling up) meets full collections that each scan at
    most a few tens of thousands of them (CPython's default let ~75,000 pile up: 41-72 ms of loop CPU each)."""
    assert gc.get_threshold()[2] == FULL_AFTER
    scanned: list[int] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            scanned.append(sum(len(gc.get_objects(generation=g)) for g in range(3)))

    gc.collect()  # what this test process holds already (more, the more tests ran in it) is put out of sight
    before = collector.full_collections
    gc.callbacks.insert(0, watch)
    try:
        book = [[[i], {"n": [i]}] for i in range(150_000)]  # 450,000 tracked objects, made as a flood makes them
    finally:
        gc.callbacks.remove(watch)
    # Each waits for a quarter of what the collection before kept (CPython's rule) to pile up, and scans what survived
    # since the one before.
    assert len(scanned) >= 10 and max(scanned[-5:]) < 40_000, scanned  # at 10: 6 of ~93,000 each
    assert collector.full_collections - before == len(scanned) and len(book) == 150_000


def test_a_cycle_among_frozen_objects_is_freed_after_the_rescan(collector) -> None:
    cycle = _Cycle()
    held = weakref.ref(cycle)
    gc.collect()  # frozen with everything alive
    del cycle
    gc.collect()
    assert held() is not None  # out of sight: it waits for the rescan
    collector.rescanned_at -= collector.rescan_seconds
    gc.collect()  # due: everything back in sight
    assert collector.rescans == 1 and gc.get_freeze_count() == 0
    gc.collect()
    assert held() is None
    assert gc.get_freeze_count() > 0  # and frozen again after that full collection


def test_a_node_process_reports_its_collections_what_it_froze_and_its_gil_switch_interval(node_process) -> None:
    node = node_process()
    token = (node.data_dir / "api-token").read_text().strip()
    request = urllib.request.Request(f"http://{HOST}:{node.port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        metrics = dict(line.rsplit(" ", 1) for line in answer.read().decode().splitlines() if line.startswith("xsc_"))
    assert float(metrics["xsc_process_gc_frozen_objects"]) > 10_000  # start-up's objects, frozen once it listens
    assert {f'xsc_process_gc_collections{{generation="{g}"}}' for g in range(3)} <= set(metrics)
    # its event loop waits at most GIL_SWITCH_INTERVAL for the GIL, not CPython's 5 ms (a test process keeps the default)
    assert float(metrics["xsc_process_gil_switch_interval_seconds"]) == GIL_SWITCH_INTERVAL != sys.getswitchinterval()


def _anonymous_memory(node) -> int:
    token = (node.data_dir / "api-token").read_text().strip()
    request = urllib.request.Request(f"http://{HOST}:{node.port}/v1/node/status",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["memory"]["anonymous"]


async def _strangers_bodies(node, bodies: int) -> None:
    """A stranger begins a share of 16 MiB and sends `bodies` bodies of 16 MiB for its first segments at once
    (each is read whole: the first is taken, the others are then out of order), then gives the upload up."""
    token = (node.data_dir / "api-token").read_text().strip()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{HOST}:{node.port}/v1/node/status",
                               headers={"Authorization": f"Bearer {token}"}) as answer:
            node_id = (await answer.json())["id"]
        holder = RemoteHolder(PeerClient(Identity.generate(), session, 60.0), node_id, f"http://{HOST}:{node.port}",
                              DEAL_PRICE)
        f = EncodedFile(5000)
        upload = await holder.begin(f.si, 0, 64 * MiB, 4 * MiB, lease())
        block = block_lengths(64 * MiB, 4 * MiB, 0, 1)[0]
        body = os.urandom(MAX_PUT_BYTES // block * block)  # whole blocks whose hashes are wrong
        answers = await asyncio.gather(*(holder.put_segments(upload, 0, [body]) for _ in range(bodies)),
                                       return_exceptions=True)
        assert all(a is None or isinstance(a, PeerRefused) for a in answers), answers
        await holder.abort(upload)


@pytest.mark.slow
async def test_a_strangers_large_bodies_are_given_back_to_the_system_once_read(node_process) -> None:
    """glibc keeps freed buffers as large as the largest freed so far in the process (its mmap threshold rises
    with them): four 16 MiB bodies of a stranger's left a holder 65 MiB larger for good.  The node fixes the
    threshold (heap.set_malloc_thresholds, tests/test_heap.py): after rounds of such bodies, its memory is back
    where it was, at once or, when something made meanwhile sits above the chunks a body arrived in at the heap's
    top, at its next trim (every TRIM_EVERY seconds)."""
    node = node_process(env={"XSC_STORAGE_UNPAID_GRACE": "3600", "XSC_STORAGE_CAPACITY": "1GiB"})
    await _strangers_bodies(node, 1)  # whatever one round leaves (connection pools, caches) is in the baseline
    before = _anonymous_memory(node)
    for _ in range(3):
        await _strangers_bodies(node, 4)
    await eventually_async(lambda: _anonymous_memory(node) - before < 24 * MiB,
                           "the node's memory back within 24 MiB of where it was", timeout=TRIM_EVERY + 30)
