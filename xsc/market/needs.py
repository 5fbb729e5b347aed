"""This node's need slots, and the one place they are written.

Three kinds of need, one registry:

- **a put's or a repair's needs** (`storage/quotes.py`): `open` while the put is matched and stores its
  shares, `withdraw` once it is over (stored or not);
- **an invoke's need** (`Dealing.compute_deal`): made with `make` and matched at once, never opened nor published
  (what it was placed from the allocation, `Dealing` holds until the call ends);
- **standing needs** (`xsc allocation need add`, `AllocationService.add_need`): `add_standing` keeps one in
  LevelDB (`keys.MARKET_STANDING`) until its window ends (`expire`) or it is removed; `spend` shrinks them by
  what the allocation served (the largest first).

What is published with the node's market commitment is `published`: the standing needs, and a put's needs once
they have been open PUBLISH_AFTER seconds (a small put is over before its needs could reach a peer: publishing
them would only re-sign and re-send the commitment twice per put to every subscriber).  Whoever reads the needs
says so in its constructor with `watch`: the market re-publishes on any change of what is published (it looks
again every second, when a put's needs come of age), the allocation computes again when a standing need changed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from .. import codec, keys
from ..allocation import NeedSlot, SlotFilter
from ..allocation.core.models import MAX_QUANTITY
from ..config import MarketSection
from ..errors import InvalidArgument, quoted
from .core.models import Bid, renamed

STANDING = "need-"  # the id prefix of a standing need
MAX_STANDING = 64  # standing needs per node
MAX_SECONDS = 10 * 365 * 86400
MAX_PRICE = 10**12
PUBLISH_AFTER = 1.0  # seconds a put's needs are open before they are published


class NeedStore:
    """Standing needs in LevelDB, by need id (JSON bids)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def load(self) -> Iterable[tuple[bytes, bytes]]:
        return self.db.iterator(prefix=keys.MARKET_STANDING)

    def drop(self, key: bytes) -> None:
        self.db.delete(key)

    def put(self, bid: Bid, *, sync: bool) -> None:
        self.db.put(keys.market_standing(bid.slot.id), codec.dumps(bid.model_dump(mode="json")), sync=sync)

    def delete(self, need_id: str) -> None:
        self.db.delete(keys.market_standing(need_id), sync=True)

    def replace(self, gone: Iterable[str], shrunk: Iterable[Bid]) -> None:
        """Needs removed and needs made smaller, in one write: a crash keeps all of it or none."""
        with self.db.write_batch(sync=True) as batch:
            for need_id in gone:
                batch.delete(keys.market_standing(need_id))
            for bid in shrunk:
                batch.put(keys.market_standing(bid.slot.id), codec.dumps(bid.model_dump(mode="json")))


class NeedRegistry:
    """The open need slots of this node, by need id: the only writer of them."""

    def __init__(self, *, db: Any, me: str, config: MarketSection) -> None:
        self.me = me
        self.config = config  # the default bids of standing needs
        self.store = NeedStore(db)
        # need id -> its bid; a put's share needs are kept as the first of them until one is read (`_bid`)
        self._needs: dict[str, Bid] = {}
        self._opened: dict[str, float] = {}  # a put's needs not yet published -> when they were opened (monotonic)
        self._watchers: list[tuple[Callable[[], None], bool]] = []  # (called on a change, standing ones only)
        self.withdrawals = 0  # calls of `withdraw` so far: what placed needs hold is looked at again once it moves
        for key, value in self.store.load():
            try:
                bid = Bid.model_validate(codec.loads(value))
            except ValueError:
                self.store.drop(key)
                continue
            if bid.slot.end > time.time():
                self._needs[bid.slot.id] = bid
            else:
                self.store.drop(key)

    def watch(self, changed: Callable[[], None], *, standing: bool = False) -> None:
        """Call `changed` whenever a need changes (`standing`: only when a standing need does)."""
        self._watchers.append((changed, standing))

    def _changed(self, standing: bool) -> None:
        for changed, only_standing in self._watchers:
            if standing or not only_standing:
                changed()

    # --- reading --------------------------------------------------------------------------------------
    def _bid(self, need_id: str, bid: Bid) -> Bid:
        """The need `need_id`, made from the need it was opened as (`open_alike`) the first time it is read."""
        if bid.slot.id != need_id:
            bid = self._needs[need_id] = renamed(bid, need_id)
        return bid

    def bids(self) -> tuple[Bid, ...]:
        """Every open need (`published` says which the node's commitment carries)."""
        return tuple(self._bid(n, b) for n, b in list(self._needs.items()))

    def is_open(self, need_id: str) -> bool:
        return need_id in self._needs

    def open_ids(self) -> set[str]:
        """The ids of the open needs (without making the needs opened alike)."""
        return set(self._needs)

    def published(self, now: float | None = None) -> tuple[Bid, ...]:
        """The needs published with the node's commitment: all but a put's needs open less than PUBLISH_AFTER s."""
        now = time.monotonic() if now is None else now
        for need_id in [n for n, at in self._opened.items() if now - at >= PUBLISH_AFTER]:
            del self._opened[need_id]
        return tuple(self._bid(n, b) for n, b in list(self._needs.items()) if n not in self._opened)

    def ids(self, kind: str) -> set[str]:
        return {nid for nid, b in self._needs.items() if b.slot.kind == kind}

    def standing(self) -> list[Bid]:
        """The standing needs, by id."""
        return [b for n, b in sorted(self._needs.items()) if n.startswith(STANDING)]

    def __len__(self) -> int:
        return len(self._needs)

    # --- the needs of puts and invokes ----------------------------------------------------------------
    def make(self, need_id: str, kind: str, quantity: int, seconds: int, max_price: int, *,
             group: str | None = None, avoid: tuple[str, ...] = (), prefer: tuple[str, ...] = (),
             min_availability: Decimal | None = None, require_tags: tuple[str, ...] = ()) -> Bid:
        """A need slot of this node from now for `seconds` (not opened: see `open`), served only by capacity slots
        that carry every tag of `require_tags`."""
        start = int(time.time())
        slot = NeedSlot(id=need_id, owner=self.me, kind=kind, quantity=quantity, start=start,
                        end=start + max(seconds, 1), filters=SlotFilter(deny=tuple(avoid), require_tags=require_tags))
        return Bid(slot=slot, price=max_price, group=group, prefer=tuple(prefer), min_availability=min_availability)

    def open(self, bids: Iterable[Bid]) -> None:
        """A put's needs, open while it runs (published once they have been open PUBLISH_AFTER seconds)."""
        now = time.monotonic()
        for b in bids:
            self._needs[b.slot.id] = b
            self._opened[b.slot.id] = now

    def open_alike(self, bid: Bid, need_ids: Iterable[str]) -> None:
        """`open` of the needs `need_ids`, each `bid` under its own id (a put's shares: their needs differ only in
        their ids).  Each is made as it is first read (`_bid`): a small put is over before anything reads them."""
        now = time.monotonic()
        for need_id in need_ids:
            self._needs[need_id] = bid
            self._opened[need_id] = now

    def withdraw(self, need_ids: Iterable[str]) -> None:
        """The put is over (stored or not): its needs leave the book (those published: a change to publish)."""
        published = False
        self.withdrawals += 1
        for need in need_ids:
            published |= self._needs.pop(need, None) is not None and self._opened.pop(need, None) is None
        if published:
            self._changed(standing=False)

    # --- standing needs -------------------------------------------------------------------------------
    def add_standing(self, kind: Any, quantity: Any, seconds: Any = 3600, max_price: Any = None) -> Bid:
        """A standing need slot of this node: published with its offer and allocated in rounds until its window
        ends (or `remove_standing`).  Every argument is checked (they come from the user's API)."""
        if kind not in ("storage", "compute"):
            raise InvalidArgument(f"a need is of kind storage or compute, not {quoted(kind)}")
        for name, value, top in (("quantity", quantity, MAX_QUANTITY), ("seconds", seconds, MAX_SECONDS)):
            if type(value) is not int or not 1 <= value <= top:
                raise InvalidArgument(f"{name} must be an integer from 1 to {top}, not {quoted(value)}")
        if max_price is None:
            max_price = getattr(self.config, f"{kind}_bid")
        if type(max_price) is not int or not 0 <= max_price <= MAX_PRICE:
            raise InvalidArgument(f"max_price must be an integer from 0 to 10^12, not {quoted(max_price)}")
        if len(self.standing()) >= MAX_STANDING:
            raise InvalidArgument(f"at most {MAX_STANDING} standing needs per node",
                                  hint="remove one (DELETE /v1/allocation/needs/ID)")
        bid = self.make(f"{STANDING}{random.getrandbits(48):012x}", kind, quantity, seconds, max_price)
        self.store.put(bid, sync=True)
        self._needs[bid.slot.id] = bid
        self._changed(standing=True)
        return bid

    def remove_standing(self, need_id: str) -> bool:
        if not need_id.startswith(STANDING) or self._needs.pop(need_id, None) is None:
            return False
        self.store.delete(need_id)
        self._changed(standing=True)
        return True

    def spend(self, kind: str, units: int) -> None:
        """`units` of `kind` were served from the allocation: the standing needs of that kind shrink by as
        much (the largest first), so that what is allocated and what is served stay equal.  Written in one
        batch: a crash between two needs' writes would keep part of the units spent, and a restarted node
        would ask its providers again for what it was already served."""
        gone: list[str] = []
        shrunk: list[Bid] = []
        for bid in sorted((b for b in self.standing() if b.slot.kind == kind),
                          key=lambda b: (-b.slot.quantity, b.slot.id)):
            if units <= 0:
                break
            take = min(units, bid.slot.quantity)
            units -= take
            if take == bid.slot.quantity:
                gone.append(bid.slot.id)
            else:
                shrunk.append(bid.model_copy(update={"slot": bid.slot.model_copy(
                    update={"quantity": bid.slot.quantity - take})}))
        self.store.replace(gone, shrunk)
        for need_id in gone:
            self._needs.pop(need_id, None)
        for bid in shrunk:
            self._needs[bid.slot.id] = bid
        self._changed(standing=True)

    def expire(self, now: float | None = None) -> None:
        """Standing needs whose window ended leave."""
        now = time.time() if now is None else now
        for bid in [b for b in self.standing() if b.slot.end <= now]:
            self.remove_standing(bid.slot.id)

