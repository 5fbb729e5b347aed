"""Aggregated settlement: many small payments from one payer to one payee, settled as one ledger transfer.

Each paid invoke on this node owes its provider the metered amount.  Rather than a ledger transfer (two
chain entries, three signatures, a synced write) per invoke, every (payer, payee) pair keeps a running
*tab*: the refs (provenance ids) of the work it covers and their total.  A tab is settled as ONE transfer
when it is `interval` seconds old or reaches `threshold` micro-credits (or `max_refs` refs), with the job
reference ``compute:tab:<count>:<Merkle root of the refs>`` and usage ``{"fuel": total, "invokes": count}``;
the refs themselves are stored under the root in the same synced batch (`xsc ledger history --expand`).

Durability (kill -9 of the node at any moment):

- the caller writes `owed_entry(ref, ...)` (`owed_record` under `keys.ledger_owed(ref)`) in the SAME synced batch as the work's
  own record (the provenance record), before the work is acknowledged;
- the transfer that pays a tab deletes those records in ITS synced batch;
- on start, every record still on disk is put back on its tab and its amount held again.

So an acknowledged payment is paid exactly once, and a payer never spends past its credit limit: the
whole budget of running work is held (`LedgerService.hold`), replaced by the metered amount once the work
is metered (`owe`), released when the tab is settled.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from .. import keys
from ..errors import XscError
from ..identity import Identity, public_id
from ..tasks import woken_loop
from .core import merkle
from .core.model import TAB_JOB_PREFIX as JOB_PREFIX
from .service import LedgerService

log = logging.getLogger(__name__)

OWED = struct.Struct(">32s32sQQ")  # payer, payee, amount, fuel
REF_LEN = 16
INTERVAL = 1.0  # seconds a tab stays open at most
THRESHOLD = 1_000_000  # micro-credits (one credit): a tab owing this much is settled at once
MAX_REFS = 4096  # refs one transfer covers at most (64 KiB of refs under its root)


def owed_record(payer: bytes, payee: bytes, amount: int, fuel: int) -> bytes:
    return OWED.pack(payer, payee, amount, fuel)


def owed_entry(ref: bytes, payer: bytes, payee: bytes, amount: int, fuel: int) -> tuple[bytes, bytes]:
    """The (key, value) a run's caller writes in its own synced batch: what `ref`'s work owes until a tab settles."""
    return keys.ledger_owed(ref), owed_record(payer, payee, amount, fuel)


@dataclass
class Tab:
    refs: list[bytes] = field(default_factory=list)
    amount: int = 0
    fuel: int = 0

    def add(self, ref: bytes, amount: int, fuel: int) -> None:
        self.refs.append(ref)
        self.amount += amount
        self.fuel += fuel


class Tabs:
    def __init__(self, *, ledger: LedgerService, identities: list[Identity], interval: float = INTERVAL,
                 threshold: int = THRESHOLD, max_refs: int = MAX_REFS) -> None:
        self.ledger = ledger
        self.identities = {i.public_key: i for i in identities}  # the accounts whose keys this node holds
        self.interval, self.threshold, self.max_refs = interval, threshold, max_refs
        self._tabs: dict[tuple[bytes, bytes], Tab] = {}
        self._ready: list[tuple[tuple[bytes, bytes], Tab]] = []  # full tabs, and tabs whose settling failed
        self._wake = asyncio.Event()
        self._opened = asyncio.Event()  # a payment went on a tab: the loop, asleep while nothing was owed, wakes
        self.settled_refs = 0  # refs paid by a transfer since start (metrics, bench)

    # --- start: what was owed before a crash ------------------------------------------------
    def load(self) -> int:
        """Put every owed record still on disk back on its tab and hold its amount; returns how many."""
        records = self.ledger.store.owed()
        for ref, data in records:
            payer, payee, amount, fuel = OWED.unpack(data)
            self.ledger.add_hold(payer, amount)
            self._tabs.setdefault((payer, payee), Tab()).add(ref, amount, fuel)
        if records:
            log.info("%d acknowledged payments from before the last stop are settled now", len(records))
        return len(records)

    def start(self) -> None:
        self.load()

    def loops(self) -> dict[str, Any]:
        return {"ledger-tabs": woken_loop("settling tabs", self._wake, self.interval, self._settle_round,
                                          wait_first=True)}

    async def _settle_round(self) -> None:
        """Settle the open tabs; with none open, wait until a payment goes on one, which the loop's next wait then
        settles `interval` seconds later (or at once past `threshold`).  An idle node's loop sleeps rather than
        waking every `interval` to find nothing owed."""
        if self._tabs or self._ready:
            await self.flush()
            return
        self._opened.clear()
        await self._opened.wait()

    async def close(self) -> None:  # after its loop stopped
        await self.flush()

    # --- the API ------------------------------------------------------------------------------
    def owe(self, payer: Identity, payee: Identity, ref: bytes, amount: int, fuel: int, *, held: int) -> None:
        """Work `ref` that held `held` was metered at `amount` and its owed record is durable: put it on the tab."""
        self.ledger.replace_hold(payer, held, amount)
        pair = (payer.public_key, payee.public_key)
        tab = self._tabs.setdefault(pair, Tab())
        tab.add(ref, amount, fuel)
        self._opened.set()
        if len(tab.refs) >= self.max_refs:  # full: it is settled as it is, a new tab opens
            self._ready.append((pair, self._tabs.pop(pair)))
            self._wake.set()
        elif tab.amount >= self.threshold:
            self._wake.set()

    def open(self) -> dict[str, int]:
        tabs = [t for _, t in self._ready] + list(self._tabs.values())
        return {"tabs": len(tabs), "refs": sum(len(t.refs) for t in tabs), "amount": sum(t.amount for t in tabs)}

    async def flush(self) -> list[str]:
        """Settle every open tab now; the payer's entry ids (hex) of the transfers made."""
        batch, self._ready, self._tabs = self._ready + list(self._tabs.items()), [], {}
        results = await asyncio.gather(*(self._settle(pair, tab) for pair, tab in batch))
        return [r for r in results if r is not None]

    async def _settle(self, pair: tuple[bytes, bytes], tab: Tab) -> str | None:
        payer, payee = (self.identities.get(k) for k in pair)
        if payer is None or payee is None:
            log.error("a tab of %s owing %s: this node holds no key for it", public_id(pair[0]),
                      public_id(pair[1]))
            return None
        root = merkle.root(tab.refs)
        covers = keys.ledger_covers(root)  # what the user reads for `xsc ledger history --expand`, for its retention
        try:
            entry = await self.ledger.settle(
                payer, payee, tab.amount, {"fuel": tab.fuel, "invokes": len(tab.refs)},
                f"{JOB_PREFIX}{len(tab.refs)}:{root.hex()}",
                puts=((covers, b"".join(tab.refs)),
                      (keys.ledger_retire(int(time.time()) + self.ledger.retention, covers), b"")),
                deletes=tuple(keys.ledger_owed(r) for r in tab.refs))
        except XscError as exc:  # kept (on disk and in memory, still held): settled by a later flush
            log.error("settling a tab of %d invokes (%d micro-credits) failed: %s", len(tab.refs), tab.amount, exc)
            self._ready.append((pair, tab))
            return None
        self.ledger.release(payer, tab.amount)
        self.settled_refs += len(tab.refs)
        return entry



__all__ = ["OWED", "Tab", "Tabs", "owed_record"]
