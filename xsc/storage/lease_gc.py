"""Garbage collection of shares whose lease ended, and of the records of files whose every lease ended.

Every `storage.gc_interval` seconds the node deletes the shares it holds whose lease ended more than
`storage.gc_grace` seconds ago (the grace lets a late renewal still find them), paced to
`storage.gc_rate` blocks per second so a mass expiry never crowds out gets and puts.  Then it forgets
the files it uploaded whose every share's lease ended that long ago (record, manifest, damage marks).
Shares other nodes placed here and never paid for within `storage.unpaid_grace` go too.

Each deletion is one synced write batch that also sets the used-bytes counter, and the lease is
checked again inside it (under the store's lock), so a `kill -9` at any moment leaves the store
consistent and a share renewed after it was listed is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from ..config import StorageSection
from ..identity import public_id
from ..ledger.core.pricing import storage_given_back
from ..ledger.trust import TrustLines
from ..tasks import Pacer, in_pool, periodic
from ..units import counted
from .deals import HolderTerms
from .share_store import ShareStore, reclaim

log = logging.getLogger(__name__)


class LeaseCollector:
    def __init__(self, *, config: StorageSection, store: ShareStore, pool: Executor, terms: HolderTerms,
                 repairing: Callable[[bytes], bool], registry: CollectorRegistry, trust: TrustLines | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.terms = terms
        self.trust = trust  # the uploaders' lines: an unpaid share deleted gives back the lease it will not hold
        self.repairing = repairing  # whether a file is being repaired now (it is not collected meanwhile)
        self.clock = clock
        rate = self.config.gc_rate
        self.pacer = Pacer(rate, rate)
        self.shares_counter = Counter("xsc_storage_gc_shares", "Shares deleted because their lease ended",
                                      registry=registry)
        self.bytes_counter = Counter("xsc_storage_gc_bytes", "Block bytes freed by deleting shares whose lease ended",
                                     registry=registry)
        self.files_counter = Counter("xsc_storage_gc_files", "Uploaded files forgotten because every lease ended",
                                     registry=registry)
        self.counts = {"rounds": 0, "shares": 0, "unpaid": 0, "bytes": 0, "files": 0}
        self.last_round: dict | None = None

    async def _run(self, fn, *args):
        return await in_pool(self.pool, fn, *args)

    async def collect(self, now: float | None = None) -> dict:
        """One round: delete what expired more than the grace before `now` (default: the clock)."""
        started = time.perf_counter()
        before = int(self.clock() if now is None else now) - self.config.gc_grace
        store = self.store
        shares = files = freed = 0
        collected: list[bytes] = []
        for si, share in await self._run(store.expired_shares, before):
            meta = await self._run(store.collect_share, si, share, before)
            if meta is None:
                continue  # renewed or deleted since it was listed
            collected.append(si)
            shares += 1
            freed += meta.stored_bytes
            self.counts["shares"] += 1  # counted as it goes: a long round shows its progress
            self.counts["bytes"] += meta.stored_bytes
            self.shares_counter.inc()
            self.bytes_counter.inc(meta.stored_bytes)
            log.info("lease ended: deleted share %d of %s (%d bytes, lease ended at %d, placed by %s)", share,
                     si.hex(), meta.stored_bytes, meta.lease_expiry, public_id(meta.uploader))
            await self._run(self.terms.forget, si, share)  # its last period was paid within the grace
            await self.pacer.spent(meta.segment_count + 1)
        # A share placed here by another node that nobody paid for in `unpaid_grace` is not kept for free: its
        # lease is treated as ended now (a stranger cannot store forever by setting a long lease and never paying).
        at = int(self.clock() if now is None else now)
        unpaid_before = at - self.config.unpaid_grace
        for si, share, terms in await self._run(self.terms.unpaid, unpaid_before):
            meta = await self._run(store.collect_share, si, share, 2**63)
            if meta is None:
                await self._run(self.terms.forget, si, share)
                continue  # deleted by its uploader already: only its record was left
            collected.append(si)
            shares += 1
            freed += meta.stored_bytes
            self.counts["shares"] += 1
            self.counts["unpaid"] += 1
            self.counts["bytes"] += meta.stored_bytes
            self.shares_counter.inc()
            self.bytes_counter.inc(meta.stored_bytes)
            log.warning("unpaid since %d: deleted share %d of %s (%d bytes, placed by %s)",
                        max(terms.get("placed", 0), terms.get("paid_until", 0)), share, si.hex(),
                        meta.stored_bytes, terms.get("uploader", "?"))
            self._give_back(terms, meta.lease_expiry - at)
            await self._run(self.terms.forget, si, share)
        for si in await self._run(store.expired_files, before):
            if self.repairing(si):
                continue  # being repaired: the next round looks again
            record = await self._run(store.collect_file, si, before)
            if record is None:
                continue
            files += 1
            self.counts["files"] += 1
            self.files_counter.inc()
            log.info("every lease of %s (%s) ended: the file is forgotten", si.hex(), record.get("name") or "")
        if await self._run(reclaim, store, collected):  # a full disk: give the space back now
            log.warning("the disk is nearly full: compacted the blocks of %s",
                        counted(len(collected), "collected share"))
        self.counts["rounds"] += 1
        self.last_round = {"seconds": round(time.perf_counter() - started, 3), "before": before,
                           "shares": shares, "bytes": freed, "files": files}
        return self.last_round

    def _give_back(self, terms: dict, left: int) -> None:
        """The whole lease was used on the uploader's line when the share was placed: what was held unpaid stays
        used (owed), the rest is given back, as for a share its uploader deletes.  Else an uploader whose node was
        away past `unpaid_grace` would find its line eaten for good by leases no holder keeps."""
        if self.trust is not None and left > 0 and "uploader" in terms:
            self.trust.give_back(terms["uploader"], storage_given_back(terms["bytes"], left, terms["price"]))

    def start(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        return {"lease-gc": periodic("lease-gc", self.config.gc_interval, self.collect)}

    def close(self) -> None:
        pass

    def status(self) -> dict:
        return {**self.counts, "interval": self.config.gc_interval, "grace": self.config.gc_grace,
                "rate": self.config.gc_rate, "unpaid_grace": self.config.unpaid_grace, "last_round": self.last_round}


__all__ = ["LeaseCollector"]
