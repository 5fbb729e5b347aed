"""What a capacity slot can really sell to the needs present, given that a group's needs go to distinct
providers (pure).

The shares of one put are a group: at most one per provider while there are enough providers.
Offered as is, a provider with plenty of room would supply a whole group on its own, the clearing
price would fall to the cheapest ask, and only the cheapest provider would be left to serve six
needs that must go to six nodes.  So, before clearing:

- a group g of n_g needs whose bids P_g distinct providers can serve (a compatible slot with room
  for the need, at an ask <= the bid, of a provider as available as the need asks: `providers_of`)
  takes at most ceil(n_g / P_g) needs from any one provider: `spread_groups` splits it into
  sub-groups of at most P_g needs, each placed on distinct providers (so with fewer providers
  than needs, the needs spread as evenly as possible);
- a slot's quantity is capped at its *effective supply*: for each group it can serve,
  ceil(n_g / P_g) x the group's largest need, plus every ungrouped need it can serve, "serve" as
  `providers_of` counts it (`cap_supply`); a slot that can serve none of the needs present does not take part, unless it
  asks more than every bid (then it stays, trades nothing, and the explanation is about price) or
  only the needs' own filters keep it out (it stays, and the explanation says they filtered it out).
  The cap changes no slot's room for any single need, only what the auction counts.

The clearing price may fall below the ask of a provider counted in P_g: the auction counts units, not who sells
them, and one provider's supply may stand for the group's share and for other needs beside it (a group of three at
2 over asks 1, 1 and 2, beside another's bid at 1, clears at 1: three needs, two providers).  `match_spread` then
prices that market at a floor, the ask of the P_g-th cheapest of those providers (at most the group's bid): the
bids under it are not served, and the group is matched on its P_g providers.  Only the matching node's own groups
raise a floor: the others' bids compete in its matching, and their own nodes match them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from decimal import Decimal
from typing import Any, Mapping, Sequence

from ...allocation.core.matching import compatible
from ...allocation.core.models import SlotFilter
from .auction import bucket_of
from .matching import MarketResult, match_needs
from .models import Ask, Bid, need_key

_UNKNOWN: Mapping[str, Decimal] = {}  # no provider's availability known: a need asking for one is served by none
SPREAD_ROUNDS = 3  # matchings again, each at the floors the groups the last one left short need


def _servable(ask: Ask, bid: Bid, availability: Mapping[str, Decimal] | None = None) -> bool:
    """Can `ask` serve `bid` at a price within its bid?  With `availability`, only if its provider is as available as
    the bid asks (unknown counts as 0), as `match_needs` requires: a provider it would refuse must not be counted."""
    return ask.price <= bid.price and _fits(ask, bid, availability)


def _fits(ask: Ask, bid: Bid, availability: Mapping[str, Decimal] | None, quantity: bool = True) -> bool:
    """`_servable` but for the price (and but for the quantity: not `quantity`)."""
    return (not quantity or ask.slot.quantity >= bid.slot.quantity) and compatible(ask.slot, bid.slot) and (
        availability is None or bid.min_availability is None
        or availability.get(ask.slot.owner, Decimal(0)) >= bid.min_availability)


def _groups(bids: Sequence[Bid]) -> dict[tuple[str, str], list[Bid]]:
    groups: dict[tuple[str, str], list[Bid]] = defaultdict(list)
    for b in bids:
        if b.group is not None:
            groups[(b.slot.owner, b.group)].append(b)
    return groups


def providers_of(asks: Sequence[Ask], members: Sequence[Bid], availability: Mapping[str, Decimal]) -> int:
    """How many distinct providers of `asks` can serve some need of the group `members`: the one count that decides
    whether a group is split (`spread_groups`), what its market's floor is (`match_spread`) and whether a deal
    places it by the call market alone (`crowded_groups`).  Counted up to the group's size, as each of those reads
    no more: a group costs the asks looked at until that many providers are found, not every ask of the book."""
    found: set[str] = set()
    for a in asks:
        if a.slot.owner not in found and any(_servable(a, b, availability) for b in members):
            found.add(a.slot.owner)
            if len(found) >= len(members):
                break
    return len(found)


def spread_groups(asks: Sequence[Ask], bids: Sequence[Bid],
                  availability: Mapping[str, Decimal] = _UNKNOWN) -> list[Bid]:
    """`bids` with each group too large for the providers that can serve it split into sub-groups
    (`group#0`, `group#1`, ...) of at most as many needs as there are such providers (`providers_of`)."""
    out: list[Bid] = [b for b in bids if b.group is None]
    for (_, group), members in sorted(_groups(bids).items()):
        providers = providers_of(asks, members, availability)
        if providers == 0 or providers >= len(members):
            out.extend(members)
            continue
        ordered = sorted(members, key=lambda b: b.slot.id)
        out.extend(b.model_copy(update={"group": f"{group}#{i // providers}"}) for i, b in enumerate(ordered))
    return out


def crowded_groups(asks: Sequence[Ask], bids: Sequence[Bid],
                   availability: Mapping[str, Decimal] = _UNKNOWN) -> set[tuple[str, str]]:
    """The groups (owner, group) of `bids` that fewer providers can serve than they hold needs: those
    `spread_groups` deals round the providers there are."""
    return {key for key, members in _groups(bids).items() if providers_of(asks, members, availability) < len(members)}


def cap_supply(asks: Sequence[Ask], bids: Sequence[Bid],
               availability: Mapping[str, Decimal] = _UNKNOWN) -> list[Ask]:
    """`asks` with each slot's quantity capped at what it can sell to `bids` (see the module docstring)."""
    groups = _groups(bids)
    sizes = {key: (len(m), providers_of(asks, m, availability)) for key, m in groups.items()}
    # The same needs without their own filters (their minimum availability among them): a slot a need's filters
    # exclude still takes part, so that the need is explained as filtered out rather than as finding no slot.
    unfiltered = [b.model_copy(update={"slot": b.slot.model_copy(update={"filters": SlotFilter()}),
                                       "min_availability": None})
                  if not b.slot.filters.is_empty() or b.min_availability is not None else b for b in bids]
    owners = any(not a.slot.filters.is_empty() for a in asks)
    filtered = _Supply(bids, groups, sizes, owners).all(asks, availability)
    plain = filtered if all(u is b for u, b in zip(unfiltered, bids)) else None
    dearest = max((b.price for b in bids), default=None)
    out = []
    for k, a in enumerate(asks):
        supply = filtered[k]
        if supply == 0:
            if plain is None:
                plain = _Supply(unfiltered, _groups(unfiltered), sizes, owners).all(asks, availability)
            supply = plain[k]
        if supply == 0:
            if dearest is not None and a.price > dearest:
                out.append(a)  # too dear for every bid: it takes part, trades nothing, and explains why
            continue  # otherwise it could sell nothing here: it does not take part
        if supply < a.slot.quantity:
            a = a.model_copy(update={"slot": a.slot.model_copy(update={"quantity": supply})})
        out.append(a)
    return out


class _Supply:
    """What each ask can sell to one set of bids, served as `providers_of` counts them (availability included: a need
    its provider is not available enough for would count units the auction can clear but no matching can place
    there), without walking the bids for each ask.

    Whether an ask can serve a need depends on the need's price, its quantity and on the rest of it (kind, window,
    place, tags, filters, minimum availability, and its owner only where some ask filters on owners).  The needs are
    classed by that rest, so an ask tests one need of each class; within a class what it can serve are the needs
    bidding at least its ask that it has room for, summed for every ask at once: the asks dearest first, each need
    entered in a tree of sums by quantity (`_Sums`) once the asks reach its bid.  A group counts once, its largest
    servable need times its share of each provider: a group whose needs all fall in one class at one price and one
    quantity is one such entry; any other group is walked need by need."""

    def __init__(self, bids: Sequence[Bid], groups: dict, sizes: dict, owners: bool) -> None:
        self.classes: dict[tuple, tuple[Bid, list[tuple[int, int, int]]]] = {}
        self.walked: list[tuple[int, list[Bid]]] = []
        self.owners = owners

        def enter(b: Bid, amount: int) -> None:
            self.classes.setdefault(_class_of(b, owners), (b, []))[1].append((b.price, b.slot.quantity, amount))

        for b in bids:
            if b.group is None:
                enter(b, b.slot.quantity)
        for key, members in groups.items():
            n, providers = sizes[key]
            share = -(-n // max(providers, 1))
            first = members[0]
            if all(b.price == first.price and b.slot.quantity == first.slot.quantity
                   and _class_of(b, owners) == _class_of(first, owners) for b in members):
                enter(first, share * first.slot.quantity)
            else:
                self.walked.append((share, members))

    def all(self, asks: Sequence[Ask], availability: Mapping[str, Decimal]) -> list[int]:
        """What each of `asks` can sell, in their order."""
        supply = [0] * len(asks)
        for one, entries in self.classes.values():
            fitting = sorted((k for k, a in enumerate(asks) if _fits(a, one, availability, quantity=False)),
                             key=lambda k: -asks[k].price)
            if not fitting:
                continue
            entries.sort(key=lambda e: -e[0])
            sums = _Sums(sorted({e[1] for e in entries}))
            entered = 0
            for k in fitting:
                a = asks[k]
                while entered < len(entries) and entries[entered][0] >= a.price:
                    sums.add(entries[entered][1], entries[entered][2])
                    entered += 1
                supply[k] += sums.up_to(a.slot.quantity)
        for share, members in self.walked:
            for k, a in enumerate(asks):
                served = [b.slot.quantity for b in members if _servable(a, b, availability)]
                if served:
                    supply[k] += share * max(served)
        return supply


class _Sums:
    """Amounts entered by quantity (one of `quantities`, sorted), and the sum of those at quantities up to a bound: a
    Fenwick tree, O(log n) each."""

    def __init__(self, quantities: list[int]) -> None:
        self.quantities = quantities
        self.tree = [0] * (len(quantities) + 1)

    def add(self, quantity: int, amount: int) -> None:
        i = bisect_right(self.quantities, quantity)
        while i <= len(self.quantities):
            self.tree[i] += amount
            i += i & -i

    def up_to(self, quantity: int) -> int:
        i, total = bisect_right(self.quantities, quantity), 0
        while i:
            total += self.tree[i]
            i -= i & -i
        return total


def _class_of(b: Bid, owners: bool) -> tuple:
    s = b.slot
    return (s.kind, s.start, s.end, s.location, s.tags, s.filters, b.min_availability, s.owner if owners else None)


def _floor(asks: Sequence[Ask], members: list[Bid], wanted: int, availability: Mapping[str, Decimal]) -> int:
    """The lowest price at which `wanted` distinct providers can serve some need of `members`."""
    cheapest: dict[str, int] = {}
    for a in asks:
        if any(_servable(a, b, availability) for b in members):
            cheapest[a.slot.owner] = min(cheapest.get(a.slot.owner, a.price), a.price)
    return sorted(cheapest.values())[wanted - 1]


def match_spread(asks: Sequence[Ask], bids: Sequence[Bid], **kwargs: Any) -> MarketResult:
    """`match_needs` of `bids` spread over the providers of `asks` (`spread_groups`, `cap_supply`), each market where
    a group (of `first`, when given) is left short because it cleared under the asks of providers the group was
    counted on priced at the floor that brings them in (see the module docstring); `kwargs` are `match_needs`'.
    Floors only rise, each at most to a group's bid: the rounds end."""
    availability = kwargs["availability"]
    needs = spread_groups(asks, bids, availability)
    capped = cap_supply(asks, needs, availability)
    result = match_needs(capped, needs, **kwargs)
    # The groups of the node matching its own needs (`first`): the others' bids only compete here, and their own
    # nodes match them.
    first = kwargs.get("first")
    groups = {key: members for key, members in _groups(bids).items() if first is None or key[0] == first}
    seconds = kwargs["bucket_seconds"]
    floors: dict[tuple[str, int], int] = {}
    for _ in range(SPREAD_ROUNDS):
        raised = dict(floors)
        for members in groups.values():
            if all(need_key(b.slot.owner, b.slot.id) in result.assignments for b in members):
                continue
            market = (members[0].slot.kind, bucket_of(members[0].slot.start, seconds))
            clearing = result.clearings.get(market)
            counted = min(providers_of(asks, members, availability), len(members))
            if clearing is None or clearing.price is None or counted == 0:
                continue
            floor = _floor(asks, members, counted, availability)
            if clearing.price < floor <= min(b.price for b in members) and floor > raised.get(market, 0):
                raised[market] = floor
        if raised == floors:
            break
        floors = raised
        result = match_needs(capped, needs, floors=floors, **kwargs)
    return result
