"""`compute_allocation`: how one provider divides its capacity slots among the network's needs."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Context, Decimal
from itertools import repeat
from operator import mul
from collections.abc import Iterable, Mapping

from ...errors import InvalidCommitment
from .convergence import CONVERGENCE_EPSILON, HISTORY_LENGTH, denominator_delta
from .divide import divide, divide_capped
from ...itc import Stamp
from .matching import ROW_ID, ROW_KEY, ROW_QUANTITY, CapacityIndex, need_rows
from .models import (
    AllocationState,
    Commitment,
    ConvergenceSample,
    NeedKey,
    SlotDenominator,
    built,
    slot_allocations,
)
from .recognition import weight_ratios

SCALE = 10**18
"""Priority weights are fixed-point integers with 18 decimals (rounded up, so > 0 stays > 0)."""


def _slot_order(s) -> tuple:
    return (s.kind, s.start, s.end, s.id)


def _first(item: tuple):
    return item[0]


def as_network(network: Mapping[str, Commitment] | Iterable[Commitment]) -> dict[str, Commitment]:
    """participant -> commitment; a list with two commitments of one participant is an error."""
    if isinstance(network, Mapping):
        for pid, c in network.items():
            if pid != c.participant:
                raise InvalidCommitment(f"the network lists {c.participant!r}'s commitment under {pid!r}")
        return dict(network)
    out: dict[str, Commitment] = {}
    for c in network:
        if c.participant in out:
            raise InvalidCommitment(f"two commitments of {c.participant!r} in one network snapshot",
                                    hint="keep only the newest (see xsc.allocation.receive)")
        out[c.participant] = c
    return out


_REPORTED = Decimal("1e-9")
_ZERO_REPORTED = Decimal(0).quantize(_REPORTED)
_DIVISION = Context(prec=60, rounding=ROUND_HALF_EVEN)
_EXACT_BELOW = 10**50


def _to_decimal(num: int, den: int) -> Decimal:
    """num / den (both >= 0) divided to 60 significant digits, then rounded half-even to 9 decimals.

    Reported to 9 decimals: enough for the 0.001 convergence test, and the 18-decimal fixed-point
    weights do not show through as noise in the last digits.  For num < 10^50 the two roundings
    give the same result as rounding num / den once (a value within half a 60-digit unit of a
    9-decimal half-way point would need a denominator beyond 10^50 / num), which integers do
    exactly; larger values take the Decimal path (a fixed context, not the caller's)."""
    if den == 0:
        return _ZERO_REPORTED
    if num < _EXACT_BELOW:
        q, rem = divmod(num * 10**9, den)
        twice = 2 * rem
        if twice > den or (twice == den and q & 1):
            q += 1
        return Decimal(f"{q}E-9")
    return _DIVISION.divide(Decimal(num), Decimal(den)).quantize(_REPORTED, context=_DIVISION)


def _ranked_needs(provider: Commitment, net: Mapping[str, Commitment]) -> tuple[list, list, list, list, int]:
    """`_build_ranked_needs`, kept per provider commitment while the commitments it read are the
    same objects (commitments are frozen): a provider recomputing round after round on the same
    commitments (only the receipts changed) does not rank its recipients again."""
    weights = weight_ratios(provider)
    cached = _RANKED.get(id(provider))
    if cached is not None and cached[0] is provider:
        seen = cached[1]
        if len(seen) == len(weights) and all(map(_is, map(net.get, weights), seen)):
            return cached[2]
    result = _build_ranked_needs(provider, net)
    if len(_RANKED) >= _RANKED_KEPT:
        _RANKED.clear()
    _RANKED[id(provider)] = (provider, tuple(map(net.get, weights)), result)
    return result


def _matched(provider: Commitment, needs: list) -> tuple[list, list[list[int]]]:
    """(the provider's capacity slots in order, for each the positions in `needs` of the need slots it
    is compatible with), kept while the provider's commitment and its ranked needs are the same
    objects (matching reads only those)."""
    cached = _MATCHED.get(id(provider))
    if cached is not None and cached[0] is provider and cached[1] is needs:
        return cached[2], cached[3]
    slots = sorted(provider.capacity_slots, key=_slot_order)
    compatible = CapacityIndex(slots).match(needs)
    if len(_MATCHED) >= _RANKED_KEPT:
        _MATCHED.clear()
    _MATCHED[id(provider)] = (provider, needs, slots, compatible)
    return slots, compatible


_MATCHED: dict[int, tuple] = {}


def _is(a, b) -> bool:
    return a is b


_RANKED: dict[int, tuple] = {}
_RANKED_KEPT = 1 << 15


def _build_ranked_needs(provider: Commitment, net: Mapping[str, Commitment]) -> tuple[list, list, list, list, int]:
    """The need slots of the recipients p recognises, as NeedRows in (tier, recipient id) order,
    the order every capacity slot lists its claims in; by position, the owner and its rank;
    and where tier 2 starts.

    Tier 1 ranks r by MR(p, r), tier 2 by w(p, r).  The weights are exact fractions; a rank is the
    pair (k = fixed(weight * d_r), fixed(weight)), fixed(x) = ceil(x * 10^18), both computed on
    the fractions' integer numerators and denominators."""
    me = provider.participant
    tiers: tuple[list, list] = ([], [])  # (r, r's need rows, k, fixed weight) per tier
    for r, (num, den) in weight_ratios(provider).items():  # w(p, r) = num / den (not reduced)
        other = net.get(r)
        if other is None or r == me:
            continue
        participant, rows, ratios, damping = _peer(other)
        if participant != r:
            raise InvalidCommitment(f"the network lists {participant!r}'s commitment under {r!r}")
        if not rows:
            continue
        back = ratios.get(me)  # only positive weights are listed
        if back is not None:
            b_num, b_den = back
            if b_num * den < num * b_den:  # MR = min(w(p, r), w(r, p))
                num, den = b_num, b_den
        share = -((-num * SCALE) // den)
        if damping is None:
            k = share
        else:
            d_num, d_den = damping
            k = -((-num * d_num * SCALE) // (den * d_den))
        tiers[0 if back is not None else 1].append((r, rows, k, share))

    needs: list = []
    owner_at: list[str] = []
    k_at: list[int] = []
    share_at: list[int] = []
    for group in tiers:
        group.sort(key=_first)
        for r, rows, k, share in group:
            needs.extend(rows)
            owner_at.extend(repeat(r, len(rows)))
            k_at.extend(repeat(k, len(rows)))
            share_at.extend(repeat(share, len(rows)))
    return needs, owner_at, k_at, share_at, sum(len(g[1]) for g in tiers[0])


def _peer(other: Commitment) -> tuple:
    """What a provider's ranking reads of a recognised participant's commitment: (participant, need rows
    (empty without need slots), weight ratios, damping factor as an integer ratio or None when 1), kept
    while the commitment lives (it is frozen).  Every provider that recognises it reads the same, and
    reading pydantic fields and three caches per recognised peer was most of a first ranking."""
    held = _PEERS.get(id(other))
    if held is not None and held[0] is other:
        return held[1]
    damping = other.damping_factor
    info = (other.participant, need_rows(other.need_slots) if other.need_slots else (), weight_ratios(other),
            None if damping == 1 else damping.as_integer_ratio())
    if len(_PEERS) >= _PEERS_KEPT:
        _PEERS.clear()
    _PEERS[id(other)] = (other, info)  # the entry holds the commitment, so its id is not reused meanwhile
    return info


_PEERS: dict[int, tuple] = {}
_PEERS_KEPT = 1 << 16


def _claims(matched: list[int], needs: list, owner_at: list[str], remaining: list,
            received: Mapping[NeedKey, int] | None, granted: list | None = None,
            caps: Mapping[NeedKey, int] | None = None, unserved: list | None = None) -> tuple:
    """The recipients with residual need among the need slots `matched` (positions in `needs`),
    in (tier, id) order: per recipient x, the position of its first slot with residual need
    (firsts), need_x (ms) and, only for a recipient with several such slots, all their positions
    (several[x]).  With `caps`, also per recipient the sum of its slots' caps left (cs, each at
    most the slot's residual need, kept in `granted`) and of their weights (ws: each slot's
    quantity less what p gave it in earlier slots of this computation, kept in `unserved`).

    `matched` follows the order of `needs`, so each recipient's slots come together.  A slot's
    residual need is filled in `remaining` the first time a capacity slot meets it."""
    firsts: list[int] = []
    ms: list[int] = []
    cs: list[int] = []
    ws: list[int] = []
    several: dict[int, list[int]] = {}
    first, need = firsts.append, ms.append
    r = None
    for i in matched:
        left = remaining[i]
        if left is None:
            n = needs[i]
            left = n[ROW_QUANTITY] if received is None else n[ROW_QUANTITY] - received.get(n[ROW_KEY], 0)
            left = remaining[i] = left if left > 0 else 0
            if caps is not None:
                g = caps.get(n[ROW_KEY], 0)
                granted[i] = left if g > left else g if g > 0 else 0
        if not left:
            continue
        if owner_at[i] is not r:  # owner_at holds one string object per recipient
            r = owner_at[i]
            first(i)
            need(left)
            if caps is not None:
                cs.append(granted[i])
                ws.append(unserved[i])
            continue
        x = len(firsts) - 1
        ms[x] += left
        if caps is not None:
            cs[x] += granted[i]
            ws[x] += unserved[i]
        if x in several:
            several[x].append(i)
        else:
            several[x] = [firsts[x], i]
    return firsts, ms, several, cs, ws


def compute_allocation(
    provider: Commitment,
    network: Mapping[str, Commitment] | Iterable[Commitment],
    *,
    received: Mapping[NeedKey, int] | None = None,
    previous: AllocationState | None = None,
    now_ms: int | None = None,
    caps: Mapping[NeedKey, int] | None = None,
) -> AllocationState:
    """Divide each of `provider`'s capacity slots among the compatible need slots of `network`.

    Pure and deterministic: the result depends only on the arguments, never on their order, on
    the clock or on randomness.  `network` maps participants to their latest commitments (the
    provider's own entry, if any, is ignored); `received` gives, per need slot (owner, id), the
    units other providers currently allocate to it (see `ReceivedIndex`); `previous` is this
    provider's last state (for convergence); `now_ms` stamps the result (default: the
    commitment's timestamp).

    Notation: p the provider, w(p, r) p's normalised recognition of r (`normalized_weights`),
    MR(p, r) = min(w(p, r), w(r, p)), d_r the damping factor of r's commitment.

    Residual need of a need slot n of r: max(0, n.quantity - received[n]).  It shrinks as p
    serves n, so over all of p's slots p never gives n more than its residual need.
    Capacity slots are divided one at a time in the order (kind, start, end, id).  For a
    capacity slot c with Q units, let C be its compatible need slots (see `compatible`) with
    residual need > 0, and for each recipient r, need_r = sum of the residual needs of r's slots
    in C.

    Tier 1, recipients with MR(p, r) > 0:
        share_r = MR(p, r) / sum of MR(p, s) over the tier-1 recipients s
        active_r = need_r * d_r
        D1 = sum of share_s * active_s
        alloc_r = Q * share_r * active_r / D1, capped at need_r; what capped recipients do not
        take is divided again among the others in the same proportions (water-filling,
        see `divide`), until all of Q is given or every recipient is capped.
    Tier 2, recipients with MR(p, r) = 0 and w(p, r) > 0, over what tier 1 left (Q2):
        share_r = w(p, r) / sum of w(p, s) over the tier-2 recipients s, D2 likewise,
        alloc_r = Q2 * share_r * active_r / D2, same capping and water-filling.
    Whatever is still left is `unallocated[c]`: the open tier, for the market.
    Recipients p does not recognise (w = 0) get nothing from tiers 1 and 2.

    A recipient's units are spread over its compatible need slots in the order (start, end, id),
    filling each before the next.  All units are integers: ideal shares are rounded by the
    largest-remainder rule, so no slot gives more than Q and no need slot gets more than its
    residual need.  MR * d and w * d enter as fixed-point integers with 18 decimals, rounded up.

    Caps (the round protocol, `xsc.allocation.core.rounds`): with `caps`, see `_Division`.  Convergence: see
    `_convergence`.  The stamp is an ITC event after both the commitment's stamp and the previous state's.
    """
    # A mapping is used as it is (checking it all on every call would cost a network-wide pass);
    # the entries actually read are checked below.
    net = network if isinstance(network, Mapping) else as_network(network)
    me = provider.participant
    if previous is not None and previous.provider != me:
        raise InvalidCommitment(f"the previous state is {previous.provider!r}'s, not {me!r}'s")
    now = provider.timestamp if now_ms is None else now_ms
    division = _Division(provider, net, received or None, caps)  # (an empty `received` changes nothing)
    denominators: dict[str, SlotDenominator] = {}
    unallocated: dict[str, int] = {}
    for c, matched in zip(division.slots, division.compatible_needs):
        dens, unallocated[c.id] = division.divide_slot(c, matched)
        denominators[c.id] = built(SlotDenominator, {"mutual": dens[0], "non_mutual": dens[1]})
    converged, history = _convergence(previous, denominators, now)
    state = built(AllocationState, {
        "provider": me,
        "slot_denominators": denominators,
        "slot_allocations": slot_allocations(division.fields),
        "unallocated": unallocated,
        "recipient_totals": division.totals(),
        "converged": converged,
        "convergence_history": history,
        "stamp": next_stamp(provider.stamp, previous),
        "timestamp": now,
        "wanted": division.wanted_keys(),
    })
    stamped_after(state, provider.stamp)
    return state


def _convergence(previous: AllocationState | None, denominators: dict[str, SlotDenominator], now: int
                 ) -> tuple[bool, tuple]:
    """Whether the provider has converged since `previous`, and its convergence history with this computation.

    delta = the largest relative move |D - D_prev| / max(|D|, |D_prev|) of any denominator of any slot since
    `previous` (1 for a slot that appeared or disappeared); the provider has converged when delta <= 0.001."""
    if previous is None:
        return False, ()
    delta = denominator_delta(previous.slot_denominators, denominators)
    sample = built(ConvergenceSample, {"delta": delta, "timestamp": now})
    return delta <= CONVERGENCE_EPSILON, (previous.convergence_history + (sample,))[-HISTORY_LENGTH:]


class _Division:
    """One computation's division of a provider's capacity slots, slot after slot (see `compute_allocation`): the
    ranked need slots and, by position among them, the residual need, the cap left and what is still unserved;
    the records made so far and each recipient's units per kind.

    Caps (the round protocol, `xsc.allocation.core.rounds`): with `caps`, need slot n may get at most
    caps[n] units from p in this computation (0 for a slot not in `caps`), on top of the cap
    by residual need.  In the proportions, need_r is then the sum of the *quantities* of r's
    slots in C (less what p gave them from earlier capacity slots), not of their residual
    needs (see `xsc.allocation.core.rounds` for why); D1 and D2 are still reported over residual
    needs.  A need slot where the cap, not the residual need, stopped p (p would have given more)
    is listed in the state's `wanted`: p's request for a larger grant next time.  Without
    `caps`, the rule is the seed's: capped by residual need only, and `wanted` is empty."""

    def __init__(self, provider: Commitment, net: Mapping[str, Commitment], received: Mapping[NeedKey, int] | None,
                 caps: Mapping[NeedKey, int] | None) -> None:
        self.received, self.caps = received, caps
        needs, self.owner_at, self.k_at, self.share_at, self.tier1_end = _ranked_needs(provider, net)
        self.needs = needs
        self.slots, self.compatible_needs = _matched(provider, needs)
        # By position in `needs`: the residual need, filled in when a capacity slot first meets it.
        self.remaining: list[int | None] = [None] * len(needs)
        # With caps: by position, the cap left (<= remaining), and the slots p wants to give more.
        self.granted: list[int] | None = [0] * len(needs) if caps is not None else None
        self.unserved: list[int] | None = [n[ROW_QUANTITY] for n in needs] if caps is not None else None
        self.wanted: set[int] = set()
        self.fields: list = []  # capacity slot, need slot, recipient, units, tier; record after record
        self.by_kind: dict[str, dict[str, int]] = {}  # kind -> recipient -> units

    def divide_slot(self, c, matched: list[int]) -> tuple[list[Decimal], int]:
        """Divide capacity slot `c` among its compatible need slots `matched`, tier 1 then tier 2: the two
        denominators and the units left for the open tier."""
        needs, owner_at, remaining, granted, unserved, caps = (self.needs, self.owner_at, self.remaining,
                                                                self.granted, self.unserved, self.caps)
        fields = self.fields
        firsts, ms, several, cs, ws = _claims(matched, needs, owner_at, remaining, self.received, granted, caps,
                                              unserved)
        split = bisect_left(firsts, self.tier1_end)  # where tier 2 starts
        ks = list(map(self.k_at.__getitem__, firsts))
        left = c.quantity
        cid = c.id
        kind_totals = self.by_kind.get(c.kind)
        if kind_totals is None:
            kind_totals = self.by_kind[c.kind] = defaultdict(int)
        dens = []
        for tier, lo, hi in ((1, 0, split), (2, split, len(firsts))):
            if caps is None:
                units_of, d = divide(left, ks[lo:hi], ms[lo:hi])
            else:
                units_of, _, cut = divide_capped(left, ks[lo:hi], ws[lo:hi], cs[lo:hi])
                d = sum(map(mul, ks[lo:hi], ms[lo:hi]))
                for x, is_cut in enumerate(cut, lo):
                    if is_cut:
                        self.wanted.update(several[x] if x in several else (firsts[x],))
            dens.append(_to_decimal(d, sum(map(self.share_at.__getitem__, firsts[lo:hi]))))
            left -= sum(units_of)
            for x, units in enumerate(units_of, lo):
                if not units:
                    continue
                i = firsts[x]
                r = owner_at[i]
                kind_totals[r] += units
                if not several or x not in several:
                    # The common case: one need slot takes it all (divide never exceeds it).
                    remaining[i] -= units
                    if granted is not None:
                        granted[i] -= units
                        unserved[i] -= units
                    fields.extend((cid, needs[i][ROW_ID], r, units, tier))
                    continue
                self._spread(cid, r, tier, units, several[x])
        return dens, left

    def _spread(self, cid: str, r: str, tier: int, units: int, positions: list[int]) -> None:
        """A recipient's units over its several compatible need slots in the order (start, end, id), filling each
        before the next."""
        needs, remaining, granted, unserved = self.needs, self.remaining, self.granted, self.unserved
        for i in sorted(positions, key=lambda i: (needs[i][0], needs[i][1], needs[i][ROW_ID])):
            open_need = remaining[i] if granted is None else granted[i]
            take = units if units < open_need else open_need
            if granted is not None:
                granted[i] -= take
                unserved[i] -= take
            remaining[i] -= take
            units -= take
            self.fields.extend((cid, needs[i][ROW_ID], r, take, tier))
            if not units:
                break

    def totals(self) -> dict[str, dict[str, int]]:
        """Recipient -> kind -> the units it was given."""
        totals: dict[str, dict[str, int]] = {}
        for kind in sorted(self.by_kind):
            for r, units in self.by_kind[kind].items():
                totals.setdefault(r, {})[kind] = units
        return totals

    def wanted_keys(self) -> tuple:
        """The need slots where the cap, not the residual need, stopped the provider: its request for more."""
        granted, remaining, needs = self.granted, self.remaining, self.needs
        return tuple(sorted(needs[i][ROW_KEY] for i in self.wanted if granted[i] == 0 and remaining[i] > 0))


def next_stamp(own: Stamp, previous) -> Stamp:
    """`own.join(previous.stamp.peek()).event()` (`own` alone without a previous record): the stamp of
    a record made after `own` and after the `previous` one.

    When `previous` was itself made after this very `own` stamp (`stamped_after`), its events
    include own's, so the join is (own's id, previous's event tree), exactly (normal forms are
    unique): round after round on an unchanged commitment, the join's walk down two trees of
    the id's depth is skipped."""
    if previous is None:
        return own.event()
    stamp = previous.stamp
    held = _AFTER.get(id(stamp))
    if held is not None and held[0] is stamp and held[1] is own:
        return own.joined_under(stamp).event()
    return own.join(stamp.peek()).event()


def stamped_after(record, own: Stamp) -> None:
    """Note that `record`'s stamp was made by `next_stamp` after `own` (see there)."""
    if len(_AFTER) >= _AFTER_KEPT:
        _AFTER.clear()
    # Kept by the stamp object (small, frozen: whatever carries it is after `own`); the entry holds it, so
    # its id is not reused meanwhile.
    _AFTER[id(record.stamp)] = (record.stamp, own)


_AFTER: dict[int, tuple] = {}
_AFTER_KEPT = 1 << 15
