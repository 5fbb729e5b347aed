"""The node's garbage collection (xsc/node/collector.py): full collections scan what came since the last one."""

from __future__ import annotations

import gc
import urllib.request
import weakref

import pytest

from xsc.devnet import HOST
from xsc.node.collector import Collector


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


def test_a_node_process_reports_its_collections_and_what_it_froze(node_process) -> None:
    node = node_process()
    token = (node.data_dir / "api-token").read_text().strip()
    request = urllib.request.Request(f"http://{HOST}:{node.port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        metrics = dict(line.rsplit(" ", 1) for line in answer.read().decode().splitlines() if line.startswith("xsc_"))
    assert float(metrics["xsc_process_gc_frozen_objects"]) > 10_000  # start-up's objects, frozen once it listens
    assert {f'xsc_process_gc_collections{{generation="{g}"}}' for g in range(3)} <= set(metrics)
