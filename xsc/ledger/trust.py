"""Trust lines: credit only along recognition (docs/security.md, "Credit only along recognition").

A node does work for a peer before that peer pays: it holds a share for the lease it was placed for, it runs
a call that is settled with its tab.  What a peer may owe this node at once is its *credit line*:

- a peer the user recognises (`xsc market recognize PEER W`, W > 0): `ledger.peer_credit`, or the line the
  user set for it (`xsc market recognize PEER W --credit C`);
- any other peer (a stranger, a throwaway key): `ledger.stranger_credit`, 0 by default.

Each peer's line keeps three running totals (LevelDB, `keys.trust_line`): `paid`, every receipt this node
countersigned for that peer (a prepayment, `job prepay:...`, as well as payments for work); `used`, the price of
the work this node took on for it (a share's lease when it is placed here, a call when it runs); and `owed`,
every payment this node's user made to that peer (what this node can collect from it: its own debt, on its
own ledger).  A receipt is a promise signed by a payer this node cannot make pay, so what it paid counts only
as far as this node can collect: `counted = min(paid, owed)`, and for a peer the user recognises also its
payments for work done here (`min(paid, owed + used)`).  Work is taken on only while
`used + reserved + price <= counted + credit`; else it is refused with 402 `prepayment-required`.  A
prepayment is countersigned only within what is still collectable (`owed - paid`, plus `used` for a peer the
user recognises): a fresh payer, many payers or a huge amount mint nothing, and a stranger prepays only out of
what this node owes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


from ..db import Database
from ..errors import InvalidArgument, PrepaymentRequired, quoted
from ..units import MAX_MICRO_CREDITS
from .core.model import Authorization, format_credits
from .store import RETENTION
from .trust_store import TrustStore

MAX_LINE = MAX_MICRO_CREDITS  # any total beyond this is refused
CACHED_PEERS = 4096  # lines (and credits) kept in memory
# Locks a peer's line may be under (`TrustLines.lock_of`): a peer's work waits only for the peers that share its lock.
STRIPES = 256
TOTALS = ("paid", "used", "owed")


def collectable(totals: dict[str, int], recognised: bool) -> int:
    """The most of what a peer paid that counts: what this node owes it, and for a peer the user recognises
    also the work done for it here (its payments for that work)."""
    return totals["owed"] + (totals["used"] if recognised else 0)


def counted(totals: dict[str, int], recognised: bool) -> int:
    return min(totals["paid"], collectable(totals, recognised))


class TrustLines:
    def __init__(self, db: Database, *, stranger_credit: int, peer_credit: int,
                 recognised: Callable[[str], bool], retention: int = RETENTION, me: str = "") -> None:
        self._store = TrustStore(db)
        self.me = me  # this node's id, in the command a refused peer pays it by
        self.retention = retention  # seconds past its authorization's expiry a receipt or payment is still counted
        self.stranger_credit = stranger_credit
        self.peer_credit = peer_credit
        self.recognised = recognised  # whether the user recognises a peer (the market's user weights)
        self._reserved: dict[str, int] = {}  # work accepted but not yet taken on (uploads in progress, runs)
        # One lock per line, not one for all: `counting` holds a peer's through the synced write of its receipt or
        # payment in the ledger's writer thread, and the loop's `reserve` and `use` for every other peer go on
        # meanwhile.  Striped, a fixed set of locks each peer is given one of by the hash of its id, rather than a
        # table of locks made for each peer and dropped once idle: strangers' ids grow nothing at all, and finding a
        # line's lock makes nothing (such a table would make a lock whenever a peer comes back from idle, nearly
        # every request, and keep its own lock for the count of users).  The price is that two peers whose ids
        # share a stripe wait for each other, one pair in STRIPES; Python's hash of a string is seeded anew in
        # every process, so no peer picks an id to share another's.  Reentrant: a line's reads take it again.
        self._locks = tuple(threading.RLock() for _ in range(STRIPES))
        # What is on disk, read once per peer: this object is the only writer of a line (and of a credit), and
        # every paid call reads its gateway's line twice (reserve, use).  Read through and written under the
        # peer's lock, so the copy is never older than the disk.  Bounded: a flood of strangers' ids only makes
        # some of them be read from disk again.
        self._lines: dict[str, dict[str, int]] = {}
        self._credits: dict[str, int | None] = {}
        # The changes under each lock, counted under it (`version`: no increment is lost to a thread holding
        # another), and the user's changes of recognition.
        self._changes = [0] * STRIPES
        self._recognitions = 0
        self._recognitions_lock = threading.Lock()

    def lock_of(self, peer: str) -> threading.RLock:
        """The lock `peer`'s line is read and written under (its stripe)."""
        return self._locks[hash(peer) % STRIPES]

    @property
    def version(self) -> int:
        """Grows whenever a line may have changed (what `backing` says of a peer): the market's shown clearing, whose
        bids count as far as the lines back them, is made again when it does."""
        return sum(self._changes) + self._recognitions

    def _changed(self, peer: str) -> None:
        """A change of `peer`'s line, counted (the caller holds its lock)."""
        self._changes[hash(peer) % STRIPES] += 1

    # --- reading ----------------------------------------------------------------------------
    def _totals(self, peer: str) -> dict[str, int]:
        """A copy of the peer's totals (callers change it, then `_put` it)."""
        with self.lock_of(peer):
            cached = self._lines.get(peer)
            if cached is None:
                value = self._store.totals(peer)
                cached = {name: int(value.get(name, 0)) for name in TOTALS}
                self._remember(self._lines, peer, cached)
            return dict(cached)

    def credit(self, peer: str) -> int:
        with self.lock_of(peer):
            if peer in self._credits:
                set_by_user = self._credits[peer]
            else:
                set_by_user = self._store.credit(peer)
                self._remember(self._credits, peer, set_by_user)
        recognised = self.recognised(peer)
        if set_by_user is not None and recognised:
            return set_by_user
        # Recognising a peer never lowers its line: a network that trusts strangers more than ledger.peer_credit
        # (a devnet) keeps that line for the peers its user recognises.
        return max(self.peer_credit, self.stranger_credit) if recognised else self.stranger_credit

    @staticmethod
    def _remember(cache: dict, peer: str, value: Any) -> None:
        if len(cache) >= CACHED_PEERS:
            cache.clear()
        cache[peer] = value

    def line(self, peer: str) -> dict[str, Any]:
        totals = self._totals(peer)
        credit, reserved, recognised = self.credit(peer), self._reserved.get(peer, 0), self.recognised(peer)
        paid = counted(totals, recognised)
        available = paid + credit - totals["used"] - reserved
        return {"peer": peer, **totals, "counted": paid, "reserved": reserved, "credit": credit,
                "recognised": recognised, "available": available}

    def backing(self, peer: str) -> int:
        """What `peer` can pay this node now by what it paid here and the credit its user gives it, as the market
        weighs its bids (xsc.market.core.backing): `available`, less a stranger's `stranger_credit` (every fresh id
        gets that, so many ids would add up to any amount)."""
        line = self.line(peer)
        return max(0, line["available"] - (0 if line["recognised"] else line["credit"]))

    def terms_for(self, peer: str) -> dict[str, Any]:
        """What a peer may ask of its own line here (`GET /v1/peer/terms`): how much work this node takes on for
        it now, and on what credit.  Nothing about any other peer."""
        line = self.line(peer)
        return {"available": line["available"], "credit": line["credit"], "recognised": line["recognised"]}

    def lines(self) -> list[dict[str, Any]]:
        return [self.line(peer) for peer in self._store.peers()]

    # --- work ---------------------------------------------------------------------------------
    def reserve(self, peer: str, price: int, what: str) -> None:
        """Set `price` aside on `peer`'s line for work about to be done, or raise PrepaymentRequired (402)."""
        if not 0 <= price <= MAX_LINE:
            raise InvalidArgument(f"a price of {price} micro-credits is out of range")
        with self.lock_of(peer):
            totals = self._lines.get(peer) or self._totals(peer)
            paid = counted(totals, self.recognised(peer))
            if price <= paid + self.credit(peer) - totals["used"] - self._reserved.get(peer, 0):
                self._reserved[peer] = self._reserved.get(peer, 0) + price  # what `line` says is available covers it
                self._changed(peer)
                return
            line = self.line(peer)
            if price > line["available"]:
                short = price - max(0, line["available"])
                # Named by id, not "this node": the peer's node relays it to its user, for whom that is their own.
                here = f"node {self.me}" if self.me else "this node"
                how = ("no credit: not recognised there" if not line["recognised"] else
                       f"a credit line of {format_credits(line['credit'])} there")
                raise PrepaymentRequired(
                    f"node {peer} must prepay {here}: {what} costs {format_credits(price)} credits and "
                    f"{format_credits(max(0, line['available']))} are available to it ({how})",
                    hint=f"on node {peer}: xsc ledger prepay {self.me or 'THIS_NODE_ID'} {format_credits(short)} "
                         f"(or this node's user: xsc market recognize {peer} WEIGHT --credit AMOUNT)",
                    peer=peer, price=price, available=line["available"], missing=short)
            self._reserved[peer] = self._reserved.get(peer, 0) + price
            self._changed(peer)

    def release(self, peer: str, price: int) -> None:
        """Give back a reservation for work that was not done."""
        with self.lock_of(peer):
            left = self._reserved.get(peer, 0) - price
            self._changed(peer)
            if left > 0:
                self._reserved[peer] = left
            else:
                self._reserved.pop(peer, None)

    def use(self, peer: str, price: int, *, reserved: int = 0) -> None:
        """The work was taken on: `price` is used on the line (a reservation of `reserved` ends with it)."""
        with self.lock_of(peer):
            totals = self._totals(peer)
            totals["used"] = min(MAX_LINE, totals["used"] + price)
            self._put(peer, totals)
        if reserved:
            self.release(peer, reserved)

    def give_back(self, peer: str, price: int) -> None:
        """Work taken on will not be done after all (a share its uploader deleted before its lease ended): `price`
        is no longer used on the line."""
        with self.lock_of(peer):
            totals = self._totals(peer)
            totals["used"] = max(0, totals["used"] - price)
            self._put(peer, totals)

    def paid(self, peer: str, authorization: Authorization, amount: int, now: float | None = None) -> None:
        """This node countersigned a receipt of `amount` for `peer`: counted on its line once."""
        self._add(peer, "paid", authorization, amount, now)

    def owe(self, peer: str, authorization: Authorization, amount: int, now: float | None = None) -> None:
        """This node's user paid `peer` `amount` (its payment under `authorization` is on this node's ledger):
        what this node can collect from that peer, counted once."""
        self._add(peer, "owed", authorization, amount, now)

    def owe_counted(self, authorization: Authorization, now: float | None = None) -> bool:
        """Whether this node's payment under `authorization` was counted as owed (`owe`), or is too old to be."""
        return not self._countable("owed", authorization, now)

    def _countable(self, total: str, authorization: Authorization, now: float | None) -> bool:
        """Whether a count under `authorization` is still to be made.  The ledger writes a record with the receipt
        or the payment that the count deletes in its own batch: while it is there, the count is made, however late
        (a kill -9 fell between the two, and the node stayed down).  Without it, only a count that comes within
        `retention` of the authorization's expiry is made: its marker may have been retired after that, so
        counting it could count it twice (a repeated request for a receipt, or a replay of it)."""
        if self._store.counted(self._store.marker(total, authorization.id)):
            return False
        if self._store.uncounted(total, authorization.id):
            return True
        return (time.time() if now is None else now) <= authorization.expires_at + self.retention

    @contextmanager
    def counting(self, total: str, peer: str, authorization: Authorization,
                 amount: int) -> Iterator[dict[bytes, bytes]]:
        """The rows that count a receipt this node countersigned for `peer` (`total` "paid") or a payment its user made
        to `peer` ("owed"), once, for the ledger to write in the batch of that receipt or payment: a stop, a request
        cut short or a kill -9 then leaves both or neither, and no start has a count to make up.  The peer's line
        stays locked (`lock_of`) until the batch is written, in the ledger's writer thread: no other change of it
        comes between the totals read here and the totals written, while every other peer's line is taken on as
        ever.  (An authorization is counted for its one peer, the node that asked for its receipt or its payee, so
        its marker is read and written under that peer's lock.)  This copy of the line follows only once the batch
        was written: one that fails leaves it as it was.  No rows if it was counted already."""
        with self.lock_of(peer):
            if not self._countable(total, authorization, None):
                yield {}
                return
            totals = self._totals(peer)
            totals[total] = min(MAX_LINE, totals[total] + amount)
            yield self._store.counted_rows(peer, totals, total, authorization.id, authorization.expires_at,
                                           self.retention)
            self._lines[peer] = totals  # written
            self._changed(peer)

    def _add(self, peer: str, total: str, authorization: Authorization, amount: int, now: float | None) -> None:
        with self.lock_of(peer):
            if not self._countable(total, authorization, now):
                return
            totals = self._totals(peer)
            totals[total] = min(MAX_LINE, totals[total] + amount)
            # (retired once no count can come: `_countable`)
            self._store.put_counted(peer, totals, total, authorization.id, authorization.expires_at, self.retention)
            self._lines[peer] = totals  # written
            self._changed(peer)

    def collectable(self, peer: str) -> int:
        """What a prepayment from `peer` may still carry: what this node can collect from it, less what it paid."""
        with self.lock_of(peer):
            totals = self._totals(peer)
            return max(0, collectable(totals, self.recognised(peer)) - totals["paid"])

    def _put(self, peer: str, totals: dict[str, int]) -> None:
        self._store.put_totals(peer, totals)
        self._changed(peer)
        self._lines[peer] = totals

    def recognition_changed(self) -> None:
        """The user set a peer's recognition: its credit (`credit`), and so its backing, may have changed with it.
        No line changes: the lines' own locks are not taken."""
        with self._recognitions_lock:
            self._recognitions += 1

    def set_credit(self, peer: str, amount: int | None) -> None:
        """The credit line the user gives a peer it recognises (None: back to ledger.peer_credit)."""
        if amount is not None and (type(amount) is not int or not 0 <= amount <= MAX_LINE):
            raise InvalidArgument(f"a credit line is 0 to {MAX_LINE} micro-credits, not {quoted(amount)}")
        with self.lock_of(peer):
            self._credits.pop(peer, None)
            self._store.set_credit(peer, amount)
            self._changed(peer)


__all__ = ["MAX_LINE", "TrustLines"]
