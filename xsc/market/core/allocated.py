"""Which of a node's needs its allocation places, and where (pure): the decision `Dealing.deal` carries out
(xsc/market/dealing.py, docs/allocation.md "Serving") and the property tests check it by.

A deal clears the call market first.  The needs the allocation may place (`placeable`: every need but those of a
group too large for its providers, which the call market alone deals round them evenly) are matched, kind by kind,
on the asks of the providers whose allocation states still give this node units, each slot capped at those units
(`within_room`), and kept where that provider still has the units and asks at most the call market's clearing price
of the need's (kind, bucket), at that price (`from_allocation`).  The rest go to the call market, each kept off the
providers its group's placed needs took (`apart`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from .matching import Assignment, match_needs
from .models import Ask, Bid, need_key, units_cost
from .supply import crowded_groups

# A decision in steps: it yields each matching it needs, as (function, arguments), and is sent the result (the
# caller runs it where it likes: `Dealing` in its CPU pool, a test in place).
Steps = Generator[tuple[Callable[..., Any], dict], Any, Any]


def placeable(bids: Sequence[Bid], asks: Sequence[Ask], availability: Mapping[str, Decimal]) -> list[Bid]:
    """The needs of `bids` the allocation may place: placed in part from it, a group with fewer providers than needs
    would pile its other needs onto the providers the allocation did not use, or find none (`crowded_groups`)."""
    crowded = crowded_groups(asks, [b for b in bids if b.group is not None], availability)
    return [b for b in bids if (b.slot.owner, b.group) not in crowded]


def within_room(asks: Sequence[Ask], room: Mapping[str, int], kind: str) -> list[Ask]:
    """The asks of `kind` of the providers `room` still gives units (provider -> units), each slot capped at them."""
    return [a.model_copy(update={"slot": a.slot.model_copy(update={"quantity": min(a.slot.quantity,
                                                                                   room[a.slot.owner])})})
            for a in asks if a.slot.kind == kind and room.get(a.slot.owner, 0) > 0]


def from_allocation(wanted: Sequence[Bid], asks: Sequence[Ask], room: dict[str, int], clearings: Mapping,
                    owner: str, **match: Any) -> Steps:
    """Needs of `wanted` (of one kind, `owner`'s) matched on `asks` (`within_room`) and kept where their provider's
    `room` still holds them and its ask is at most the clearing price of their (kind, bucket) in `clearings`, at that
    price: need id -> assignment; `room` less what they took.  `match`: the rest of `match_needs`' arguments."""
    if not asks or not wanted:
        return {}
    result = yield match_needs, {"asks": list(asks), "bids": list(wanted), **match, "allow_self": False}
    asked = {(a.slot.owner, a.slot.id): a.price for a in asks}
    out: dict[str, Assignment] = {}
    for b in wanted:
        a = result.assignments.get(need_key(owner, b.slot.id))
        if a is None or room.get(a.provider, 0) < b.slot.quantity:
            continue
        clearing = clearings.get((b.slot.kind, a.bucket))
        price = None if clearing is None else clearing.price
        ask = asked.get((a.provider, a.capacity_slot))
        if price is None or b.price < price or ask is None or ask > price:
            continue
        room[a.provider] -= b.slot.quantity
        out[b.slot.id] = replace(a, price=price, allocated=True,
                                 cost=units_cost(b.slot.kind, b.slot.quantity, b.slot.end - b.slot.start, price))
    return out


def apart(bids: Sequence[Bid], served: Mapping[str, Assignment]) -> list[Bid]:
    """The needs of `bids` not in `served`, each kept off (denied) the providers its group's served needs took."""
    taken: dict[str, set[str]] = {}
    for b in bids:
        if b.slot.id in served and b.group is not None:
            taken.setdefault(b.group, set()).add(served[b.slot.id].provider)
    return [b if not taken.get(b.group) else b.model_copy(update={"slot": b.slot.model_copy(update={
                "filters": b.slot.filters.model_copy(update={
                    "deny": tuple(sorted(set(b.slot.filters.deny) | taken[b.group]))})})})
            for b in bids if b.slot.id not in served]
