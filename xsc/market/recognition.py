"""The recognition this node publishes of its peers: what the user set (`xsc market recognize`), else derived.
A derived weight is earned: only a peer money was exchanged with (what its user paid this node, what this node
paid it for work it delivered: storage held, invokes served, each receipt counted once) is recognised, ranked by
that money; being up (a probe answered) is a precondition and a failed last audit cuts it.  Answering probes earns
nothing, so any number of fresh ids takes no place from a peer that trades with this node (`rank_derived`).
While no peer that is up has earned anything (a new network, a new node) the node bootstraps: it recognises a
sample of the peers that are up, as it must to hear of their offers and be heard (one per network, those seen up
longest first: `rank_derived`), and its first trade ends that.  Built before
the market, which publishes it, and before the trust lines, which extend credit to the peers the user recognises
(`recognised`).

User weights are kept in LevelDB (`keys.MARKET_RECOGNITION`, synced), and so is the secret that orders equal
sums (`keys.MARKET_TIE_SECRET`, made once); the money counters travel in the market's
own record (`keys.MARKET_SELF`), written with its commitment (`counters`, `unsaved`).
"""

from __future__ import annotations

import heapq
import os
import time
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .. import codec, keys
from ..allocation.core.models import bounded_decimal
from ..errors import InvalidArgument, quoted
from ..identity import parse_public_id, public_id
from ..net.addresses import url_network
from .core.book import MAX_RECOGNITION as MAX_ENTRIES
from .core.recognition import (DEFAULT_HALF_LIFE, EQUALS, SETTLED_MS, Decayed, fold, one_per_network, rank_derived,
                               sample_key, worth)

MAX_RECOGNITION = Decimal(1000)
# A node never proven up (no probe answered yet) is not recognised: every node a stranger's message named would
# otherwise be subscribed to, pulled from and named in this node's commitment at that stranger's word.
DERIVED_NO_PROBES = Decimal("0")
WEIGHT_STEP = Decimal("0.1")  # derived weights are published to a tenth
# Peers whose money counters are kept, each way: any id that pays this node a micro-credit gets one, and the counters
# are written whole with the market's record.  Past it the peer that exchanged least goes (a newcomer's first amount
# is kept, so that it can grow).
MOST_COUNTED = 4096
REMAKE_MS = 60_000  # derived weights are made again at least this often (the money they rank by ages)


def check_weight(weight: Decimal) -> None:
    """A weight the user may set, or InvalidArgument."""
    if not weight.is_finite() or not 0 <= weight <= MAX_RECOGNITION:
        raise InvalidArgument(f"a recognition weight must be between 0 and {MAX_RECOGNITION}, not {quoted(weight)}")
    try:
        bounded_decimal(weight)  # what a commitment may carry (it could not be published otherwise)
    except ValueError as exc:
        raise InvalidArgument(f"a recognition weight: {exc}") from None


def _most(counted: dict[str, int]) -> dict[str, int]:
    """The MOST_COUNTED peers that exchanged most, of counters read back (kept before they were bounded)."""
    if len(counted) <= MOST_COUNTED:
        return counted
    return dict(sorted(counted.items(), key=lambda item: -item[1])[:MOST_COUNTED])


def _tie_secret(db: Any) -> bytes:
    """The secret that orders peers that earned equal sums: made once and kept, so a restart does not reshuffle
    which of them are recognised (each reshuffle re-publishes the commitment and moves subscriptions)."""
    secret = db.get(keys.MARKET_TIE_SECRET)
    if secret is None or len(secret) != 32:
        secret = os.urandom(32)
        db.put(keys.MARKET_TIE_SECRET, secret, sync=True)
    return secret


class Recognition:
    def __init__(self, *, db: Any, me: str, peers: Any, at_most: int = 16, half_life: float = DEFAULT_HALF_LIFE,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.me = me
        self.peers = peers  # a PeerView (None: a node on its own)
        self.at_most = at_most  # peers whose derived weight is published (market.recognised_at_most)
        self.half_life = half_life  # seconds after which money exchanged counts half (market.recognition_half_life)
        self.clock = clock
        raw = db.get(keys.MARKET_SELF)
        state = codec.loads(raw) if raw else {}
        self.paid_by: dict[str, int] = _most(state.get("paid_by", {}))  # peer -> micro-credits its user paid us
        self.delivered_by: dict[str, int] = _most(state.get("delivered_by", {}))  # peer -> what we paid it
        # peer -> the money of both directions, each receipt decayed to the newest one's time (what ranks peers)
        self.recent: dict[str, Decayed] = {p: Decayed(float(v), int(t)) for p, (v, t) in state.get("recent", {}).items()
                                           if p in self.paid_by or p in self.delivered_by}
        now = self._now_ms()
        for peer in set(self.paid_by) | set(self.delivered_by):
            if peer not in self.recent:  # money counted without its time: as of now, so it keeps its place
                self.recent[peer] = Decayed(float(self.earned(peer)), now)
        self.unsaved = False  # paid_by or delivered_by changed since the market last wrote them
        self.user_weights: dict[str, Decimal] = {
            public_id(k[len(keys.MARKET_RECOGNITION):]): Decimal(v.decode())
            for k, v in db.iterator(prefix=keys.MARKET_RECOGNITION)}
        self._made: tuple[Any, dict[str, Decimal]] | None = None  # (peers' state_version, weights())
        self._weights_set = 0  # grows with each weight the user sets (`version`)
        self._remade = 0  # grows whenever the peers' state or the money's age gave other weights (`version`)
        self._paid = False  # money was counted since the weights were made
        self._secret = _tie_secret(db)
        self._watchers: list[Callable[[], None]] = []
        self._sample = _Sample()  # the peers a bootstrapping node samples, kept up with the peers' changes

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` whenever the user sets a weight (the market publishes again)."""
        self._watchers.append(changed)

    def recognised(self, peer: str) -> bool:
        """Whether the user recognises `peer` (a weight above 0): such a peer gets a credit line."""
        return self.user_weights.get(peer, 0) > 0

    def counters(self) -> dict[str, dict]:
        return {"paid_by": self.paid_by, "delivered_by": self.delivered_by,
                "recent": {p: [c.value, c.as_of_ms] for p, c in self.recent.items()}}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def note_paid(self, peer: str, amount: int, *, by_them: bool) -> None:
        """A peer's user paid us (`by_them`), or we paid a peer for work it delivered: both raise recognition, the
        more the more recent (`recent`, read by `worth`)."""
        table = self.paid_by if by_them else self.delivered_by
        if peer not in table and len(table) >= MOST_COUNTED:
            gone = min(table, key=table.__getitem__)
            del table[gone]
            if gone not in self.paid_by and gone not in self.delivered_by:
                self.recent.pop(gone, None)
        table[peer] = table.get(peer, 0) + amount
        self.recent[peer] = fold(self.recent.get(peer), amount, self._now_ms(), self.half_life)
        self.unsaved = True  # written by the next market round (within a second), not by every paid call
        self._paid = True  # the weights are made again, and their version does not move for it (`version`)

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
        self._weights_set += 1
        for changed in self._watchers:
            changed()

    def earned(self, peer: str) -> int:
        """Micro-credits exchanged with `peer`, both ways: what its user paid this node, what this node paid it."""
        return self.paid_by.get(peer, 0) + self.delivered_by.get(peer, 0)

    def worth(self, peer: str, now_ms: int | None = None) -> float:
        """The money exchanged with `peer`, each receipt halved every `half_life` since it was made."""
        return worth(self.recent.get(peer), self._now_ms() if now_ms is None else now_ms, self.half_life)

    def derived_weight(self, peer: str, exchanged_total: float | None = None, *, bootstrapping: bool = False) -> Decimal:
        """From health and the ledger: 0 for a peer never proven up or that answered no probe in 24 h, and, unless
        `bootstrapping`, for a peer that earned nothing here; else availability over 24 h, cut to a tenth after a failed audit, plus the peer's share
        of the money exchanged (both directions, recent money counting more: `worth`), rounded to WEIGHT_STEP and at
        least WEIGHT_STEP for a peer that earned.  `exchanged_total`: `_exchanged_total()`, when the caller weighs
        every peer (summed once)."""
        availability = self.peers.availability(peer) if self.peers is not None else None
        return self._weigh(peer, availability, exchanged_total, bootstrapping)

    def _weigh(self, peer: str, availability: Any, exchanged_total: float | None, bootstrapping: bool,
               now_ms: int | None = None) -> Decimal:
        if availability is None or availability.ratio_24h is None:
            return DERIVED_NO_PROBES
        if not availability.ratio_24h:  # not one probe answered in 24 h: whatever it earned, it is not up
            return Decimal(0)
        exchanged = self.earned(peer)
        if not exchanged and not bootstrapping:
            return Decimal(0)
        weight = Decimal(str(round(availability.ratio_24h, 4)))
        if self._audit_failed(availability):
            weight /= 10
        now_ms = self._now_ms() if now_ms is None else now_ms
        total = self._exchanged_total(now_ms) if exchanged_total is None else exchanged_total
        if total:
            weight += Decimal(self.worth(peer, now_ms)) / Decimal(total)
        # To a tenth: a weight published to four decimals moved at almost every probe of a loaded network,
        # re-publishing and pushing the commitment each time.
        weight = weight.quantize(WEIGHT_STEP)
        return max(weight, WEIGHT_STEP) if exchanged else weight

    @staticmethod
    def _audit_failed(availability: Any) -> bool:
        return bool(availability is not None and availability.last_audit and not availability.last_audit.get("ok", True))

    def _exchanged_total(self, now_ms: int) -> float:
        return sum(worth(c, now_ms, self.half_life) for c in self.recent.values())

    def _peer_ids(self) -> list[str]:
        return [d.id for d in self.peers.peers()] if self.peers is not None else []

    def _bootstrapping(self, peers: list[str]) -> bool:
        """Whether no peer proven up has earned anything here: then the node recognises a sample of those up."""
        return not any(self.earned(p) and self.derived_weight(p) > 0 for p in peers if p != self.me)

    def version(self) -> tuple:
        """Changes whenever `weights` changed but by money: a weight the user set, or weights made again at a change
        of a peer's state or of the money's age (REMAKE_MS) that came out other than they were (a probe round that
        moved no weight changes nothing).  Each payment moves the derived weights a little, and is left out: payments
        come all the time (each paid call this node serves, each tab settled), and a deal's answer kept for a second
        (market/dealing.py) would then serve almost none of the puts it is kept for."""
        self._weights()
        return self._weights_set, self._remade

    def weights(self) -> dict[str, Decimal]:
        """This node's recognition of its peers, made again only when what it is made of changed (peers'
        availability, money exchanged, user weights): with 1,000 peers it was ~15 ms of loop CPU per put."""
        return dict(self._weights())

    def _earners(self) -> list[str]:
        """The known peers money was exchanged with: while one of them is up, the only ones a weight is derived for."""
        peers = self.peers
        return sorted(p for p in set(self.paid_by) | set(self.delivered_by)
                      if p != self.me and self.earned(p) and (peers is None or peers.get(p) is not None))

    def _weights(self) -> dict[str, Decimal]:
        now = self._now_ms()
        # Money ages: made again at least every REMAKE_MS, even when nothing else changed.
        state = (self.peers.state_version() if self.peers is not None else None, now // REMAKE_MS)
        if self._made is not None and self._made[0] == state and not self._paid:
            return self._made[1]
        total = self._exchanged_total(now)
        earners = self._earners() if self.peers is not None else []
        # Looked at for the earners alone unless none of them is up: made again at every probe round, a look at every
        # known peer would cost a node in proportion to its directory.
        bootstrapping = not any(self.derived_weight(p, total) > 0 for p in earners)
        # The bound is for derived weights: a peer the user weighed is published besides, never in a derived place.
        up: dict[str, Decimal] = {}
        if bootstrapping and self.peers is not None:
            # Every known peer up is a candidate: kept between remakes, set again for the peers that changed alone.
            kept = self._sample.ranked(self, earners, now)
            up = {p: self._sample.up[p] for p in kept}
        else:
            failed: set[str] = set()
            settled: set[str] = set()
            for p in earners:
                if p == self.me or p in self.user_weights:
                    continue
                availability = self.peers.availability(p)  # once per peer (it reads the peer's probe history)
                if (w := self._weigh(p, availability, total, False, now)) > 0:
                    up[p] = w
                    if self._audit_failed(availability):
                        failed.add(p)
                    if availability.up_since is not None and now - availability.up_since >= SETTLED_MS:
                        settled.add(p)
            kept = rank_derived(self.me, up, {p: self.worth(p, now) for p in up}, failed, self.at_most, self._secret,
                                settled=settled)
        weights = {p: up[p] for p in kept}
        weights.update(self.user_weights)
        made = {p: w for p, w in sorted(weights.items()) if w > 0 and p != self.me}
        if self._made is not None and self._made[0] != state and made != self._made[1]:
            self._remade += 1
        self._made, self._paid = (state, made), False
        return made

    def view(self, book: Any) -> list[dict]:
        """Each peer's weight, set by the user or derived, and the weight its commitment in `book` gives us."""
        now = self._now_ms()
        ids, total = self._peer_ids(), self._exchanged_total(now)
        bootstrapping = self._bootstrapping(ids)
        rows = []
        for peer in sorted(set(ids) | set(self.user_weights)):
            theirs = book.get(peer)
            # once per peer (it reads the peer's availability)
            derived = self.derived_weight(peer, total, bootstrapping=bootstrapping)
            rows.append({"peer": peer, "weight": str(self.user_weights.get(peer, derived)),
                         "set_by_user": peer in self.user_weights, "derived": str(derived), "earned": self.earned(peer),
                         "recent": round(self.worth(peer, now)),
                         "theirs": str(theirs.recognition.get(self.me, 0)) if theirs else None})
        return rows


class _Sample:
    """The peers a bootstrapping node samples from, ranked (`core.recognition.rank_derived`, bootstrapping): every
    known peer but this node and those its user weighed, with a derived weight above 0, its network, and in the order
    `sample_key` gives (up for SETTLED_MS first, then the equals of the best by the pair, then by weight).  Kept
    between the weights' remakes (every probe round remakes them) and set again only for the peers whose descriptor
    or probe history changed (`PeerService.availability_changed_since`: a probe or audit recorded, a descriptor taken
    or dropped) and those whose hour up came to an end since, each a bisect in the order; made whole when those
    changes are no longer all remembered, the 5-minute bucket the ratios are counted in moved on, the clock went
    back, the user set a weight, the peers money was exchanged with changed, the best weight moved (which peers are
    its equals), or the peers keep no such record (a test's view).  What a peer weighs while bootstrapping is its
    health alone: no peer that earned anything is up then."""

    def __init__(self) -> None:
        self.of: tuple | None = None  # (availability_version(), the user's weights set, the earners, now) kept at
        self.up: dict[str, Decimal] = {}
        self.settled: set[str] = set()
        self.networks: dict[str, str] = {}
        self.since: dict[str, int] = {}  # peer -> up_since (ms), for those of `up` not settled yet
        self.settling: list[tuple[int, str]] = []  # (when it settles, peer): a heap, entries since changed left in
        self.counts: Counter[Decimal] = Counter()  # how many of `up` have each weight (the best one: `near`)
        self.near: Decimal | None = None
        self.keys: dict[str, tuple] = {}  # peer -> its `sample_key` in `order`
        self.order: list[tuple[tuple, str]] = []

    def ranked(self, recognition: Recognition, earners: list[str], now: int) -> list[str]:
        """The peers a bootstrapping node recognises now, best first (`rank_derived` of every candidate)."""
        peers, me = recognition.peers, recognition.me
        version = peers.availability_version() if hasattr(peers, "availability_changed_since") else None
        was, changed = self.of, None
        if version is not None and was is not None and was[1:3] == (recognition._weights_set, earners) \
                and now >= was[3] and version[2] == was[0][2]:
            changed = peers.availability_changed_since(was[0])
        if changed is None:
            self.__init__()
            for d in peers.peers():
                self._set(recognition, d.id, d, now)
            touched = set()  # (ordered whole below: `near` is None)
        else:
            touched = set(changed)
            for p in touched:
                self._set(recognition, p, peers.get(p), now)
        while self.settling and self.settling[0][0] <= now:
            at, p = heapq.heappop(self.settling)
            if self.since.get(p) == at - SETTLED_MS:
                del self.since[p]
                self.settled.add(p)
                self._unorder(p)
                touched.add(p)
        self.of = (version, recognition._weights_set, earners, now)
        near = max(self.counts, default=Decimal(0)) - EQUALS
        if near != self.near:  # (made whole, or the best weight moved: every key may have)
            self.near = near
            self.keys = {p: sample_key(me, p, w, near, p in self.settled) for p, w in self.up.items()}
            self.order = sorted((key, p) for p, key in self.keys.items())
        else:
            for p in touched & self.up.keys():
                key = self.keys[p] = sample_key(me, p, self.up[p], near, p in self.settled)
                insort(self.order, (key, p))
        return one_per_network((p for _, p in self.order), self.networks, recognition.at_most)

    def _unorder(self, p: str) -> None:
        key = self.keys.pop(p, None)
        if key is not None:
            del self.order[bisect_left(self.order, (key, p))]

    def _set(self, recognition: Recognition, p: str, descriptor: Any, now: int) -> None:
        self._unorder(p)
        weight = self.up.pop(p, None)
        if weight is not None:
            self.counts[weight] -= 1
            if not self.counts[weight]:
                del self.counts[weight]
        self.networks.pop(p, None)
        self.since.pop(p, None)
        self.settled.discard(p)
        if descriptor is None or p == recognition.me or p in recognition.user_weights:
            return
        availability = recognition.peers.availability(p)  # once per peer (it reads the peer's probe history)
        weight = recognition._weigh(p, availability, 0.0, True, now)
        if weight <= 0:
            return
        self.up[p] = weight
        self.counts[weight] += 1
        self.networks[p] = url_network(descriptor.url)
        if availability.up_since is not None:
            if now - availability.up_since >= SETTLED_MS:
                self.settled.add(p)
            else:
                self.since[p] = availability.up_since
                heapq.heappush(self.settling, (availability.up_since + SETTLED_MS, p))


class RecognisingMe:
    """The book's participants whose commitment recognises this node (a weight above 0), kept up with the commitments
    that changed (`BookReplication.changed_since`), the whole book looked at only when those are not all remembered:
    the book of a large network changes at nearly every round, and who this node subscribes to where (`interests`)
    is asked at each."""

    def __init__(self, me: str, replication: Any) -> None:
        self.me = me
        self.replication = replication  # xsc.market.replication.BookReplication: the book and its changes
        self._version: int | None = None  # the book's version they were kept at
        self._them: set[str] = set()

    def theirs(self, mine: Any) -> dict[str, dict[str, Decimal]]:
        """participant -> its recognition weights, of those the book holds that `mine` (this node's weights) names or
        that recognise this node: all of the book's that `xsc.allocation.core.subscriptions.interests` reads."""
        replication, book = self.replication, self.replication.book
        changed = None if self._version is None else replication.changed_since(self._version)
        if changed is None:
            self._them = {c.participant for c in book.commitments() if self._recognises(c)}
        else:
            for p in changed:
                held = book.get(p)
                (self._them.add if held is not None and self._recognises(held) else self._them.discard)(p)
        self._version = replication.version
        out = {}
        for p in set(mine) | self._them:
            held = book.get(p)
            if held is not None and p != self.me:
                out[p] = dict(held.recognition)
        return out

    def _recognises(self, commitment: Any) -> bool:
        return commitment.participant != self.me and commitment.recognition.get(self.me, 0) > 0
