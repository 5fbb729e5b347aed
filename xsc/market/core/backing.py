"""Which other participants' bids count in this node's clearing and matching: as far as money backs them (pure).

A bid is a promise to pay, and a need is paid only if it is served: a peer could bid the highest price for more
than every provider offers, move the clearing price above every bid this node makes and keep its puts at home, or
(a provider) raise the price its buyers pay, at no cost.  So each other participant's bids count only while the
total they would cost at their bids fits within its `backing` (micro-credits: what the ledger shows it can pay
this node, `xsc.ledger.trust.TrustLines.backing`), dearest first; a bid that does not fit is left out whole (a need is
indivisible), and every bid is charged at least one micro-credit, so that a participant with no backing (a
stranger, or any number of fresh ids) competes with nothing.  This node's own bids always count.  A counted bid
is not bounded by recent clearing prices: how far it tops the others moves no one else's price (the auction's one
price is set at the margin: core/auction.py), and a higher price only leaves it fewer units within its backing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .models import Bid, units_cost


def bid_cost(b: Bid) -> int:
    """What `b` would cost if served at its own bid, at least 1 micro-credit."""
    return max(1, units_cost(b.slot.kind, b.slot.quantity, b.slot.end - b.slot.start, b.price))


def backed(bids: Sequence[Bid], backing: Callable[[str], int] | None, me: str) -> list[Bid]:
    """`bids` less each other participant's bids beyond its `backing(owner)` (None: nobody's backed); `me`'s all."""
    left: dict[str, int] = {}
    kept: set[tuple[str, str]] = set()
    for b in sorted(bids, key=lambda b: (b.slot.owner, -b.price, b.slot.id)):
        owner = b.slot.owner
        if owner == me:
            kept.add((owner, b.slot.id))
            continue
        if owner not in left:
            left[owner] = backing(owner) if backing is not None else 0
        cost = bid_cost(b)
        if cost <= left[owner]:
            left[owner] -= cost
            kept.add((owner, b.slot.id))
    return [b for b in bids if (b.slot.owner, b.slot.id) in kept]
