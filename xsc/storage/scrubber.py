"""The scrubber: re-hashes every block of every share this node holds, at a bounded rate.

Holder side.  A pass reads each published share's blocks in order and compares each with the hash
in the share's metadata; bitrot is thus found without anyone reading the file.  A share with a
missing or corrupt block is marked damaged here (`ShareStore.mark_damaged`) and reported to its
uploader, the node that placed it (POST /v1/peer/damage, see storage/audits.py), whose automatic repair
rebuilds it elsewhere; a share this node placed itself goes straight to its own repair queue.

Reads are paced to `audit.scrub_rate` bytes/s (token bucket, bursts of at most a second's worth or
one batch), so a pass over a full node never crowds out gets and puts; passes are `audit.interval`
apart (+-jitter).  `audit.scrub_rate = 0` turns the scrubber off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from ..config import AuditSection
from ..errors import PeerError, XscError
from ..identity import public_id
from ..tasks import Pacer, every, in_pool, stop
from .core.merkle import block_hash
from .share_store import ShareMeta, ShareStore
from .core.wire import MAX_REPORTED_SEGMENTS

log = logging.getLogger(__name__)

BATCH_BYTES = 1024**2  # read and hashed per thread-pool call (at least one block)
BATCH_BLOCKS = 64


def bad_blocks(store: ShareStore, si: bytes, meta: ShareMeta, first: int) -> tuple[int, int, list[int]]:
    """Hash blocks first.. of a share, a batch's worth: (next segment, bytes read, bad or missing segments)."""
    index, size, bad = first, 0, []
    while index < meta.segment_count and size < BATCH_BYTES and index - first < BATCH_BLOCKS:
        block = store.get_block(si, meta.share, index)
        if block is None or block_hash(block) != meta.block_hashes[index]:
            bad.append(index)
        size += len(block or b"")
        index += 1
    return index, size, bad


ReportDamage = Callable[[str, bytes, int, list[int]], Awaitable[None]]  # (uploader, si, share, segments)


class Scrubber:
    def __init__(self, *, config: AuditSection, store: ShareStore, pool: Executor, report_damage: ReportDamage,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.report_damage = report_damage  # tells the share's uploader (this node's own audits, or its node)
        self.clock = clock
        rate = self.config.scrub_rate
        self.pacer = Pacer(rate, max(rate, BATCH_BYTES), clock=clock) if rate else None
        self._reported: set[tuple[bytes, int, tuple[int, ...]]] = set()
        self._task: asyncio.Task | None = None
        self.counts = {"passes": 0, "bytes": 0, "shares": 0, "damaged": 0, "reports": 0, "reports_failed": 0}
        self.last_pass: dict | None = None

    async def _run(self, fn, *args):
        return await in_pool(self.pool, fn, *args)

    async def scrub_pass(self) -> dict:
        """Re-hash every block of every share held here, at the configured rate."""
        start, found, read = time.perf_counter(), 0, 0
        shares = await self._run(self.store.held_shares)
        for si, share in shares:
            size, damaged = await self.scrub_share(si, share)
            read += size
            found += damaged
        self.counts["passes"] += 1
        self.last_pass = {"seconds": round(time.perf_counter() - start, 3), "shares": len(shares), "bytes": read,
                          "damaged": found}
        return self.last_pass

    async def scrub_share(self, si: bytes, share: int) -> tuple[int, bool]:
        """(bytes read, whether damage was found) for one share."""
        store = self.store
        meta = await self._run(store.share_meta, si, share)
        if meta is None:
            return 0, False  # deleted since the pass listed it
        index, read, bad = 0, 0, []
        while index < meta.segment_count:
            index, size, wrong = await self._run(bad_blocks, store, si, meta, index)
            read += size
            bad += wrong
            self.counts["bytes"] += size
            if self.pacer is not None:
                await self.pacer.spent(size)
        self.counts["shares"] += 1
        if not bad:
            return read, False
        if await self._run(store.share_meta, si, share) != meta:
            return read, False  # deleted or replaced while it was read: the blocks read were not its own
        self.counts["damaged"] += 1
        shown = bad[:20]
        more = f" and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
        log.warning("scrub: share %d of %s has bad or missing blocks in segments %s%s", share, si.hex(),
                    shown, more)
        await self._run(store.mark_damaged, si, share, f"scrub: bad or missing blocks in segments {shown}{more}")
        await self.report(si, meta, bad)
        return read, True

    async def report(self, si: bytes, meta: ShareMeta, bad: list[int]) -> None:
        """Tell the share's uploader (once per damage found; again on the next pass if it was not told)."""
        segments = bad[:MAX_REPORTED_SEGMENTS]
        key = (si, meta.share, tuple(segments))
        if key in self._reported:
            return
        uploader = public_id(meta.uploader)
        try:
            await self.report_damage(uploader, si, meta.share, segments)
        except (PeerError, XscError) as err:
            self.counts["reports_failed"] += 1
            log.warning("could not report damaged share %d of %s to its uploader %s (will retry next pass): %s",
                        meta.share, si.hex(), uploader, err)
            return
        self._reported.add(key)
        self.counts["reports"] += 1
        log.info("reported damaged share %d of %s to its uploader %s", meta.share, si.hex(), uploader)

    def start(self) -> None:
        if self.pacer is not None:
            self._task = every("scrubber", self.config.interval, self.scrub_pass, jitter=self.config.jitter)

    async def close(self) -> None:
        await stop(self._task)

    def status(self) -> dict:
        return {**self.counts, "rate": self.config.scrub_rate, "running": self._task is not None,
                "last_pass": self.last_pass}


__all__ = ["Scrubber", "bad_blocks"]
