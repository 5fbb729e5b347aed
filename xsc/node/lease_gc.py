"""Garbage collection of shares whose lease ended, and of the records of files whose every lease ended.

Every `storage.gc_interval` seconds the node deletes the shares it holds whose lease ended more than
`storage.gc_grace` seconds ago (the grace lets a late renewal still find them), paced to
`storage.gc_rate` blocks per second so a mass expiry never crowds out gets and puts.  Then it forgets
the files it uploaded whose every share's lease ended that long ago (record, manifest, damage marks).

Each deletion is one synced write batch that also sets the used-bytes counter, and the lease is
checked again inside it (under the store's lock), so a `kill -9` at any moment leaves the store
consistent and a share renewed after it was listed is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from aiohttp import web
from prometheus_client import Counter

from ..identity import public_id
from ..storage import ShareStore
from .context import CONFIG, CPU_POOL, METRICS
from .deals import forget_held_deal
from .scrubber import Pacer
from .status import STATUS_PARTS

log = logging.getLogger(__name__)


class LeaseCollector:
    def __init__(self, app: web.Application, *, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.config = app[CONFIG].storage
        self.clock = clock
        rate = self.config.gc_rate
        self.pacer = Pacer(rate, rate, time.monotonic())
        registry = app[METRICS].registry
        self.shares_counter = Counter("xsc_storage_gc_shares", "Shares deleted because their lease ended",
                                      registry=registry)
        self.bytes_counter = Counter("xsc_storage_gc_bytes", "Block bytes freed by deleting shares whose lease ended",
                                     registry=registry)
        self.files_counter = Counter("xsc_storage_gc_files", "Uploaded files forgotten because every lease ended",
                                     registry=registry)
        self.counts = {"rounds": 0, "shares": 0, "bytes": 0, "files": 0}
        self.last_round: dict | None = None
        self._task: asyncio.Task | None = None

    @property
    def store(self) -> ShareStore:
        from .storage_routes import GATEWAY

        return self.app[GATEWAY].store

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.app[CPU_POOL], fn, *args)

    async def collect(self, now: float | None = None) -> dict:
        """One round: delete what expired more than the grace before `now` (default: the clock)."""
        from .storage_routes import REPAIR_LOCKS

        started = time.perf_counter()
        before = int(self.clock() if now is None else now) - self.config.gc_grace
        store = self.store
        shares = files = freed = 0
        for si, share in await self._run(store.expired_shares, before):
            meta = await self._run(store.collect_share, si, share, before)
            if meta is None:
                continue  # renewed or deleted since it was listed
            await self._run(forget_held_deal, self.app, si, share)  # its last period was paid within the grace
            shares += 1
            freed += meta.stored_bytes
            self.counts["shares"] += 1  # counted as it goes: a long round shows its progress
            self.counts["bytes"] += meta.stored_bytes
            self.shares_counter.inc()
            self.bytes_counter.inc(meta.stored_bytes)
            log.info("lease ended: deleted share %d of %s (%d bytes, lease ended at %d, placed by %s)", share,
                     si.hex()[:16], meta.stored_bytes, meta.lease_expiry, public_id(meta.uploader)[:12])
            await asyncio.sleep(self.pacer.take(meta.segment_count + 1, time.monotonic()))
        for si in await self._run(store.expired_files, before):
            lock = self.app[REPAIR_LOCKS].get(si)
            if lock is not None and lock.locked():
                continue  # being repaired: the next round looks again
            record = await self._run(store.collect_file, si, before)
            if record is None:
                continue
            files += 1
            self.counts["files"] += 1
            self.files_counter.inc()
            log.info("every lease of %s (%s) ended: the file is forgotten", si.hex()[:16], record.get("name") or "")
        self.counts["rounds"] += 1
        self.last_round = {"seconds": round(time.perf_counter() - started, 3), "before": before,
                           "shares": shares, "bytes": freed, "files": files}
        return self.last_round

    def start(self) -> None:
        self._task = asyncio.create_task(self._schedule(), name="xsc-lease-gc")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _schedule(self) -> None:
        while True:
            await asyncio.sleep(self.config.gc_interval)
            try:
                await self.collect()
            except Exception:  # a failed round must never end collection
                log.exception("lease garbage collection failed")

    def status(self) -> dict:
        return {**self.counts, "interval": self.config.gc_interval, "grace": self.config.gc_grace,
                "rate": self.config.gc_rate, "last_round": self.last_round}


LEASE_GC = web.AppKey("lease_gc", LeaseCollector)


async def _lease_gc_service(app: web.Application):
    collector = LeaseCollector(app)
    app[LEASE_GC] = collector
    collector.start()
    try:
        yield
    finally:
        await collector.close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_lease_gc_service)
    app[STATUS_PARTS]["lease_gc"] = lambda a: a[LEASE_GC].status()


__all__ = ["LEASE_GC", "LeaseCollector", "setup"]
