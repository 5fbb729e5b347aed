"""The recognition this node publishes of its peers: what the user set (`xsc market recognize`), else derived from
health (availability over 24 h, last audit) and from the ledger (what the peer paid us, what we paid it for work
it delivered).  Built before the market, which publishes it, and before the trust lines, which extend credit to the
peers the user recognises (`recognised`).

User weights are kept in LevelDB (`keys.MARKET_RECOGNITION`, synced); the money counters travel in the market's
own record (`keys.MARKET_SELF`), written with its commitment (`counters`, `unsaved`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .. import codec, keys
from ..allocation.core.models import bounded_decimal
from ..errors import InvalidArgument
from ..identity import parse_public_id, public_id
from .core.book import MAX_RECOGNITION as MAX_ENTRIES

MAX_RECOGNITION = Decimal(1000)
# A node never proven up (no probe answered yet) is not recognised: every node a stranger's message named would
# otherwise be subscribed to, pulled from and named in this node's commitment at that stranger's word.
DERIVED_NO_PROBES = Decimal("0")
WEIGHT_STEP = Decimal("0.1")  # derived weights are published to a tenth
EQUALS = Decimal("0.5")  # derived weights this close to the best are equals when the bound picks peers


def check_weight(weight: Decimal) -> None:
    """A weight the user may set, or InvalidArgument."""
    if not weight.is_finite() or not 0 <= weight <= MAX_RECOGNITION:
        raise InvalidArgument(f"a recognition weight must be between 0 and {MAX_RECOGNITION}, not {weight}")
    try:
        bounded_decimal(weight)  # what a commitment may carry (it could not be published otherwise)
    except ValueError as exc:
        raise InvalidArgument(f"a recognition weight: {exc}") from None


class Recognition:
    def __init__(self, *, db: Any, me: str, peers: Any, at_most: int = 16) -> None:
        self.db = db
        self.me = me
        self.peers = peers  # a PeerView (None: a node on its own)
        self.at_most = at_most  # peers whose derived weight is published (market.recognised_at_most)
        raw = db.get(keys.MARKET_SELF)
        state = codec.loads(raw) if raw else {}
        self.paid_by: dict[str, int] = state.get("paid_by", {})  # peer -> micro-credits its user paid us
        self.delivered_by: dict[str, int] = state.get("delivered_by", {})  # peer -> what we paid it
        self.unsaved = False  # paid_by or delivered_by changed since the market last wrote them
        self.user_weights: dict[str, Decimal] = {
            public_id(k[len(keys.MARKET_RECOGNITION):]): Decimal(v.decode())
            for k, v in db.iterator(prefix=keys.MARKET_RECOGNITION)}
        self._made: tuple[Any, dict[str, Decimal]] | None = None  # (peers' state_version, weights())
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` whenever the user sets a weight (the market publishes again)."""
        self._watchers.append(changed)

    def recognised(self, peer: str) -> bool:
        """Whether the user recognises `peer` (a weight above 0): such a peer gets a credit line."""
        return self.user_weights.get(peer, 0) > 0

    def counters(self) -> dict[str, dict[str, int]]:
        return {"paid_by": self.paid_by, "delivered_by": self.delivered_by}

    def note_paid(self, peer: str, amount: int, *, by_them: bool) -> None:
        """A peer's user paid us (`by_them`), or we paid a peer for work it delivered: both raise recognition."""
        table = self.paid_by if by_them else self.delivered_by
        table[peer] = table.get(peer, 0) + amount
        self.unsaved = True  # written by the next market round (within a second), not by every paid call
        self._made = None

    def set_weight(self, peer: str, weight: Decimal | None) -> None:
        key = parse_public_id(peer)
        if weight is None:
            self.db.delete(keys.market_recognition(key), sync=True)
            self.user_weights.pop(peer, None)
        else:
            check_weight(weight)
            # What the node publishes is these and at most `at_most` derived weights, in one commitment: past its
            # MAX_ENTRIES the node could sign no commitment at all.
            if peer not in self.user_weights and len(self.user_weights) >= MAX_ENTRIES - self.at_most:
                raise InvalidArgument(f"at most {MAX_ENTRIES - self.at_most} recognition weights set by the user",
                                      hint="remove one first: xsc market recognize PEER auto")
            self.db.put(keys.market_recognition(key), str(weight).encode(), sync=True)
            self.user_weights[peer] = weight
        self._made = None
        for changed in self._watchers:
            changed()

    def derived_weight(self, peer: str, exchanged_total: int | None = None) -> Decimal:
        """From health and the ledger: availability over 24 h, cut to a tenth after a failed audit, plus a bonus
        for the share of money exchanged with that peer (both directions), rounded to WEIGHT_STEP.
        `exchanged_total`: `_exchanged_total()`, when the caller weighs every peer (summed once, not once per peer)."""
        availability = self.peers.availability(peer) if self.peers is not None else None
        if availability is None or availability.ratio_24h is None:
            weight = DERIVED_NO_PROBES
        else:
            weight = Decimal(str(round(availability.ratio_24h, 4)))
        if availability is not None and availability.last_audit and not availability.last_audit.get("ok", True):
            weight /= 10
        total = self._exchanged_total() if exchanged_total is None else exchanged_total
        if total:
            exchanged = self.paid_by.get(peer, 0) + self.delivered_by.get(peer, 0)
            weight += Decimal(exchanged) / Decimal(total)
        # To a tenth: weights within a tenth are equals (weights()), and a weight published to four decimals moved
        # at almost every probe of a loaded network, re-publishing and pushing the commitment each time.
        return weight.quantize(WEIGHT_STEP)

    def _exchanged_total(self) -> int:
        return sum(self.paid_by.values()) + sum(self.delivered_by.values())

    def _peer_ids(self) -> list[str]:
        return [d.id for d in self.peers.peers()] if self.peers is not None else []

    def weights(self) -> dict[str, Decimal]:
        """This node's recognition of its peers, made again only when what it is made of changed (peers'
        availability, money exchanged, user weights): with 1,000 peers it was ~15 ms of loop CPU per put."""
        state = self.peers.state_version() if self.peers is not None else None
        if self._made is not None and self._made[0] == state:
            return dict(self._made[1])
        total = self._exchanged_total()
        # The bound is for derived weights: a peer the user weighed is published besides, never in a derived place.
        derived = {p: w for p in self._peer_ids() if p != self.me and p not in self.user_weights
                   and (w := self.derived_weight(p, total)) > 0}
        # Weights within EQUALS of the best are equals, ranked by the pair alone.  By weight, every node would keep
        # the same few most available peers, and those would carry the whole network's subscriptions; by tenths, a
        # probe that happened to fail (a peer probed a few times has 0.5 for one failure) made two nodes rank a pair
        # differently, so fewer choices were mutual and each node's neighbourhood grew with the network.
        near = max(derived.values(), default=Decimal(0)) - EQUALS
        kept = sorted(derived, key=lambda p: (0, Decimal(0), self._rank(p)) if derived[p] >= near
                      else (1, -derived[p], self._rank(p)))
        weights = {p: derived[p] for p in kept[:self.at_most]}
        weights.update(self.user_weights)
        made = {p: w for p, w in sorted(weights.items()) if w > 0 and p != self.me}
        self._made = (state, made)
        return dict(made)

    def _rank(self, peer: str) -> str:
        """A peer's place among equals: the same on every call of this node, different on every node (nodes that
        see the same equal peers each keep a sample of their own, so the whole network stays connected), and the
        same from both ends of a pair, so the peers a node recognises mostly recognise it too: a node subscribes
        to and hears from those it recognises and those that recognise it, about `at_most` peers in all rather
        than twice as many."""
        return hashlib.sha256(":".join(sorted((self.me, peer))).encode()).hexdigest()

    def view(self, book: Any) -> list[dict]:
        """Each peer's weight, set by the user or derived, and the weight its commitment in `book` gives us."""
        peers, total = set(self._peer_ids()), self._exchanged_total()
        rows = []
        for peer in sorted(peers | set(self.user_weights)):
            theirs = book.get(peer)
            derived = self.derived_weight(peer, total)  # once per peer (it reads the peer's availability)
            rows.append({"peer": peer, "weight": str(self.user_weights.get(peer, derived)),
                         "set_by_user": peer in self.user_weights, "derived": str(derived),
                         "theirs": str(theirs.recognition.get(self.me, 0)) if theirs else None})
        return rows
