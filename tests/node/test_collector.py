"""The node's garbage collection (xsc/node/collector.py): full collections scan what came since the last one; and
the node process's GIL switch interval (node/app.py)."""

from __future__ import annotations

import gc
import sys
import urllib.request
import weakref

import pytest

from xsc.devnet import HOST
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

    gc.callbacks.insert(0, watch)
    try:
        book = [[[i], {"n": [i]}] for i in range(150_000)]  # 450,000 tracked objects, made as a flood makes them
    finally:
        gc.callbacks.remove(watch)
    # The first ones wait for a quarter of what the collection before kept (CPython's rule) to pile up: the install's
    # kept all the test process had made.  Then each scans what survived since the one before.
    assert len(scanned) >= 10 and max(scanned[-5:]) < 40_000, scanned  # at 10: 6 of ~93,000 each
    assert collector.full_collections == len(scanned) and len(book) == 150_000


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
