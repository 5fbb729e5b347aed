"""One round of the allocator, as a node runs it: the provider's side and the recipient's side.

The seed lets every provider answer each recipient's *whole* residual need (need minus what the
other providers give).  Two providers that compute on the same view both answer the same gap, so
the recipient is over-allocated; on the next view each sees the other's answer and withdraws, and
so on: x_A = N - x_B and x_B = N - x_A, updated together, flip between (N, N) and (0, 0) for
ever (with k providers the error is multiplied by -(k - 1) each round).  Damping cannot stop
it: it scales a recipient's weight against the *other* recipients of a slot, while the cap stays
the full residual need.  See docs/allocation.md, "Convergence at density".

The fix is a grant, computed the same way by every provider from the recipient's published
`Receipt`: what each need slot received from each provider and which providers asked for more.
For a need slot with quantity N, total received T, provider p's part x_p, and the k providers
that asked for more (sorted by id, p the i-th):

  - T > N (over-allocated, e.g. the need shrank): p may keep floor(x_p * N / T);
    the kept parts add up to at most N;
  - T <= N and p asked: p may give x_p + floor((N - T) / k), plus 1 if i < (N - T) mod k;
    the grants add up to exactly the gap N - T;
  - T <= N and p did not ask (or there is no receipt yet): p may give at most x_p.

So when every provider computes from the same receipts, no need slot is ever over-allocated,
and a gap is shared out in one round instead of being fought over.  A provider asks for more by
listing the need slot in its state's `wanted` (its cap, not the need, stopped it); a newcomer
asks first and is granted on the next receipt.  Inside a provider the seed's rule holds: tier 1
before tier 2, proportions by recognition x need x damping, water-filling, capping by residual
need; the grant only lowers the cap.  One difference: the proportions use each need slot's
quantity, not its residual need (with grants, a recipient whose need is met has, at each of its
providers, a residual need equal to what that provider gives it, and weighing it by that drains
it round after round wherever capacity is scarce); the reported denominators stay over residual
needs.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Iterable, Mapping

from pydantic import Field

from .compute import compute_allocation, next_stamp, stamped_after
from .damping import _damped
from ...itc import Stamp
from .matching import ROW_ID, ROW_QUANTITY, need_rows
from .models import AllocationState, Commitment, Id, NeedKey, Quantity, _Frozen, built
from .recognition import weight_ratios


class ReceiptEntry(_Frozen):
    """What one need slot received in the round: its quantity, the total, each provider's part
    (providers giving > 0 only) and the providers that asked for more (sorted)."""

    quantity: Quantity
    total: Quantity
    by_provider: dict[Id, Annotated[int, Field(gt=0, strict=True)]] = {}
    wanting: tuple[Id, ...] = ()


class Receipt(_Frozen):
    """What a recipient publishes after totalling what its providers allocate to it."""

    recipient: Id
    needs: dict[Id, ReceiptEntry]
    over_allocation: Quantity
    damping_factor: Decimal
    stamp: Stamp
    timestamp: int


def grant(provider: str, entry: ReceiptEntry | None) -> tuple[int, int]:
    """(units the other providers give, the most `provider` may give) for one need slot.

    The rule of the module docstring; no receipt (None) means nothing given, nothing granted."""
    if entry is None:
        return 0, 0
    return _grant(provider, entry.quantity, entry.total, entry.by_provider, entry.wanting)


def _grant(provider: str, need: int, total: int, by_provider: Mapping[str, int],
           wanting: tuple[str, ...]) -> tuple[int, int]:
    mine = by_provider.get(provider, 0)
    if total > need:
        return total - mine, mine * need // total
    if provider not in wanting:
        return total - mine, mine
    gap, k = need - total, len(wanting)
    i = wanting.index(provider)
    return total - mine, mine + gap // k + (1 if i < gap % k else 0)


def _entries(receipt: Receipt) -> dict[str, tuple]:
    """need slot id -> (quantity, total, by_provider, wanting), kept while the receipt lives
    (receipts are frozen; plain tuples read faster than model fields)."""
    cached = _ENTRIES.get(id(receipt))
    if cached is not None and cached[0] is receipt:
        return cached[1]
    entries = {nid: (e.quantity, e.total, e.by_provider, e.wanting) for nid, e in receipt.needs.items()}
    if len(_ENTRIES) >= 1 << 15:
        _ENTRIES.clear()
    _ENTRIES[id(receipt)] = (receipt, entries)
    return entries


_ENTRIES: dict[int, tuple[Receipt, dict[str, tuple]]] = {}


def provider_view(provider: Commitment, network: Mapping[str, Commitment],
                  receipts: Mapping[str, Receipt]) -> tuple[dict[NeedKey, int], dict[NeedKey, int]]:
    """(received from others, cap) per need slot of every recipient `provider` recognises:
    the `received` and `caps` arguments of `compute_allocation`."""
    me = provider.participant
    received: dict[NeedKey, int] = {}
    caps: dict[NeedKey, int] = {}
    for r in weight_ratios(provider):
        receipt = receipts.get(r)
        if receipt is None or r == me:
            continue  # nothing given, nothing granted yet
        other = network.get(r)
        if other is None or not other.need_slots:
            continue
        entries = _entries(receipt)
        for n in other.need_slots:
            entry = entries.get(n.id)
            if entry is None:
                continue
            others, cap = _grant(me, *entry)
            key = (r, n.id)
            if others:
                received[key] = others
            if cap:
                caps[key] = cap
    return received, caps


def provider_round(provider: Commitment, network: Mapping[str, Commitment], receipts: Mapping[str, Receipt],
                   previous: AllocationState | None = None, now_ms: int | None = None) -> AllocationState:
    """The provider's side of a round: divide `provider`'s capacity slots among the needs of
    `network` (participant -> latest commitment, with its damping factor), each need slot's
    residual need and cap taken from its recipient's latest receipt in `receipts`
    (recipient -> Receipt; a recipient without one gets nothing yet, only a request).

    Publish the result (its `slot_allocations` and `wanted`) to the recipients."""
    view = _View(provider.participant, receipts)
    try:
        return compute_allocation(provider, network, received=view.received, previous=previous, now_ms=now_ms,
                                  caps=view.caps)
    finally:
        view.close()


class _View:
    """`provider_view`, computed only for the need slots `compute_allocation` looks up (those
    compatible with one of the provider's capacity slots), and at most once each.

    compute_allocation asks only about need slots of the recipients it ranks (recognised by the
    provider, in the network, with need slots), which are exactly the keys `provider_view` fills,
    so the answers are the same: units others give (0 when `provider_view` leaves the key out)
    and the cap (likewise)."""

    __slots__ = ("me", "receipts", "pairs", "received", "caps")

    def __init__(self, me: str, receipts: Mapping[str, Receipt]) -> None:
        self.me = me
        self.receipts = receipts
        self.pairs: dict[NeedKey, tuple[int, int]] = {}
        self.received = _Side(self, 0)
        self.caps = _Side(self, 1)

    def close(self) -> None:
        """Drop the sides, which point back at the view: freed by reference counting, not left as
        a cycle for the garbage collector (one per computation; at scale, most of what it found)."""
        self.received = self.caps = None

    def pair(self, key: NeedKey) -> tuple[int, int]:
        pair = self.pairs.get(key)
        if pair is None:
            r, nid = key
            receipt = self.receipts.get(r) if r != self.me else None
            entry = None if receipt is None else _entries(receipt).get(nid)
            pair = self.pairs[key] = _NOTHING if entry is None else _grant(self.me, *entry)
        return pair


_NOTHING = (0, 0)


class _Side:
    """One side of a `_View` (units from others, or caps) with the `get` compute_allocation uses."""

    __slots__ = ("view", "pairs", "side")

    def __init__(self, view: _View, side: int) -> None:
        self.view, self.pairs, self.side = view, view.pairs, side

    def get(self, key: NeedKey, default: int = 0) -> int:
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.view.pair(key)
        return pair[self.side] or default

    def __bool__(self) -> bool:
        return True


def addressed_to(recipient: str, states: Iterable[AllocationState]) -> tuple[dict[str, dict[str, int]],
                                                                          dict[str, list[str]]]:
    """From providers' states: (provider -> need slot id -> units, provider -> need slot ids it
    asks more for), the parts that concern `recipient`: what `recipient_round` takes."""
    received: dict[str, dict[str, int]] = {}
    wanted: dict[str, list[str]] = {}
    for s in states:
        mine = {}
        for a in s.slot_allocations:
            if a.recipient == recipient:
                mine[a.need_slot] = mine.get(a.need_slot, 0) + a.quantity
        if mine:
            received[s.provider] = mine
        asks = [nid for owner, nid in s.wanted if owner == recipient]
        if asks:
            wanted[s.provider] = asks
    return received, wanted


def recipient_round(commitment: Commitment, received: Mapping[str, Mapping[str, int]],
                    wanted: Mapping[str, Iterable[str]], now_ms: int,
                    previous: Receipt | None = None) -> tuple[Commitment, Receipt]:
    """The recipient's side of a round: total what each provider allocates to each of its need
    slots (`received`: provider -> need slot id -> units, from the providers' latest states)
    and who asks for more (`wanted`: provider -> need slot ids), then record the
    over-allocation in the damping history (`update_damping`).

    Returns (the commitment with its new damping history and factor, the receipt to publish to
    its providers).  The caller republishes the commitment when the damping factor changed."""
    rows = need_rows(commitment.need_slots)
    by_slot: dict[str, dict[str, int]] = {row[ROW_ID]: {} for row in rows}
    for p, parts in received.items():
        for nid, units in parts.items():
            if units > 0:
                slot = by_slot.get(nid)
                if slot is not None:
                    slot[p] = units
    asking: dict[str, list[str]] = {}
    for p, nids in wanted.items():
        for nid in nids:
            if nid in by_slot:
                asking.setdefault(nid, []).append(p)
    entries = {}
    totals = {}
    over = 0
    for row in rows:
        nid, quantity = row[ROW_ID], row[ROW_QUANTITY]
        parts = by_slot[nid]
        total = totals[nid] = sum(parts.values())
        if total > quantity:
            over += total - quantity
        asks = asking.get(nid)
        entries[nid] = built(ReceiptEntry, {
            "quantity": quantity, "total": total,
            "by_provider": dict(sorted(parts.items())) if len(parts) > 1 else parts,
            "wanting": tuple(sorted(set(asks))) if asks else ()})
    damped = _damped(commitment, over, now_ms)
    receipt = built(Receipt, {
        "recipient": commitment.participant, "needs": entries, "over_allocation": over,
        "damping_factor": damped.damping_factor, "stamp": next_stamp(commitment.stamp, previous),
        "timestamp": now_ms})
    stamped_after(receipt, commitment.stamp)
    return damped, receipt


def answered(provider: str, allocations: Iterable[tuple], wanted: Iterable[tuple[str, str]],
             receipts: Mapping[str, Receipt]) -> bool:
    """Whether every recipient that `provider`'s state names (`allocations`: (capacity slot, recipient, need slot,
    units, tier); `wanted`: (recipient, need slot)) has a receipt answering that state: for each need slot the
    state names that the receipt lists, the receipt's part of `provider` and whether it asks for more are the
    state's.  A need slot the receipt no longer lists (its need is gone) needs no answer; nor does a recipient
    without any receipt yet (it answers when it first computes)."""
    parts: dict[tuple[str, str], int] = {}
    for _c, r, n, q, _t in allocations:
        parts[(r, n)] = parts.get((r, n), 0) + q
    asks = set(wanted)
    for r, n in set(parts) | asks:
        receipt = receipts.get(r)
        if receipt is None:
            continue
        entry = receipt.needs.get(n)
        if entry is None:
            continue
        if entry.by_provider.get(provider, 0) != parts.get((r, n), 0) \
                or (provider in entry.wanting) != ((r, n) in asks):
            return False
    return True
