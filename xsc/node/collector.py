"""Full garbage collections that scan what is new, not everything the node holds.

CPython's full collection scans every object it tracks, and it runs on whichever thread allocates, mostly the
event loop: with a market book and a directory of 1,000 peers (~90,000 objects) each took 90-120 ms of CPU, and
nothing else ran meanwhile.  So what survives a full collection is moved out of the collector's sight
(`gc.freeze`): the next ones scan only what came since.  Frozen objects are still freed when their last
reference goes (a superseded commitment, a closed connection's buffers); only garbage held in a reference cycle
among them waits, until RESCAN_SECONDS have passed since the last rescan: everything is then put back in the
collector's sight, and the next full collection scans (and frees) it all, once.  Full collections are also made
more often (FULL_AFTER), so each has less that is new to scan.
"""

from __future__ import annotations

import gc
import time

RESCAN_SECONDS = 900.0
# A full collection is considered after this many collections of the middle generation (CPython's default: 10).
# What it scans is what survived since the last one, so more often means shorter: in a flood of 1,000-commitment
# market messages the full collections took 41-72 ms of loop CPU at 10 and 17-19 ms at 2, the same work in all.
FULL_AFTER = 2
DEFAULT_FULL_AFTER = 10


class Collector:
    """Installed once per node process, at start (`install`), after the start-up's objects are made."""

    def __init__(self, rescan_seconds: float = RESCAN_SECONDS) -> None:
        self.rescan_seconds = rescan_seconds
        self.rescanned_at = time.monotonic()
        self.full_collections = 0
        self.rescans = 0

    def install(self) -> None:
        gc.collect()
        gc.freeze()  # what start-up made (modules, services, their tables) lives as long as the node
        gc.callbacks.append(self._collected)
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_AFTER)

    def uninstall(self) -> None:
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, DEFAULT_FULL_AFTER)

    def _collected(self, phase: str, info: dict) -> None:
        # Called by the collector on the thread that collected, after the collection: every generation's lists
        # are consistent, and what is left after a full one is reachable (or uncollectable).
        if phase != "stop" or info.get("generation") != 2:
            return
        self.full_collections += 1
        now = time.monotonic()
        if now - self.rescanned_at >= self.rescan_seconds:
            self.rescanned_at = now
            self.rescans += 1
            gc.unfreeze()  # the next full collection scans everything frozen since
        else:
            gc.freeze()


__all__ = ["Collector", "FULL_AFTER", "RESCAN_SECONDS"]
