"""Asks and bids: priced capacity and need slots, their price units and their digests.

A price is an integer number of micro-credits per *price unit* of the slot's kind (never a float):

- storage: per GiB-hour of bytes held (the slot's quantity is bytes, held over its window);
- compute: per million fuel (the slot's quantity is fuel; the window only places it in time).

`units_cost` turns a quantity, a duration and a price into micro-credits with the ledger's own
pricing functions (integer math, rounded up once).  `order_digest` is the SHA-256 of an order's
canonical encoding: the auction breaks price ties by it, so every node orders equal prices alike.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ... import codec
from ...allocation.core.models import CapacitySlot, NeedSlot
from ...allocation.core.models import Fraction01, replaced
from ...errors import MarketError
from ...ledger.core.pricing import price_compute, price_storage

PRICE_UNITS: dict[str, str] = {
    "storage": "GiB-hour",  # micro-credits per GiB (2**30 bytes) held for one hour
    "compute": "million fuel",  # micro-credits per 1,000,000 units of fuel
}
"""The kinds the market trades, and what one price unit of each is."""

MAX_PREFER = 64
"""Providers a bid may list in `prefer` (a longer list adds nothing but cost)."""

MAX_PRICE = 10**12
"""Micro-credits per price unit (a million credits per GiB-hour or per million fuel): no market clears above."""

Price = Annotated[int, Field(ge=0, le=MAX_PRICE, strict=True)]


def _known_kind(kind: str) -> str:
    if kind not in PRICE_UNITS:
        raise ValueError(f"the market trades {' and '.join(sorted(PRICE_UNITS))}, not {kind!r}")
    return kind


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Ask(_Frozen):
    """A capacity slot offered at `price` micro-credits per price unit of its kind (the reserve price)."""

    slot: CapacitySlot
    price: Price

    @field_validator("slot")
    @classmethod
    def _kind(cls, v: CapacitySlot) -> CapacitySlot:
        _known_kind(v.kind)
        return v


class Bid(_Frozen):
    """A need slot wanted at up to `price` micro-credits per price unit of its kind.

    `group`: the needs of one recipient in one group go to distinct providers (the shares of one
    put).  `min_availability`: providers whose availability is below it (or unknown) are left
    out.  `prefer`: providers tried first among otherwise equal slots, in this order.  Providers to
    avoid are `slot.filters.deny` (the allocator's own filter)."""

    slot: NeedSlot
    price: Price
    group: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    min_availability: Fraction01 | None = None
    prefer: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=200)], ...],
                      Field(max_length=MAX_PREFER)] = ()

    @field_validator("slot")
    @classmethod
    def _kind(cls, v: NeedSlot) -> NeedSlot:
        _known_kind(v.kind)
        return v


def renamed(bid: Bid, need_id: str) -> Bid:
    """`bid` as the need `need_id` (a put's shares' needs differ only in their ids): a copy, as `model_copy` makes
    it, without checking again what `bid`'s fields already passed (`replaced`)."""
    return replaced(bid, {"slot": replaced(bid.slot, {"id": need_id})})


WEB_TAG = "web"
"""The tag of a compute ask whose provider has a web listener (node.web_listen): only such a provider can serve a
web function, so a function's placement requires it; jobs and invokes take any compute ask."""


def offer_asks(owner: str, seconds: int, bucket: int, storage: tuple[int, int] | None,
               compute: tuple[tuple[int, int] | None, ...], compute_tags: tuple[str, ...] = ()) -> list[Ask]:
    """A provider's asks for time bucket `bucket` (of `seconds`) and the next: `storage` is the (quantity, ask) of
    its free storage in both (None: none offered), `compute[i]` that of its fuel in the i-th (None: none), tagged
    `compute_tags`."""
    asks = []
    for b, offered in zip((bucket, bucket + 1), compute):
        start, end = b * seconds, (b + 1) * seconds
        if storage is not None:
            asks.append(Ask(slot=CapacitySlot(id=f"storage-{b}", owner=owner, kind="storage", quantity=storage[0],
                                              start=start, end=end), price=storage[1]))
        if offered is not None:
            asks.append(Ask(slot=CapacitySlot(id=f"compute-{b}", owner=owner, kind="compute", quantity=offered[0],
                                              start=start, end=end, tags=compute_tags), price=offered[1]))
    return asks


def units_cost(kind: str, quantity: int, seconds: int, price: int) -> int:
    """Micro-credits for `quantity` units of `kind` over `seconds` at `price` per price unit.

    storage: ceil(bytes x seconds x price / (3600 x 2**30)); compute: ceil(fuel x price / 10**6)
    (the window does not matter).  Exact integers, rounded up once (xsc.ledger.core.pricing)."""
    if kind == "storage":
        return price_storage(quantity, seconds, price)
    if kind == "compute":
        return price_compute(quantity, price)
    raise MarketError(f"no price unit for kind {kind!r}", hint=f"the market trades {', '.join(sorted(PRICE_UNITS))}")


_ORDER_TAG = b"XSC-MARKET-ORDER-1\n"


def order_digest(owner: str, side: str, slot: CapacitySlot | NeedSlot, price: int, *, group: str | None = None,
                 min_availability: Decimal | None = None, prefer: tuple[str, ...] = ()) -> bytes:
    """SHA-256 of the order's canonical encoding: a tag line, then sorted compact JSON of every field
    (the slot in its JSON form, decimals as their text)."""
    body: dict[str, Any] = {
        "owner": owner, "side": side, "slot": slot.model_dump(mode="json"), "price": price,
        "group": group, "prefer": list(prefer),
        "min_availability": None if min_availability is None else str(min_availability),
    }
    return hashlib.sha256(_ORDER_TAG + codec.canonical(body)).digest()


def ask_digest(ask: Ask) -> bytes:
    """`order_digest` of an ask, computed once per Ask object (they are frozen)."""
    return _cached(ask, lambda: order_digest(ask.slot.owner, "ask", ask.slot, ask.price))


def bid_digest(bid: Bid) -> bytes:
    """`order_digest` of a bid, computed once per Bid object (they are frozen)."""
    return _cached(bid, lambda: order_digest(bid.slot.owner, "bid", bid.slot, bid.price, group=bid.group,
                                             min_availability=bid.min_availability, prefer=bid.prefer))


# Frozen orders keep their digest while they live; an entry holds the object itself, so its id
# cannot be reused by another object while the entry exists.
_DIGESTS: dict[int, tuple[Any, bytes]] = {}
_DIGESTS_KEPT = 1 << 16


def _cached(order: Ask | Bid, make) -> bytes:
    hit = _DIGESTS.get(id(order))
    if hit is not None and hit[0] is order:
        return hit[1]
    digest = make()
    if len(_DIGESTS) >= _DIGESTS_KEPT:
        _DIGESTS.clear()
    _DIGESTS[id(order)] = (order, digest)
    return digest


def need_key(owner: str, need_id: str) -> str:
    """How a need is named across the market: OWNER/ID (node ids never contain '/')."""
    return f"{owner}/{need_id}"
