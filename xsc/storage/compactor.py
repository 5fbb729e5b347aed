"""The blocks' database compacted where a large run of blocks was removed, so that its size on disk follows `used`.

LevelDB gives back the room of deleted keys only when a compaction rewrites the tables that hold them, and it compacts
a level only once that level outgrows its size: a node that writes little after it removed an interrupted upload's
staged blocks, a deleted file's or the shares whose lease ended keeps them on disk for as long.  The share store tells
the compactor each removal of blocks (`removing`: the storage index's range of keys and the bytes removed); one of at
least COMPACT_AT_LEAST, or any on a nearly full disk, is compacted (`compact_range`) on the compactor's own thread,
never the event loop's nor the pool's, one range at a time, each range once however many removals named it while it
waited, at most AT_MOST_WAITING ranges waiting (a removal past them is left to LevelDB).  A compaction of a range of
deleted blocks reads their tables and writes nothing back (docs/storage.md, Giving the space back).  Crash safety is
LevelDB's: a compaction's new tables are made visible by one write of its manifest, after which the old ones are
deleted, so a kill -9 at any moment leaves the tables before or after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..db import Database
from ..tasks import in_pool
from ..units import format_size

log = logging.getLogger(__name__)

COMPACT_AT_LEAST = 1024 * 1024  # bytes of blocks removed: a smaller removal waits for LevelDB's own compactions
AT_MOST_WAITING = 1024  # ranges noted and not yet compacted
_PAST = b"\xff" * 8  # after a prefix: past every key under it
_NOTHING = b"\xff\xff"  # above every key: a compaction of it alone only flushes the memtable


class Compactor:
    """`with removing(prefix, size):` around a removal, on any thread but the event loop's; `start()` starts the
    thread, `close()` ends it once the compaction under way ends (the ranges still waiting are left to LevelDB)."""

    def __init__(self, db: Database, at_least: int = COMPACT_AT_LEAST) -> None:
        self.db, self.at_least = db, at_least
        self._lock = threading.Condition()
        self._waiting: dict[bytes, int] = {}  # key prefix -> bytes removed under it, in the order noted
        self._closing = False
        self._thread: threading.Thread | None = None
        self.running: bytes | None = None  # the prefix being compacted
        self.counts = {"compactions": 0, "bytes": 0, "skipped": 0, "seconds": 0.0}

    @contextmanager
    def removing(self, prefix: bytes, size: int | None) -> Iterator[None]:
        """Around a removal of `size` bytes of blocks under `prefix` (None: what the tables hold of them), on the
        remover's thread.  Where it is compacted, the memtable is flushed before its deletes are written: a
        table that held both the blocks and their deletes would be the deepest of the range, and LevelDB compacts
        a range's levels into the next one down, never its deepest level with itself."""
        if size is None:
            size = self.db.approximate_size(prefix, prefix + _PAST)
        compacted = size >= self.at_least or self.db.low_on_space()
        if compacted:
            self.db.compact_range(start=_NOTHING, stop=_NOTHING)
        yield
        if compacted:
            self.note(prefix, size)

    def note(self, prefix: bytes, size: int) -> None:
        """`size` bytes of blocks under `prefix` were removed: compact them away (`removing` decides which)."""
        with self._lock:
            if self._closing or prefix not in self._waiting and len(self._waiting) >= AT_MOST_WAITING:
                self.counts["skipped"] += 1
                return
            self._waiting[prefix] = self._waiting.get(prefix, 0) + size
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
                prefix = next(iter(self._waiting))
                size = self._waiting.pop(prefix)
                self.running = prefix
            started = time.perf_counter()
            try:
                # LevelDB reads which levels hold the range before it flushes its memtable, and the table flushed,
                # which holds the deletes, goes to a level above those: flushed first, the deletes are compacted.
                self.db.compact_range(start=_NOTHING, stop=_NOTHING)
                self.db.compact_range(start=prefix, stop=prefix + _PAST)
            except Exception:  # noqa: BLE001 - a failed compaction leaves the space to LevelDB's own: logged, no more
                log.exception("compacting the %s of blocks removed failed", format_size(size))
            seconds = time.perf_counter() - started
            with self._lock:
                self.running = None
                self.counts["compactions"] += 1
                self.counts["bytes"] += size
                self.counts["seconds"] = round(self.counts["seconds"] + seconds, 3)
                self._lock.notify_all()
            log.info("compacted the %s of blocks removed under %s in %.3f s", format_size(size), prefix.hex(), seconds)

    def idle(self) -> bool:
        """Whether no range waits and none is being compacted."""
        with self._lock:
            return not self._waiting and self.running is None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="xsc-compactor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Take no more ranges: the thread ends once the compaction under way ends."""
        with self._lock:
            self._closing = True
            self._waiting.clear()
            self._lock.notify_all()

    async def close(self) -> None:
        self.stop()
        if self._thread is not None:
            await in_pool(None, self._thread.join)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "waiting": len(self._waiting), "waiting_bytes": sum(self._waiting.values()),
                    "running": self.running is not None}


__all__ = ["Compactor", "COMPACT_AT_LEAST"]
