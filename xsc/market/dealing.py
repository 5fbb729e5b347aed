"""The market's deals for this node's needs: a put's shares, a repair, an invoke (`deal`, `compute_deal`).

Built after the allocation (`allocated`: what the converged allocation gives this node's needs), over the book the
`MarketService` replicates.  Needs covered by the allocation are placed on the providers that allocated to this
node; the rest are matched on the call market (docs/market.md, docs/allocation.md).  Each matching runs in the CPU
pool on a copy of the book made on the event loop; a deal's answer serves later needs of the same shape for a
moment (`REUSE_SECONDS`), while nothing it rests on has changed and its slots have room; deals take turns, those
asked for meanwhile dealt together (`turns.py`).  `explanations` keeps why each recent need matched or did not
(`xsc market explain`).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from ..errors import MarketNoDeal, NeedNotFound, quoted_id
from ..units import counted
from ..tasks import in_pool, now_ms
from .core.matching import Assignment
from .core.models import Ask, Bid, need_key, renamed, units_cost
from .needs import NeedRegistry
from .clearing import CountedBids, taking_part
from .core.allocated import Steps, apart, from_allocation, placeable, within_room
from .core.supply import match_spread
from .turns import DealTurns

EXPLAINED = 1000  # needs whose explanation is kept (in memory) for `xsc market explain`
COMPUTE_DEALS = 64  # invokes' deals kept until the book or the allocation changes
LOOKUP_TIMEOUT = 2.0  # seconds a lookup of compute providers may take, and again asking those found for commitments
# A deal's answer serves later needs of the same shape this long, while nothing it rests on has changed (`_reuse`):
# a matching of the book for every small put was half of what a put of 1 KiB cost the event loop.
REUSE_SECONDS = 1.0
REUSED_DEALS = 64  # shapes whose deal is kept for reuse
# A matching of at most this many asks and bids runs on the event loop (well under a millisecond): sent to the pool,
# it would hold the deals after it for as long as the busy loop takes to come back to it.
ON_THE_LOOP = 64


def _matched(asks: list[Ask], bids: list[Bid], **kwargs: Any):
    """The pure matching of `Dealing.match`: supply capped and groups spread, then `match_needs` (`match_spread`)."""
    return match_spread(asks, bids, **kwargs)


def _call(fn: Callable[..., Any], kwargs: dict) -> Any:
    return fn(**kwargs)


class Explanations(OrderedDict):
    """The newest EXPLAINED explanations of matchings this node ran, by need."""

    def __init__(self, me: str) -> None:
        super().__init__()
        self.me = me

    def keep(self, result, bids: dict[str, Bid] | None = None, best_asks: dict[str, int] | None = None) -> None:
        """Keep a matching's explanations, with the figures of this node's needs (`bids` by need key) and
        the lowest ask of each kind (`best_asks`)."""
        if result is None:
            return
        for key, explanation in result.explanations.items():
            # This node's needs by their bare id (as a put or invoke prints them); others' as OWNER/ID.
            name = explanation.need_id if explanation.recipient == self.me else key
            bid = (bids or {}).get(key)
            best = (best_asks or {}).get(bid.slot.kind) if bid is not None else None
            self[name] = {"need": explanation.need_id, "recipient": explanation.recipient, "code": explanation.code,
                          "message": explanation.message, "clearing_price": explanation.clearing_price,
                          "assignment": _assignment(result.assignments.get(key)),
                          "kind": bid.slot.kind if bid else None, "bid": bid.price if bid else None,
                          "quantity": bid.slot.quantity if bid else None, "best_ask": best,
                          "would_match": _would_match(explanation, bid, best)}
            self.move_to_end(name)
        while len(self) > EXPLAINED:
            self.popitem(last=False)

    def recent(self, count: int = 20) -> list[str]:
        """This node's needs most recently matched, newest first: what `market explain` can be asked about."""
        return [name for name in reversed(self) if "/" not in name][:count]

    def reused(self, explained: list[dict | None], need_ids: list[str]) -> None:
        """Needs `need_ids` were placed as the needs `explained` were (a reused deal's): each explained as its
        counterpart was, but for its id (made when asked: `of`)."""
        for first, need_id in zip(explained, need_ids):
            if first is not None:
                self[need_id] = (first, need_id)
        while len(self) > EXPLAINED:
            self.popitem(last=False)

    def of(self, need: str) -> dict | None:
        """The explanation kept for `need`, or None."""
        found = self.get(need)
        if isinstance(found, tuple):  # `reused`
            first, need_id = found
            found = {**first, "need": need_id}
        return found

    def explain(self, need: str) -> dict:
        found = self.of(need)
        if found is None:
            raise NeedNotFound(f"no recent need {quoted_id(need)} on this node",
                               hint="need ids are printed by a put or invoke the market refused, and by xsc market status")
        return found


def _way_out(missing: list[Bid], codes: dict[str, str]) -> str:
    """What the user does about needs the market placed nowhere: the filters it set, when they alone left every
    provider out (no price or wait would help), else a higher price or more providers."""
    if missing and set(codes.values()) == {"filtered_out"}:
        loosen = [what for what, set_ in (("drop an --avoid", any(b.slot.filters.deny for b in missing)),
                                          ("lower --min-availability",
                                           any(b.min_availability is not None for b in missing))) if set_]
        if loosen:
            return f"its filters leave out every provider with room: {' or '.join(loosen)}"
    return "raise --max-price, or wait for providers (xsc market book)"


def _would_match(explanation, bid: Bid | None, best_ask: int | None) -> str | None:
    """What would have made a need match, in the user's words (None: it matched, or nothing is known)."""
    code, clearing = explanation.code, explanation.clearing_price
    if code == "matched":
        return None
    if code == "below_clearing_price" and clearing is not None:
        return f"a bid of at least {clearing}"
    if code == "no_trade" and best_ask is not None:
        return f"a bid of at least the lowest ask, {best_ask}"
    if code == "no_compatible_slot" and bid is not None:
        unit = "fuel" if bid.slot.kind == "compute" else "bytes"
        return f"a provider offering at least {bid.slot.quantity:,} {unit} for the need's whole window"
    if code == "capacity_taken":
        return "more free capacity, or a bid above the needs that took it" + (
            f" (they cleared at {clearing})" if clearing is not None else "")
    if code == "filtered_out":  # (--prefer orders the providers the filters leave: it is no filter, said apart)
        kept = "; its --prefer leaves no provider out, it only orders those the filters keep" \
            if bid is not None and bid.prefer else ""
        return f"fewer filters (--avoid, --min-availability){kept}"
    return None


def _less(ask: Ask, units: int) -> Ask:
    """`ask` with `units` of its slot already taken."""
    if not units:
        return ask
    return ask.model_copy(update={"slot": ask.slot.model_copy(update={"quantity": max(0, ask.slot.quantity - units)})})


def _repriced(a: Assignment, clearing, bid: Bid | None) -> Assignment:
    price = None if clearing is None else clearing.price
    if bid is None or price is None or not a.price <= price <= bid.price:
        return a
    return replace(a, price=price, cost=units_cost(a.kind, a.quantity, bid.slot.end - bid.slot.start, price))


def _assignment(a) -> dict | None:
    if a is None:
        return None
    return {"provider": a.provider, "capacity_slot": a.capacity_slot, "quantity": a.quantity, "price": a.price,
            "tier": a.tier}


@dataclass
class _Reusable:
    """A deal's answer kept for needs of the same shape: its assignments in the order of its needs, what each
    (provider, capacity slot) they use had left once they were placed, and until when (monotonic) it serves."""

    assignments: list[Assignment]
    room: dict[tuple[str, str], int]
    until: float
    explained: list[dict | None]  # each need's explanation (`xsc market explain`)


class Dealing:
    def __init__(self, *, market: Any, needs: NeedRegistry, allocated: Callable[[str], dict[str, int]] | None,
                 defaulted: Callable[[str], None] | None = None, pool: Executor | None = None) -> None:
        self.market = market  # xsc.market.service.MarketService: the book, its clearings and prices, who is active
        self.me = market.me
        self.needs = needs
        self.allocated = allocated  # kind -> provider -> units the converged allocation gives this node's needs
        self.defaulted = defaulted  # told of a provider that failed work placed on it (`failed`)
        self.pool = pool  # where matchings run (None: asyncio's default executor)
        # deals one at a time, those asked for meanwhile together (`_run_deal` looked up at each: tests gate it)
        self._turns = DealTurns(lambda bids, exclude: self._run_deal(bids, exclude, False), self._end)
        self._placed: dict[str, Assignment] = {}  # this node's open needs already placed: need id -> assignment
        # kind -> provider -> units this node's needs in flight placed from the allocation hold there: a put's while
        # its needs are open (`_in_flight`), an invoke's until its call ends (`ended`); a tally, not a scan, as
        # every invoke reads it
        self._held: dict[str, dict[str, int]] = {}
        self._invokes: dict[str, Assignment] = {}  # invokes in flight placed from the allocation, by need id
        self._pruned = -1  # `needs.withdrawals` when `_placed` last dropped the needs no longer open
        self.last_results = None  # the newest MarketResult of a match this node ran
        self._remembered = None  # the last of them whose explanations were kept
        self.last_bids: dict[str, Bid] = {}  # its needs, by need key
        self.explanations = Explanations(self.me)  # for `xsc market explain`
        self._compute_deals: dict[tuple, Any] = {}  # (versions, taking part, fuel bucket, max price, room) -> assignment
        self._counted = CountedBids(market)  # which of the book's bids count: trust lines back them
        self._reusable: dict[tuple, _Reusable] = {}  # the shape of a deal's needs and what it rests on -> its answer
        self.reused = 0  # deals answered from an earlier one (status, tests)
        self._allocation_seen: dict[str, dict[str, int]] = {}
        self._allocation_spent: dict[str, dict[str, int]] = {}  # kind -> provider -> units served since it changed
        self.allocation_served = {"needs": 0, "units": 0}
        market.on_change.append(self._compute_deals.clear)  # an invoke's deal holds until the book changes
        market.on_change.append(self._reusable.clear)

    def status(self) -> dict[str, Any]:
        """`held_from_allocation`: kind -> provider -> units this node's needs in flight hold of the allocation (puts
        storing, calls running): what the allocation does not serve until they end."""
        return {"served_from_allocation": dict(self.allocation_served), "reused_deals": self.reused,
                "held_from_allocation": {kind: dict(held) for kind, held in self._held.items() if held},
                "deals_waiting": self._turns.waiting()}

    def match(self, bids: list[Bid], exclude: frozenset[str] = frozenset()):
        """Match `bids` (this node's new needs) against the book: the MarketResult of the pure core."""
        return _matched(**self._match_inputs(bids, exclude, self.market.down()))

    def _match_inputs(self, bids: list[Bid], exclude: frozenset[str], down: frozenset[str]) -> dict:
        """What `_matched` takes to match `bids` against the book, as it is now (made on the event loop: the pool
        matches a copy while the book goes on changing).

        Only the orders of those taking part (`clearing.taking_part`, the rule the clearing `market book` shows is
        made by: active, not down, not in `exclude`, providers that just failed this node) are matched; other
        nodes' open needs compete for the same slots as far as the ledger backs them (`MarketService.credible_bids`:
        a bid costs its bidder nothing unless it is served), and this node's needs go first among needs of equal
        tier and bid (an order digest is a bidder's to grind).  This node's other open needs do not compete with
        its own: those already placed (puts still storing) take what they were given off their providers' asks
        (`_in_flight`), the rest (standing needs, deals still waiting) take nothing, so a matching costs the same
        however many of this node's puts are in flight."""
        takes_part = taking_part(self.market, exclude, down)
        taken = self._in_flight()
        # This node's own offer as it is now: the one in the book was signed at the last re-publish, and a put's
        # needs do not re-publish it (its price has moved with every put stored since).
        book = [a for a in self.market.book.asks() if a.slot.owner != self.me] + self.market.offer.own_asks()
        asks = [_less(a, taken.get((a.slot.owner, a.slot.id), 0)) for a in book if takes_part(a.slot.owner)]
        others = [b for b in self.market.credible_bids() if b.slot.owner != self.me and takes_part(b.slot.owner)]
        asks = [a for a in asks if a.slot.quantity > 0]
        # The availability of the asks' providers: all a matching reads of it (a need's `min_availability`).
        availability = self.market.availability.of({a.slot.owner for a in asks})
        return {"asks": asks, "bids": others + bids,
                "recognition": self.market.recognition_map(), "availability": availability,
                "bucket_seconds": self.market.config.bucket_seconds, "now_ms": now_ms(), "first": self.me}

    def _in_flight(self) -> dict[tuple[str, str], int]:
        """(provider, capacity slot) -> the units this node's needs placed there hold while they are still open
        (a put withdraws its needs when it ends, stored or not)."""
        self._prune()
        out: dict[tuple[str, str], int] = {}
        for a in self._placed.values():
            out[(a.provider, a.capacity_slot)] = out.get((a.provider, a.capacity_slot), 0) + a.quantity
        return out

    def _prune(self) -> None:
        """The needs placed whose put ended (withdrawn since it last looked) hold nothing any more."""
        if self._pruned != self.needs.withdrawals:
            self._pruned = self.needs.withdrawals
            open_ids = self.needs.open_ids()
            for need_id in [n for n in self._placed if n not in open_ids]:
                self._unhold(self._placed.pop(need_id))

    def remember(self) -> None:
        """Keep the explanations of the newest matching, with their figures, for `xsc market explain` (once:
        the puts of one batch each ask after the same matching)."""
        if self.last_results is None or self.last_results is self._remembered:
            return
        self._remembered = self.last_results
        best: dict[str, int] = {}
        for a in self.market.book.asks():
            best[a.slot.kind] = min(best.get(a.slot.kind, a.price), a.price)
        self.explanations.keep(self.last_results, self.last_bids, best)

    def need(self, need_id: str, kind: str, quantity: int, seconds: int, max_price: int, **wanted: Any) -> Bid:
        """A need slot of this node (`NeedRegistry.make`), to match with `deal`."""
        return self.needs.make(need_id, kind, quantity, seconds, max_price, **wanted)

    def _from_allocation(self, bids: list[Bid], offered: list[Ask], exclude: frozenset[str], clearings: dict,
                         availability: dict[str, Decimal], down: frozenset[str]) -> Steps:
        """Needs placed on the providers whose allocation states give this node's standing needs of their kind
        units (each provider's slots of `offered`, the asks the call market matched, capped at what it still gives),
        priced at the call market's clearing price of their (kind, bucket): need id -> assignment
        (`core.allocated.from_allocation`).  Needs it cannot place are left to the market."""
        if self.allocated is None:
            return {}
        takes_part = taking_part(self.market, exclude, down)
        out: dict[str, Assignment] = {}
        for kind in sorted({b.slot.kind for b in bids}):
            room = {p: u for p, u in self._room(kind, self._given(kind)).items() if takes_part(p)}
            asks, wanted = within_room(offered, room, kind), [b for b in bids if b.slot.kind == kind]
            if asks and wanted:  # (the recognition map is made of the whole book)
                out.update((yield from from_allocation(
                    wanted, asks, room, clearings, self.me, recognition=self.market.recognition_map(),
                    availability=availability, bucket_seconds=self.market.config.bucket_seconds, now_ms=now_ms())))
        return out

    async def deal(self, bids: list[Bid], exclude: frozenset[str] = frozenset(), *,
                   here: bool = False) -> dict[str, Any]:
        """Assignments for every bid, or MarketNoDeal explaining each need that got nothing.

        The call market is cleared first (price discovery); needs the converged allocation covers are placed
        on the providers that allocated to this node (`_from_allocation`), the rest by the call market,
        away from the providers the placed needs of their group took (a group with fewer providers than needs is
        placed by the call market alone: see `_deal`).

        Each matching runs in the CPU pool on a copy of the book made on the event loop (over a book of 1,000
        participants one took 60-230 ms of CPU, and held the loop that long); deals run one at a time, as they
        did when they ran on the loop, so that two never spend one allocation's room.  `here`: every matching run on
        the loop instead (the same answer; tests compare the two)."""
        if here:
            async with self._turns.lock:
                return await self._run_deal(bids, exclude, here)
        shape = self._shape(bids, exclude)
        reused = self._reuse(shape, [b.slot.id for b in bids])
        if reused is not None:
            return reused
        answer = await self._turns.deal(bids, exclude)
        if self._shape(bids, exclude) == shape:  # nothing it rests on changed while it was dealt
            self._keep(shape, bids, answer)
        return answer

    async def deal_alike(self, bid: Bid, need_ids: list[str], exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """`deal` of the needs `need_ids`, each `bid` under its own id (a put's shares, opened with
        `NeedRegistry.open_alike`); the needs are made only if the market has to match them (a deal of their shape
        is reused without: `_reuse`)."""
        group = None if bid.group is None else 0
        need = (bid.slot.kind, bid.slot.quantity, bid.slot.end - bid.slot.start, bid.price, bid.slot.filters,
                bid.prefer, bid.min_availability, group)
        reused = self._reuse(self._shape_of((need,) * len(need_ids), (bid.slot.kind,), exclude), need_ids)
        if reused is not None:
            return reused
        return await self.deal([bid if n == bid.slot.id else renamed(bid, n) for n in need_ids], exclude)

    def _shape(self, bids: list[Bid], exclude: frozenset[str]) -> tuple:
        """What a deal of `bids` rests on besides the book's free room: the book, which of its bids count (as far as
        trust lines back them: `clearing.CountedBids`), the time bucket, the peers' availability, this node's own
        recognition weights, this node's asks and what the allocation still gives, the providers left out, and each
        need but its id (its kind, size, length, bid, filters, and which of them share a group)."""
        groups: dict[str, int] = {}
        needs = tuple((b.slot.kind, b.slot.quantity, b.slot.end - b.slot.start, b.price, b.slot.filters, b.prefer,
                       b.min_availability, None if b.group is None else groups.setdefault(b.group, len(groups)))
                      for b in bids)
        return self._shape_of(needs, sorted({b.slot.kind for b in bids}), exclude)

    def _shape_of(self, needs: tuple, kinds: Iterable[str], exclude: frozenset[str]) -> tuple:
        """`_shape` of needs given as their shapes (`needs`) and kinds.  Of the peers, a matching reads who takes part
        (the rule the shown clearing keeps, `clearing.TakingPart`: known, up, not at availability 0, its offer current),
        and the others' availability only against a need's minimum: a probe round changes the answer only where it
        changed who takes part, or moved some peer's ratio while one of this deal's needs or of the bids that count
        asks for a minimum (`CountedBids.floored`)."""
        mine = tuple((kind, self.market.offer.ask(kind), tuple(sorted(self._allocation_room(kind).items())))
                     for kind in kinds)
        counted = self._counted.version()
        taking_part = self.market.shown.taking_part
        taking_part.left_out()  # (brought up to now)
        floored = self._counted.floored or any(need[6] is not None for need in needs)
        return (self.market.version, counted, self.market.offer.bucket(), taking_part.version,
                self.market.availability.versions()[1] if floored else None, self.market.recognition_version(),
                exclude, needs, mine)

    def _reuse(self, shape: tuple, need_ids: list[str]) -> dict[str, Any] | None:
        """The kept answer of a deal of this `shape`, for the needs `need_ids`, if it is still fresh and the slots
        it uses still have room for them (taken from it here); None otherwise."""
        kept = self._reusable.get(shape)
        if kept is None:
            return None
        wanted: dict[tuple[str, str], int] = {}
        for a in kept.assignments:
            wanted[(a.provider, a.capacity_slot)] = wanted.get((a.provider, a.capacity_slot), 0) + a.quantity
        if time.monotonic() > kept.until or any(kept.room[slot] < units for slot, units in wanted.items()):
            del self._reusable[shape]
            return None
        answer = {need_id: a.renamed(need_id) for a, need_id in zip(kept.assignments, need_ids)}
        self._place(answer)
        self.explanations.reused(kept.explained, need_ids)  # `xsc market explain` says what it said of the first
        self.reused += 1
        return answer

    def _place(self, placed: dict[str, Assignment]) -> None:
        """This node's needs were placed: they hold their units while open (`_in_flight`), and take them from the
        room of every kept deal that uses the same slots.  What they were placed from the allocation is held
        (`_held`): a put's share while its needs are open, an invoke (never opened) until its call ends.  A need
        not opened (a repair's, an invoke's) holds no slot: nothing would say when it is over."""
        for need_id, a in placed.items():
            if a.allocated and a.kind == "compute":
                self._invokes[need_id] = a
                self._hold(a)
            elif self.needs.is_open(need_id):
                old = self._placed.get(need_id)
                if old is not None:
                    self._unhold(old)
                self._placed[need_id] = a
                self._hold(a)
        for kept in self._reusable.values():
            for a in placed.values():
                slot = (a.provider, a.capacity_slot)
                if slot in kept.room:
                    kept.room[slot] -= a.quantity

    def _keep(self, shape: tuple, bids: list[Bid], answer: dict[str, Any]) -> None:
        """Keep a deal's `answer` for later needs of its `shape` (not one placed from the allocation: what that
        gives is spent need by need)."""
        assignments = [answer[b.slot.id] for b in bids]
        if any(a.allocated for a in assignments):
            return
        taken = self._in_flight()
        room: dict[tuple[str, str], int] = {}
        for a in assignments:
            slot = (a.provider, a.capacity_slot)
            room[slot] = self._offered(a.provider, a.capacity_slot) - taken.get(slot, 0)
        if len(self._reusable) >= REUSED_DEALS:
            self._reusable.clear()
        self.remember()  # the matching's explanations, which its reuses repeat
        self._reusable[shape] = _Reusable(assignments, room, time.monotonic() + REUSE_SECONDS,
                                          [self.explanations.of(a.need_id) for a in assignments])

    def _offered(self, provider: str, slot: str) -> int:
        """The units `provider`'s capacity slot `slot` offers now (0 if it no longer does)."""
        if provider == self.me:
            asks = self.market.offer.own_asks()
        else:
            held = self.market.book.get(provider)
            asks = held.asks if held is not None else []
        return next((a.slot.quantity for a in asks if a.slot.id == slot), 0)

    async def _run_deal(self, bids: list[Bid], exclude: frozenset[str], here: bool) -> dict[str, Any]:
        steps = self._deal(bids, exclude)
        result: Any = None
        try:
            while True:
                fn, kwargs = steps.send(result)
                small = len(kwargs["asks"]) + len(kwargs["bids"]) <= ON_THE_LOOP
                result = fn(**kwargs) if here or small else await in_pool(self.pool, _call, fn, kwargs)
        except StopIteration as done:
            self._place(done.value)
            return done.value

    def _live(self, bids: list[Bid]) -> list[Bid]:
        """`bids` but those whose callers went away while their batch is dealt (`DealTurns.gone`)."""
        gone = self._turns.gone()
        return [b for b in bids if b.slot.id not in gone] if gone else bids

    def _deal(self, bids: list[Bid], exclude: frozenset[str]) -> Steps:
        """`deal` as steps: it yields each matching it needs, as (function, arguments), and is sent its result.  The
        needs whose callers went away before a matching is made take no part in it (they would set its price and
        take room the others need), nor in what the deal places (`_live`); a caller that goes away while one runs
        (in the pool) set that matching's price and took room in it all the same, so the deal is made again without
        its needs: what a deal places and charges is a matching of the needs whose callers still wait for it."""
        while True:
            bids = self._live(bids)
            if not bids:
                return {}
            made = yield from self._deal_live(bids, exclude)
            if made is not None:
                return made

    def _deal_live(self, bids: list[Bid], exclude: frozenset[str]) -> Steps:
        """`_deal` of `bids`, or None as soon as a caller of one of them went away (`_went`) while it matched."""
        down = self.market.down()
        inputs = self._match_inputs(bids, exclude, down)
        availability = inputs["availability"]
        result = yield _matched, inputs
        if self._went(bids):
            return None
        # A group with fewer providers than needs is dealt round them evenly by the market alone: placed in part from
        # the allocation, its other needs would be kept off the providers the allocation used and pile onto the
        # others (a put's shares 1, 1 and 4 on three nodes, surviving no node's loss), or find none at all.  Counted
        # as the market spreads the group (`supply.providers_of`, availability included), and only when the
        # allocation gives something: over a big book the count holds the loop for milliseconds.
        wanted = placeable(bids, inputs["asks"], availability) if any(
            self._allocation_room(kind) for kind in {b.slot.kind for b in bids if b.group is not None}) else bids
        # On the asks the call market matched: the slots less what this node's puts in flight hold there.
        served = yield from self._from_allocation(wanted, inputs["asks"], exclude, result.clearings, availability, down)
        if self._went(bids):
            return None
        if served:
            rest = apart(bids, served)
            if not rest:
                return served
            discovered = result.clearings
            result = yield _matched, self._match_inputs(rest, exclude, self.market.down())
            if self._went(bids):
                return None
            # One price for the whole deal: the rest is matched without the needs already placed, so its own
            # clearing may be lower; each of its assignments costs the first clearing's price when that is at
            # least what the rest cleared at (so still at least the provider's ask and at most the bid).
            result = replace(result, assignments={
                key: _repriced(a, discovered.get((a.kind, a.bucket)), bid_of.get(a.need_id))
                for key, a in result.assignments.items()}) if (bid_of := {b.slot.id: b for b in rest}) else result
            bids = rest
        self.last_results = result
        self.last_bids = {need_key(self.me, b.slot.id): b for b in bids}
        self.market.prices.record(result.clearings, now_ms())  # `xsc market prices`
        named = {b.slot.id: need_key(self.me, b.slot.id) for b in bids}
        missing = [n for n, key in named.items() if key not in result.assignments]
        if missing:
            reasons = [result.explanations[named[n]].message for n in missing if named[n] in result.explanations]
            # The need ids go in the message: the CLI prints only the message and hint of a problem.
            codes = {n: result.explanations[named[n]].code for n in missing if named[n] in result.explanations}
            raise MarketNoDeal(f"the market found no provider for {len(missing)} of {counted(len(bids), 'need')} "
                               f"({', '.join(sorted(missing))}): " + "; ".join(sorted(set(reasons))[:3]),
                               hint=f"see why with `xsc market explain {sorted(missing)[0]}`; "
                                    + _way_out([b for b in bids if b.slot.id in missing], codes),
                               needs=codes)
        return {**served, **{n: result.assignments[key] for n, key in named.items()}}

    def _went(self, bids: list[Bid]) -> bool:
        """Whether the caller of one of `bids` went away (`DealTurns.gone`) since they were taken for a matching."""
        gone = self._turns.gone()
        return bool(gone) and any(b.slot.id in gone for b in bids)

    def spent(self, kind: str, assignments: list[Assignment]) -> None:
        """Deals of `assignments` placed from the allocation were carried out (a put stored its shares): count
        them against what each provider gives, and shrink this node's standing needs by as much."""
        used = [a for a in assignments if a.allocated]
        if not used:
            return
        if self.allocated is not None:
            self._given(kind)  # (spent from the allocation as it is now: one that changed since starts unspent)
        spent = self._allocation_spent.setdefault(kind, {})
        for a in used:
            spent[a.provider] = spent.get(a.provider, 0) + a.quantity
        self.allocation_served["needs"] += len(used)
        self.allocation_served["units"] += sum(a.quantity for a in used)
        self.needs.spend(kind, sum(a.quantity for a in used))

    def failed(self, provider: str) -> None:
        """A provider could not take work placed on it (down, or refusing): the allocation stops counting it."""
        if self.defaulted is not None:
            self.defaulted(provider)

    def invoked(self, assignment: Assignment, fuel: int) -> None:
        """An invoke placed by `compute_deal` ran (returned or trapped) and used `fuel`: it ends (`ended`), and if it
        was placed from the allocation, that fuel counts against the provider's part and this node's standing
        compute needs shrink by exactly as much (the rest of the call's reserved budget was not used: it stays
        allocated)."""
        self.ended(assignment)
        if assignment.allocated and fuel > 0:
            self.spent("compute", [replace(assignment, quantity=fuel)])

    def ended(self, assignment: Assignment) -> None:
        """A call placed by `compute_deal` is over, whether it ran, failed or was refused (its caller says so once
        the call is no longer in flight; again is harmless): what it held of the allocation is free again."""
        self._end(assignment.need_id)

    def _end(self, need_id: str) -> None:
        a = self._invokes.pop(need_id, None)
        if a is not None:
            self._unhold(a)

    def _hold(self, a: Assignment) -> None:
        """`a` (placed) holds its units of the allocation, if it was placed from it."""
        if a.allocated:
            held = self._held.setdefault(a.kind, {})
            held[a.provider] = held.get(a.provider, 0) + a.quantity

    def _unhold(self, a: Assignment) -> None:
        """`a` (placed) no longer holds its units of the allocation."""
        held = self._held.get(a.kind)
        if a.allocated and held is not None and a.provider in held:
            held[a.provider] -= a.quantity
            if held[a.provider] <= 0:
                del held[a.provider]

    def _allocation_room(self, kind: str) -> dict[str, int]:
        """provider -> units its allocation still gives this node's needs of `kind` (`_room`)."""
        if self.allocated is None:
            return {}
        self._prune()  # (a put that ended holds nothing: a kept deal's shape sees it)
        return self._room(kind, self._given(kind))

    def _given(self, kind: str) -> dict[str, int]:
        """provider -> units the allocation gives this node's needs of `kind` now.  A new allocation starts with
        nothing of it spent from the moment any reader sees it (a kept deal's key, a matching, a spend), not at the
        next matching made afresh: calls a kept deal places meanwhile spend from it, and a part they spent must not
        hold a call again (`compute_deal`)."""
        given = self.allocated(kind)
        if given != self._allocation_seen.get(kind):
            self._allocation_seen[kind] = dict(given)
            self._allocation_spent[kind] = {}
        return given

    def _room(self, kind: str, given: dict[str, int]) -> dict[str, int]:
        """provider -> units of `given` (what the allocation gives now, `_given`) neither spent nor held by this
        node's needs in flight: what they were placed from the allocation is spent once they ran or stored, and till
        then holds that part, or two at once would each be placed from the whole."""
        spent = self._allocation_spent.get(kind, {})
        held = self._held.get(kind, {})
        return {p: u - spent.get(p, 0) - held.get(p, 0) for p, u in given.items()}

    async def _look_up_compute(self, wanted: int, exclude: frozenset[str] = frozenset()) -> None:
        """The compute providers the hash table knows, brought into the book if it holds fewer than `wanted` other
        than those of `exclude` (xsc.market.lookup); unlike a put's `MarketService.fill_book`, the commitments of
        wanted peers the book lacks are not pulled first: an invoke does not wait on a slow peer."""
        lookup = self.market.lookup
        if lookup is None:
            return
        if exclude:  # one the book no longer holds (gone down, its offer stale) takes no place in it
            wanted += len(lookup.providers("compute") & exclude)
        await lookup.fill("compute", wanted, LOOKUP_TIMEOUT, exclude)

    async def compute_deal(self, fuel: int, max_price: int, exclude: frozenset[str] = frozenset(),
                           providers: int = 1, require_tags: tuple[str, ...] = ()):
        """The provider and price of an invoke of at most `fuel`: placed from the allocation where a provider's
        allocation to this node's standing compute needs still holds the call's reserved fuel (`deal`), else
        matched on the market; the answer is kept until the book, which of its bids count (`CountedBids`), who
        takes part (`clearing.TakingPart`: a provider a probe found down is not asked first by every call, nor one
        whose offer went stale called at all) or the allocation changes (an
        invoke must not pay a matching of the whole book each time), and one placed from the allocation only while
        the provider's part still holds it.  One placed from the allocation holds the call's
        reserved fuel of that part, each call under a need of its own, until its caller says the call ended (`ended`,
        `invoked`): calls in flight at once are not each placed from the whole part.  `exclude`: providers that just
        failed this call, or that run it already (left out of the clearing too; such an answer is not kept).
        `providers`: how many distinct compute providers outside `exclude` the caller will want in all (a replicated
        job's replicas still to place); a book holding fewer than that beside those of `exclude` it holds first gets
        those the hash table knows (`_look_up_compute`).  A provider of `exclude` gone from the book is not counted:
        the one left out after it went down is replaced at once by another the book holds.  `require_tags`: only
        compute asks carrying each of them (a web function's placement: `WEB_TAG`)."""
        if exclude:
            await self._look_up_compute(max(providers, 1), exclude)
            return await self._invoke_deal(fuel, max_price, exclude, require_tags)
        room = self._allocation_room("compute")
        # Who takes part as a matching made now would see it (`clearing.TakingPart`, brought up to now): a provider
        # gone down, at availability 0, quarantined or whose offer went stale with no change of the book ends the
        # kept deal, as it would leave that provider out of a fresh one.
        taking_part = self.market.shown.taking_part
        taking_part.left_out()
        key = (self.market.version, self._counted.version(), taking_part.version, fuel.bit_length(), max_price,
               require_tags,
               tuple(sorted(p for p, u in room.items() if u >= 1 << fuel.bit_length())))
        found = self._compute_deals.get(key)
        if found is not None and found.allocated:
            if room.get(found.provider, 0) < found.quantity:
                found = None  # its part of the allocation is used up or held by calls in flight since
            else:
                found = found.renamed(f"invoke-{random.getrandbits(48):012x}")
                self._invokes[found.need_id] = found
                self._hold(found)
        if found is None:
            await self._look_up_compute(providers)
            found = await self._invoke_deal(fuel, max_price, frozenset(), require_tags)
            if len(self._compute_deals) > COMPUTE_DEALS:
                self._compute_deals.clear()
            self._compute_deals[key] = found
        return found

    async def _invoke_deal(self, fuel: int, max_price: int, exclude: frozenset[str],
                           require_tags: tuple[str, ...] = ()) -> Assignment:
        """An invoke's need of `fuel` rounded up to a power of two, for 60 s at `max_price`, dealt."""
        need = self.need(f"invoke-{random.getrandbits(48):012x}", "compute", 1 << fuel.bit_length(), 60, max_price,
                         require_tags=require_tags)
        try:
            return (await self.deal([need], exclude))[need.slot.id]
        except BaseException:  # (a caller cancelled once its need was placed is not there to end it)
            self._end(need.slot.id)
            raise
        finally:
            self.remember()
