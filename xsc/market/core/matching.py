"""Who gets what: clear every call market, then give each need one capacity slot (or none).

`match_needs` is pure and deterministic: the result depends on its arguments, never on their order.

1. Clearing.  Every (kind, bucket) clears over all asks and bids (xsc.market.core.auction; which
   markets an ask or bid takes part in: xsc.market.core.orders).  Let p be the clearing price of a
   need's (kind, bucket).  The need takes part only if its bid >= p; a capacity slot may serve it
   only if the slot's ask <= p and the slot took part in that market (its window reaches the
   need's bucket).
2. Eligibility.  Needs are indivisible (a share cannot be split over nodes): a slot can serve a
   need when they are compatible (`xsc.allocation.compatible`: kind, window, location, both
   sides' filters, so the need's `deny` list), the slot's quantity holds all of the need, and the
   provider's availability is at least the bid's `min_availability` (an unknown availability
   counts as 0).
3. Priority of service.  The allocator (`xsc.allocation.compute_allocation`) runs over
   commitments made of the priced-in asks and bids and the `recognition` weights: every provider
   divides its slots among the needs of the peers it recognises, tier 1 by mutual recognition,
   tier 2 one-way.  A need's tier is the best tier of the units it was given (1, 2, or open when
   none).  Needs are served in order of (tier, bid price high to low, `first`'s needs before others',
   order digest, OWNER/ID).
4. Choice of slot.  Among the eligible slots with room for all of the need, whose provider holds
   no other need of the same (recipient, group): the slot the allocator gave this need the most
   units of, then a provider earlier in the bid's `prefer`, then the lowest ask, then the ask's
   digest, then (owner, id).  The slot's room shrinks by the need's quantity.
5. Price.  Every assignment is at p, the uniform price of its (kind, bucket); `cost` is what the
   need costs at p (`units_cost`: storage over the need's window, compute per fuel).

Every need gets an `Explanation`; the codes, checked in this order for a need left unserved:
no_compatible_slot (no slot is compatible and large enough, whatever the need's own filters), filtered_out
(its deny/allow/tag filters or min_availability exclude them all), no_trade (nothing trades in
its market), below_clearing_price (its bid < p), no_compatible_slot again when every remaining
slot asks more than p, and capacity_taken (needs served before it, or the other needs of its
group, took the remaining room).  A served need is `matched`.

Known weakness: the choice is greedy.  A need served early may take the only slot a later need
could use, and the needs of a group are placed one by one, so a group whose needs differ may be
placed in part where another order would place it all (the shares of one put are alike, so any
order places them alike).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal, Mapping, Sequence

from pydantic import ValidationError

from ...allocation.core.compute import compute_allocation
from ...allocation.core.models import Commitment, SlotFilter
from ...itc import Stamp
from ...errors import AmbiguousNeed, MarketError, NeedNotFound, from_validation
from ...units import counted
from .ask_classes import AskClasses
from .auction import Clearing, bucket_of, clear_book
from .models import PRICE_UNITS, WEB_TAG, Ask, Bid, ask_digest, bid_digest, need_key, units_cost
from .orders import market_orders

Tier = Literal["mutual", "one-way", "open"]
_TIERS: dict[int, Tier] = {1: "mutual", 2: "one-way", 3: "open"}

CODES = ("matched", "no_compatible_slot", "below_clearing_price", "filtered_out", "capacity_taken", "no_trade")


@dataclass(frozen=True)
class Assignment:
    """Need `need_id` of `recipient` goes whole into `provider`'s capacity slot `capacity_slot`,
    at `price` per price unit (the clearing price); `cost` is what it costs at that price."""

    need_id: str
    recipient: str
    provider: str
    capacity_slot: str
    quantity: int
    price: int
    tier: Tier
    cost: int = 0
    kind: str = ""
    bucket: int = 0
    allocated: bool = False  # placed on a provider whose allocation state gives this need's owner the units

    def renamed(self, need_id: str) -> Assignment:
        """This assignment for need `need_id` of the same shape (a reused deal's): `dataclasses.replace(self,
        need_id=need_id)` without running `__init__` again (a sixth of the time; a small put makes six)."""
        copy = object.__new__(Assignment)
        copy.__dict__.update(self.__dict__, need_id=need_id)
        return copy


@dataclass(frozen=True)
class Explanation:
    """Why need `need_id` of `recipient` got what it got; `code` is one of CODES."""

    need_id: str
    code: str
    message: str
    recipient: str = ""
    clearing_price: int | None = None


@dataclass(frozen=True)
class MarketResult:
    """The clearings per (kind, bucket), and per need (named OWNER/ID, see `need_key`) its assignment
    (matched needs only) and its explanation (every need)."""

    clearings: dict[tuple[str, int], Clearing]
    assignments: dict[str, Assignment]
    explanations: dict[str, Explanation]
    tiers: dict[str, Tier] = field(default_factory=dict)


def explain(result: MarketResult, need_id: str) -> Explanation:
    """The explanation of a need, named OWNER/ID or by its bare id when only one recipient uses it."""
    found = result.explanations.get(need_id)
    if found is not None:
        return found
    matches = [e for e in result.explanations.values() if e.need_id == need_id]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousNeed(f"{len(matches)} recipients have a need {need_id!r}",
                            hint="name it as OWNER/ID: " + ", ".join(sorted(need_key(e.recipient, e.need_id)
                                                                           for e in matches)[:5]))
    raise NeedNotFound(f"no need {need_id!r} in the market", hint="needs are named by their id or as OWNER/ID")


def _accepts(f: SlotFilter, owner: str, tags: tuple[str, ...]) -> bool:
    if f.allow is not None and owner not in f.allow:
        return False
    if owner in f.deny:
        return False
    return all(t in tags for t in f.require_tags)


def _wanted(asks: Sequence[Ask], bids: Sequence[Bid], availability: Mapping[str, Decimal],
            allow_self: bool) -> list[Ask]:
    """The asks that take part in the clearing: those some bid of their kind would take from their provider (its
    filters, its minimum availability, its owner's own capacity).  A provider every need avoids sets no price:
    left in, its lower ask would clear the market below the providers the needs allow, and they would trade
    nothing (it stays in the book to explain the filter)."""
    open_kinds = {b.slot.kind for b in bids if allow_self and b.min_availability is None and b.slot.filters.is_empty()}
    by_kind: dict[str, list[Bid]] = {}
    for b in bids:
        if b.slot.kind not in open_kinds:
            by_kind.setdefault(b.slot.kind, []).append(b)

    def taken_by(a: Ask, b: Bid) -> bool:
        s = a.slot
        return _accepts(b.slot.filters, s.owner, s.tags) and (allow_self or s.owner != b.slot.owner) and \
            (b.min_availability is None or availability.get(s.owner, Decimal(0)) >= b.min_availability)

    return [a for a in asks
            if a.slot.kind in open_kinds or any(taken_by(a, b) for b in by_kind.get(a.slot.kind, ()))]


def _unique(orders: Sequence[Ask] | Sequence[Bid], side: str) -> None:
    seen: set[tuple[str, str]] = set()
    for o in orders:
        key = (o.slot.owner, o.slot.id)
        if key in seen:
            raise MarketError(f"two {side}s of {key[0]!r} share the slot id {key[1]!r}",
                              hint="slot ids are unique per owner and side")
        seen.add(key)


def _allocator_hints(asks: list[Ask], priced: list[int], bids: list[Bid],
                     recognition: Mapping[str, Mapping[str, Decimal]],
                     now_ms: int) -> dict[tuple[str, str], dict[int, tuple[int, int]]]:
    """(recipient, need id) -> {position in `asks`: (units given, tier)}: what the allocator's tiers
    1 and 2 would give each need of `bids` from the asks at the positions `priced`, from every
    provider that recognises someone."""
    caps: dict[str, list] = {}
    needs: dict[str, list] = {}
    for i in priced:
        caps.setdefault(asks[i].slot.owner, []).append(asks[i].slot)
    for b in bids:
        needs.setdefault(b.slot.owner, []).append(b.slot)
    stamp = Stamp.seed()
    network: dict[str, Commitment] = {}
    for p in sorted(set(caps) | set(needs)):
        try:
            network[p] = Commitment(participant=p, capacity_slots=tuple(caps.get(p, ())),
                                    need_slots=tuple(needs.get(p, ())),
                                    recognition=dict(recognition.get(p, {})), stamp=stamp, timestamp=now_ms)
        except ValidationError as exc:
            raise from_validation(exc, MarketError, f"recognition of {p!r}: ",
                                  hint="recognition weights are decimals >= 0") from None
    position = {(asks[i].slot.owner, asks[i].slot.id): i for i in priced}
    out: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
    for p in sorted(caps):
        if not network[p].recognition:
            continue  # recognises nobody: all its capacity is for the open tier
        state = compute_allocation(network[p], network, now_ms=now_ms)
        for s in state.slot_allocations:
            given = out.setdefault((s.recipient, s.need_slot), {})
            pos = position[(p, s.capacity_slot)]
            units, tier = given.get(pos, (0, s.tier))
            given[pos] = (units + s.quantity, min(tier, s.tier))
    return out


class _OrderedBook:
    """The book in the fixed order (asks by lowest ask, then digest, then (owner, id): a position is a rank; bids by
    (owner, id)), each market's clearing, and the asks compatible with each need whatever its own filters (those
    are looked at apart, to tell "filtered out" from "no compatible slot"), in classes of alike slots
    (`AskClasses`): a need looks at a class, not at every ask of it."""

    def __init__(self, asks: Sequence[Ask], bids: Sequence[Bid], clearings: dict, *, availability: Mapping[str, Decimal],
                 bucket_seconds: int, allow_self: bool) -> None:
        self.asks = sorted(asks, key=lambda a: (a.price, ask_digest(a), a.slot.owner, a.slot.id))
        self.bids = sorted(bids, key=lambda b: (b.slot.owner, b.slot.id))
        self.clearings, self.availability = clearings, availability
        self.bucket_seconds, self.allow_self = bucket_seconds, allow_self
        self.slots = [a.slot for a in self.asks]
        self.first_bucket = [bucket_of(s.start, bucket_seconds) for s in self.slots]
        self.last_bucket = [bucket_of(s.end - 1, bucket_seconds) for s in self.slots]
        self.owner_of = [s.owner for s in self.slots]
        open_needs = [b.slot if b.slot.filters.is_empty() else b.slot.model_copy(update={"filters": SlotFilter()})
                      for b in self.bids]
        self.classes = AskClasses(self.slots, [a.price for a in self.asks], open_needs, availability)
        self.compatible = [set(c) for c in self.classes.compatible]

    def price_of(self, b: Bid) -> int | None:
        return self.clearings[(b.slot.kind, bucket_of(b.slot.start, self.bucket_seconds))].price

    def priced_bids(self) -> list[Bid]:
        return [b for b in self.bids if (p := self.price_of(b)) is not None and b.price >= p]

    def priced_asks(self) -> list[int]:
        """Positions of the asks at or below the clearing price of a market their window takes part in."""
        return sorted(i for i, a in enumerate(self.asks)
                      if any(c.price is not None and a.price <= c.price
                             for (kind, bucket), c in self.clearings.items()
                             if kind == a.slot.kind and self.first_bucket[i] <= bucket <= self.last_bucket[i]))

    def _rules(self, b: Bid):
        """What of bid `b` every slot that may serve it must pass: (its filters or None, a test of a class (window and
        tags), a test of an owner (filters and own capacity), the filters' allow list)."""
        n = b.slot
        bucket = bucket_of(n.start, self.bucket_seconds)
        f = None if n.filters.is_empty() else n.filters
        first = self.classes.members

        def class_ok(c: int) -> bool:
            pos = first[c][0]
            return self.first_bucket[pos] <= bucket <= self.last_bucket[pos] and self.classes.accepts(f, c)

        deny = frozenset(f.deny) if f is not None else frozenset()
        mine = None if self.allow_self else n.owner
        return f, class_ok, lambda owner: owner != mine and owner not in deny, None if f is None else f.allow

    def eligible_at(self, b: Bid, i: int, pos: int) -> bool:
        """May the slot at `pos` serve bid b (#i)?  Every rule but room and group."""
        n, s = b.slot, self.slots[pos]
        p = self.price_of(b)
        bucket = bucket_of(n.start, self.bucket_seconds)
        f = None if n.filters.is_empty() else n.filters
        floor = b.min_availability
        return not (self.classes.class_of[pos] not in self.compatible[i]
                    or s.quantity < n.quantity or self.asks[pos].price > p
                    or not self.first_bucket[pos] <= bucket <= self.last_bucket[pos]
                    or (f is not None and not _accepts(f, s.owner, s.tags))
                    or (floor is not None and self.availability.get(s.owner, Decimal(0)) < floor)
                    or (not self.allow_self and s.owner == n.owner))

    def first_eligible(self, b: Bid, i: int, used: set[str] | None = None, room: bool = True) -> int | None:
        """The first position (in the fixed order) that may serve bid b (#i) with room for it (`room`) or with the
        quantity for it, whose provider holds none of `used` (its group's)."""
        _, class_ok, owner_ok, allow = self._rules(b)
        ok = owner_ok if not used else (lambda owner: owner_ok(owner) and owner not in used)
        return self.classes.first_fit(i, b.slot, class_ok, self.price_of(b), b.min_availability, ok, allow, room)

    def counts(self, b: Bid, i: int) -> tuple[int, int]:
        """(slots compatible with bid b (#i) that hold all of it, those of them its filters, minimum availability and
        own capacity rule keep)."""
        f, _, _, allow = self._rules(b)
        large = self.classes.count_fit(i, b.slot, lambda c: True, None, set(), None)
        excluded = set(f.deny) if f is not None else set()
        if not self.allow_self:
            excluded.add(b.slot.owner)
        kept = self.classes.count_fit(i, b.slot, lambda c: self.classes.accepts(f, c), b.min_availability,
                                      excluded, allow)
        return large, kept


def _tier_of(hints: dict, b: Bid) -> int:
    """The best tier of the units the allocator gave this need (3: open, none given)."""
    given = hints.get((b.slot.owner, b.slot.id))
    return min((t for units, t in given.values() if units), default=3) if given else 3


def _assign(book: _OrderedBook, served: list[Bid], hints: dict) -> dict[str, Assignment]:
    """Each need in order of service gets the first eligible slot with room that no need of its group holds: first
    those the allocator gave it units of (most first), then those of the providers it prefers (in its order), then
    the rest in the fixed order."""
    bid_index = {id(b): i for i, b in enumerate(book.bids)}
    room = book.classes.room
    owner_of, slots = book.owner_of, book.slots
    group_used: dict[tuple[str, str], set[str]] = {}
    assignments: dict[str, Assignment] = {}
    for b in served:
        n = b.slot
        i = bid_index[id(b)]
        given = hints.get((n.owner, n.id))
        used = group_used.get((n.owner, b.group)) if b.group is not None else None
        pos = None
        if given or b.prefer:
            rank = {p: r for r, p in enumerate(b.prefer)}
            far = len(rank)
            ahead = {p for p, (units, _) in (given or {}).items() if units}
            ahead.update(p for owner in rank for p in book.classes.by_owner.get(owner, ()))
            fits = [p for p in ahead if room[p] >= n.quantity and not (used is not None and owner_of[p] in used)
                    and book.eligible_at(b, i, p)]
            if fits:
                pos = min(fits, key=lambda p: (-(given or {}).get(p, (0, 3))[0], rank.get(owner_of[p], far), p))
        if pos is None:
            pos = book.first_eligible(b, i, used)
        if pos is None:
            continue
        book.classes.take(pos, n.quantity)
        if b.group is not None:
            group_used.setdefault((n.owner, b.group), set()).add(owner_of[pos])
        units, tier = (given or {}).get(pos, (0, 3))
        p = book.price_of(b)
        assignments[need_key(n.owner, n.id)] = Assignment(
            need_id=n.id, recipient=n.owner, provider=owner_of[pos], capacity_slot=slots[pos].id,
            quantity=n.quantity, price=p, tier=_TIERS[tier if units else 3],
            cost=units_cost(n.kind, n.quantity, n.end - n.start, p), kind=n.kind,
            bucket=bucket_of(n.start, book.bucket_seconds))
    return assignments


def match_needs(asks: Sequence[Ask], bids: Sequence[Bid], *, recognition: Mapping[str, Mapping[str, Decimal]],
                availability: Mapping[str, Decimal], bucket_seconds: int, now_ms: int,
                allow_self: bool = True, first: str | None = None,
                floors: Mapping[tuple[str, int], int] | None = None) -> MarketResult:
    """Clear the markets and give needs whole capacity slots (see the module docstring).

    `recognition`: participant -> its raw weights of others; `availability`: provider -> its
    availability in [0, 1] (from health); `allow_self`: may a need be served by its owner's own
    capacity (open tier only: the allocator never gives to oneself)?  `first`: the participant whose needs go
    first among needs of equal tier and bid (the node matching its own: a bidder can grind a slot id until its order
    digest sorts first, never its way past this); a market it alone trades in is priced at its own ask (`clear_book`).
    `floors`: (kind, bucket) -> the lowest price its market may clear
    at, one that cleared under it being priced at it (`supply.match_spread`: the price a group needs to reach the
    distinct providers it is spread over; a bid under it is explained as below the clearing price, and the clearing's
    range [low, high] is raised to hold it)."""
    clearings = _cleared(asks, bids, availability, bucket_seconds, allow_self, first, floors)
    book = _OrderedBook(asks, bids, clearings, availability=availability, bucket_seconds=bucket_seconds,
                        allow_self=allow_self)
    hints, tier_at, served = _in_service_order(book, recognition, now_ms, first)
    assignments = _assign(book, served, hints)
    explanations = {}
    for i, b in enumerate(book.bids):
        key = need_key(b.slot.owner, b.slot.id)
        explanations[key] = _explain(b, i, assignments.get(key), book)
    return MarketResult(clearings=clearings, assignments=dict(sorted(assignments.items())),
                        explanations=explanations, tiers={k: _TIERS[t] for k, t in sorted(tier_at.items())})


def _cleared(asks: Sequence[Ask], bids: Sequence[Bid], availability: Mapping[str, Decimal], bucket_seconds: int,
             allow_self: bool, first: str | None, floors: Mapping[tuple[str, int], int] | None) -> dict:
    """Each market's clearing (`match_needs`' arguments), raised to its floor."""
    _unique(asks, "ask")
    _unique(bids, "bid")
    clearings = clear_book(market_orders(_wanted(asks, bids, availability, allow_self), bids, bucket_seconds), first)
    for market, floor in (floors or {}).items():
        if (c := clearings.get(market)) is not None and c.price is not None and c.price < floor:
            # The range is what the market could clear at, the floor included: the price shown (`xsc market prices`)
            # is never outside its own range.
            clearings[market] = replace(c, price=floor, low=max(c.low, floor), high=max(c.high, floor))
    return clearings


def _in_service_order(book, recognition: Mapping[str, Mapping[str, Decimal]], now_ms: int, first: str | None
                      ) -> tuple[dict, dict[str, int], list[Bid]]:
    """The allocator's hints, each need's tier, and the priced needs in the order they are served (tier, then the
    highest bid, then `first`'s, then the fixed order)."""
    priced_bids = book.priced_bids()
    hints = _allocator_hints(book.asks, book.priced_asks(), priced_bids, recognition, now_ms)
    tier_at = {need_key(b.slot.owner, b.slot.id): _tier_of(hints, b) for b in book.bids}
    served = sorted(priced_bids, key=lambda b: (tier_at[need_key(b.slot.owner, b.slot.id)], -b.price,
                                                b.slot.owner != first, bid_digest(b), b.slot.owner, b.slot.id))
    return hints, tier_at, served


def _window(start: int, end: int) -> str:
    """A need's window [start, end) in unix seconds, as a user reads it (UTC)."""
    first, last = time.gmtime(start), time.gmtime(end)
    day = "" if first[:3] == last[:3] else "%Y-%m-%d "
    return f"from {time.strftime('%Y-%m-%d %H:%M:%S', first)} to {time.strftime(day + '%H:%M:%S', last)} UTC"


def none_fits(n) -> str:
    """Why no capacity slot is compatible with need slot `n` at all, naming the tags it requires (a web function's
    placement: a provider with a web listener), which no slot of the wrong kind could have either."""
    tags = set(n.filters.require_tags)
    needs = (["a provider with a web listener (node.web_listen)"] if WEB_TAG in tags else []) + \
        ([f"slots tagged {', '.join(sorted(tags - {WEB_TAG}))}"] if tags - {WEB_TAG} else [])
    fit = f" and its need of {' and '.join(needs)}" if needs else ""
    return (f"no {n.kind} capacity slot overlaps its window ({_window(n.start, n.end)}) at a location and with filters "
            f"that fit{fit}: no active provider offers it")


def excluded_by(b: Bid, allow_self: bool) -> str:
    """What of a need left out every compatible slot, as its user asked it: the flag typed (--avoid,
    --min-availability), or what a placement requires of its provider."""
    f, why = b.slot.filters, []
    if f.deny:
        # The need's own node is named apart: a put keeps the shares it places away off it (storage/quotes.py), so
        # "2 providers" would count one its user never typed.
        others = set(f.deny) - {b.slot.owner}
        avoided = ([counted(len(others), "provider")] if others else []) + \
            (["this node"] if b.slot.owner in f.deny else [])
        why.append(f"--avoid (it avoids {' and '.join(avoided)})")
    if f.allow is not None:
        why.append(f"its list of the only {counted(len(f.allow), 'provider')} it takes")
    if WEB_TAG in f.require_tags:
        why.append("its need of a provider with a web listener (node.web_listen)")
    if set(f.require_tags) - {WEB_TAG}:
        why.append(f"its need of slots tagged {', '.join(sorted(set(f.require_tags) - {WEB_TAG}))}")
    if b.min_availability is not None:
        why.append(f"--min-availability {b.min_availability}")
    if not allow_self:
        why.append("its own capacity is not used")
    return " and ".join(why or ["filters"])


def _explain(b: Bid, i: int, a: Assignment | None, book: _OrderedBook) -> Explanation:
    n = b.slot
    unit = PRICE_UNITS[n.kind]
    bucket = bucket_of(n.start, book.bucket_seconds)
    price = book.price_of(b)

    def out(code: str, message: str) -> Explanation:
        return Explanation(need_id=n.id, code=code, message=message, recipient=n.owner, clearing_price=price)

    if a is not None:
        return out("matched", f"matched to {a.provider} (slot {a.capacity_slot}) at {a.price} per {unit}, "
                              f"{a.tier} tier, cost {a.cost}")
    large, kept = book.counts(b, i)
    if not large:
        biggest = book.classes.largest(i)
        if biggest is not None:
            return out("no_compatible_slot", f"no compatible slot holds all {n.quantity} units (the largest holds "
                                             f"{biggest}); a need is never split over providers")
        return out("no_compatible_slot", none_fits(n))
    if not kept:
        return out("filtered_out", f"all {large} compatible slots are excluded by " + excluded_by(b, book.allow_self))
    if price is None:
        return out("no_trade", f"nothing traded in the {n.kind} market of bucket {bucket}: no bid met an ask")
    if b.price < price:
        return out("below_clearing_price", f"the bid {b.price} per {unit} is below the clearing price {price} "
                                           f"of the {n.kind} market of bucket {bucket}")
    if book.first_eligible(b, i, room=False) is None:
        return out("no_compatible_slot", f"the {kept} compatible slots ask more than the clearing price {price} "
                                         f"per {unit} (or did not take part in bucket {bucket})")
    group = f" or hold another need of group {b.group!r}" if b.group is not None else ""
    return out("capacity_taken", f"the compatible slots at or below {price} per {unit} were taken by needs served "
                                 f"before this one (higher tier or higher bid){group}")
