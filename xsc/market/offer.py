"""What this node offers on the market: capacity slots for the current time bucket and the next -- free storage bytes
and compute fuel -- each with an ask from its pricing policy (the ask rises with utilization), the fuel it ran in each
bucket, and the asks it published lately (one is honoured a while after a newer, higher one replaced it).

`MarketService` publishes `own_asks` with its commitment and reaches this as `market.offer`; a gateway asks `ask`
for every put, a provider `honoured_ask` for every share and paid call it takes, and `note_fuel` as it runs them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..allocation.core.models import MAX_QUANTITY
from ..config import MarketSection
from ..errors import NodeStopping
from ..tasks import now_ms
from .core.models import WEB_TAG, Ask, offer_asks
from .core.pricing import PricingPolicy, ask_price

HONOUR_SECONDS = 60  # a published ask is honoured this long after a newer, higher one replaced it


class Offer:
    def __init__(self, *, me: str, config: MarketSection, compute_threads: int,
                 storage_usage: Callable[[], tuple[int, int]], web: bool, is_leaving: Callable[[], bool],
                 touch: Callable[[], None]) -> None:
        self.me = me
        self.config = config
        # on its compute asks: whether it has a web listener, so can serve a web function (`WEB_TAG`)
        self.compute_tags = (WEB_TAG,) if web else ()
        self.compute_threads = compute_threads
        self.storage_usage = storage_usage  # () -> (bytes used, capacity) of this node's share store
        self.is_leaving = is_leaving  # () -> whether the market is leaving (MarketService.leaving)
        self.touch = touch  # what it offers changed: the market publishes again soon
        self.fuel_used: dict[int, int] = {}  # bucket -> fuel this node ran in it
        self._policies: dict[str, tuple[tuple[int, int, int], PricingPolicy]] = {}  # kind -> (its config, it)
        self._asks: tuple[tuple, list[Ask]] | None = None  # (what own_asks were made of, the asks)
        self._published: deque[tuple[int, str, int]] = deque(maxlen=256)  # (ms, kind, ask) as published

    def policy(self, kind: str) -> PricingPolicy:
        """The pricing policy of `kind` as configured now (made again only when that changed: every put and every
        paid call asks for it)."""
        c = self.config
        terms = (getattr(c, f"{kind}_ask_floor"), getattr(c, f"{kind}_ask_ceiling"), c.ask_exponent)
        kept = self._policies.get(kind)
        if kept is None or kept[0] != terms:
            kept = self._policies[kind] = (terms, PricingPolicy(floor=terms[0], ceiling=terms[1], exponent=terms[2]))
        return kept[1]

    def bucket(self, at_s: int | None = None) -> int:
        return (int(time.time()) if at_s is None else at_s) // self.config.bucket_seconds

    def compute_capacity(self) -> int:
        return min(self.compute_threads * self.config.fuel_per_second * self.config.bucket_seconds, MAX_QUANTITY)

    def own_asks(self) -> list[Ask]:
        """Capacity slots for the current bucket and the next, priced by the pricing policy; made again only when
        what they are made of changed (every market round and every quote asks for them, and four validated models
        made each time cost an idle node about 0.3 ms of CPU a second).  Leaving, they are no longer published, but
        this node's own puts still match them (a put admitted before the stop ends with the offers it had)."""
        now_bucket = self.bucket()
        used, capacity = self.storage_usage()
        storage = (min(capacity - used, MAX_QUANTITY), ask_price(self.policy("storage"), used, capacity)) \
            if self.config.offer_storage and capacity > used else None
        made_of = (self.config.bucket_seconds, now_bucket, storage,
                   tuple(self._compute_offer(b) for b in (now_bucket, now_bucket + 1)))
        if self._asks is None or self._asks[0] != made_of:
            self._asks = (made_of, offer_asks(self.me, *made_of, compute_tags=self.compute_tags))
        return list(self._asks[1])

    def _compute_offer(self, b: int) -> tuple[int, int] | None:
        """The fuel this node offers in bucket `b` and its ask for it (None: no compute offered)."""
        fuel = self.compute_capacity()
        # Offered in steps of a thousandth of the bucket: every invoke must not re-sign and re-send the offer.
        step = max(1, fuel // 1000)
        fuel_used = min(-(-self.fuel_used.get(b, 0) // step) * step, fuel)
        if not self.config.offer_compute or fuel <= fuel_used:
            return None
        return fuel - fuel_used, ask_price(self.policy("compute"), fuel_used, fuel)

    def ask(self, kind: str) -> int | None:
        """This node's ask now for `kind`, None if it does not offer it."""
        # Without building every offer: a provider asks it for every paid call, a gateway for every put.
        if kind == "compute":
            offered = self._compute_offer(self.bucket())
            return None if offered is None else offered[1]
        used, capacity = self.storage_usage()
        if kind != "storage" or not self.config.offer_storage or capacity <= used:
            return None
        return ask_price(self.policy("storage"), used, capacity)

    def honoured_ask(self, kind: str) -> int | None:
        """The lowest price this node takes a deal at: its ask now, or a lower one it published within the
        last HONOUR_SECONDS (a gateway matched on that offer before our newer one reached it).  Leaving, it
        refuses the work peers offer (503 `node-stopping`, nothing taken: its sender places it elsewhere at once)."""
        if self.is_leaving():
            raise NodeStopping("this node is stopping: it takes no new work", hint="place it on another provider")
        now = self.ask(kind)
        if now is None:
            return None
        horizon = now_ms() - HONOUR_SECONDS * 1000
        recent = [price for at, k, price in self._published if k == kind and at >= horizon]
        return min([now, *recent])

    def published(self, timestamp: int, asks: list[Ask]) -> None:
        """`asks` were published at `timestamp` (ms): those of the current bucket are honoured a while."""
        self._published.extend((timestamp, a.slot.kind, a.price) for a in asks
                               if a.slot.id.endswith(f"-{self.bucket()}"))

    def note_fuel(self, fuel: int) -> None:
        b = self.bucket()
        self.fuel_used[b] = self.fuel_used.get(b, 0) + fuel
        for old in [k for k in self.fuel_used if k < b]:
            del self.fuel_used[old]
        self.touch()
