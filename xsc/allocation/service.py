"""Live allocation rounds on a node: the asyncio shell around `provider_round` and `recipient_round`.

- **The network** is read from the market's book (`MarketService.book`): every *active* participant
  (known, up, offer fresher than `market.freshness`) becomes an allocator `Commitment` of its asks'
  capacity slots, its bids' need slots (standing needs and the needs of puts and invokes in
  progress) and its recognition weights, with the damping factor of its latest receipt.
- **A round** (debounced by `market.allocation_delay` after anything it reads changed: the book, a
  record received, a standing need) runs exactly the functions the simulators run: as a provider
  `provider_round` over the network and the receipts held, as a recipient `addressed_to` over the
  active providers' states and `recipient_round`.  It publishes what changed -- a signed
  `StateRecord` and/or `ReceiptRecord` (`xsc.allocation.core.records`), each an ITC event of this node's
  stamp after joining every stamp it received -- by pushing it to the parties it names (now or in the
  record before) and its subscribers (`POST /v1/peer/allocation`).  A provider whose state did not
  converge computes again after the delay; a quiet network sends nothing.
- **Rounds in step**, as the simulator's: the provider's side waits until every recipient its latest
  state names has answered it (`_provider_waits`), the recipient's side until every provider of the
  round has sent its state (`_recipient_waits`), each at most the bound (`STEP_WAIT` delays, at least
  `STEP_WAIT_MIN` s); a provider whose state did not change for a new receipt sends it again (`acks`).
- **Converged** (`status`): the seed's rule, and no node says so before its needs are answered: a provider
  has computed on the needs it follows (`needs_moved`), a recipient's need slots have each been answered by
  every provider that should see them (`unanswered`; docs/allocation.md).
- **Subscriptions** (`xsc.allocation.core.subscriptions`): at each peer the node subscribes to what its
  rounds read of it (the seed's derived subgroups: mutual partners everything, one-way beneficiaries
  their needs and receipts, providers for it their commitments and states), renews every third of
  SUBSCRIPTION_TTL, and keeps who subscribed to it (bounded, expiring).  The market's commitment
  goes to the same subscribers (the market holds the same `Subscribers`).
- **Receiving** (`receive`): only records whose publisher is a known peer, parsed with every bound
  of `xsc.allocation.core.records`, signature checked, states checked against the publisher's offer,
  future-dated ones refused; then stale ignored, newer replace, concurrent merged (`Held`).
- **Causality**: a node without an ITC id asks a peer to fork its own (`POST
  /v1/peer/allocation/fork`): the peer keeps one half, answers the other, and stores its half before
  answering.  A node that got no fork after `FORK_WAIT` seconds seeds the whole id when it knows no
  peer and was given none to join (the first node of a network), or has the smallest node id of the
  peers it knows (none of which has an id yet: they all started at once); the others fork from it
  on their next try.  A node given peers to join waits for one of them, however long it takes.
  The id is stored (`keys.MARKET_ALLOCATION`).  A restarted node *rejoins*: it forks a fresh id from a
  live peer and gives its stored one back in the same request (`"retire"`: the peer joins it into its
  own before forking, so the id space does not fragment), and its new stamp is after everything it
  published before and everything that peer holds of it; with no peer to rejoin through within
  `FORK_WAIT` seconds it goes on with its stored id (nobody else owns it).
- **Anti-entropy**: every third of `market.freshness` (at least the gossip interval) one random peer we
  subscribe at gets a digest of what we hold of the publishers we want (`POST
  /v1/peer/allocation/digest`) and answers with the records we lack or hold another of.  A provider
  with nothing to allocate publishes nothing, so a network without needs sends no allocation records.

Serving: `allocated(kind)` says, per provider, the units the active providers' states give this
node's need slots of `kind`; `MarketService.deal` places needs there first (docs/allocation.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from decimal import Decimal
from typing import Any


from .. import keys
from ..db import Database
from ..config import MarketSection
from ..errors import ForgedRecord, InvalidArgument, PeerError, UnknownPeer, XscError
from ..identity import Identity
from ..net.peer_client import dumps
from ..tasks import Quota, at_most, woken
from .core.convergence import NETWORK_QUORUM
from ..itc import ItcError, Stamp
from .core.matching import compatible
from .core.models import AllocationState, Commitment, DampingSample
from .core.records import (
    MAX_STAMP_HEX,
    Held,
    ReceiptRecord,
    StateRecord,
    check_state,
    parse_receipt,
    parse_state,
    sign_receipt,
    sign_state,
)
from .core.rounds import Receipt, addressed_to, answered, provider_round, recipient_round
from .core.subscriptions import (
    MAX_SUBSCRIPTIONS,
    Subscribers,
    differing,
    parse_digest,
    parse_subscription,
    short_hash,
    sign_subscription,
)

log = logging.getLogger(__name__)

PEER_PATH = "/v1/peer/allocation"
FORK_PATH = "/v1/peer/allocation/fork"
# Each fork halves this node's share of the ITC id space for good (and deepens the id every record carries), so a
# known peer gets FORK_BURST at once and one more every 1 / FORK_RATE s: a joining node needs one, a restarted one
# gives its old id back with the one it takes.  A stranger gets none.
FORK_BURST = 2
FORK_RATE = 1 / 600
SUBSCRIBE_PATH = "/v1/peer/allocation/subscribe"
DIGEST_PATH = "/v1/peer/allocation/digest"
SUBSCRIPTION_TTL = 60.0  # seconds a subscription lives; renewed every third of it (and when its topics change)
SUBSCRIBE_RETRY = 5.0  # seconds before a subscription that failed is sent again
SUBSCRIPTIONS_AT_ONCE = 64  # subscriptions in flight at most (as probes: peers/probes.py)
MAX_RECORDS = 1_001  # states and receipts per message each: one per peer the directory can hold, and this node's
FORK_WAIT = 3.0  # seconds a node without an ITC id waits for a peer to fork one from before it seeds one
TRAFFIC_ROUNDS = 256  # rounds whose bytes are kept for the status
STEP_WAIT = 10  # allocation delays a side waits for the other side's answers (rounds in step: `_provider_waits`) ...
STEP_WAIT_MIN = 5.0  # ... and at least this many seconds


def now_ms() -> int:
    return int(time.time() * 1000)


class AllocationService:
    def __init__(self, *, config: MarketSection, identity: Identity, db: Database, market: Any, needs: Any,
                 subscribers: Subscribers, peers: Any, gossip_interval: float, joins: bool = False,
                 forks: Quota | None = None) -> None:
        self.config = config
        self.forks = forks  # per peer, the ITC forks it may take (FORK_BURST, FORK_RATE); None: no bound
        self.identity = identity
        self.me = identity.id
        self.db = db
        self.market = market  # xsc.market.service.MarketService: the book, freshness, what this node subscribes to
        market.on_change.append(self.touch)  # a round reads the book
        self.needs = needs  # xsc.market.needs.NeedRegistry: this node's need slots (standing ones are allocated)
        needs.watch(self.touch, standing=True)
        self.peers = peers  # a PeerView (None: a node on its own)
        self.gossip_interval = gossip_interval
        self.joins = joins  # started with peers to join (peers.urls): it forks its ITC id, never seeds one alone
        raw = db.get(keys.MARKET_ALLOCATION)
        # A restarted node's id, until it rejoins through a peer (`ensure_id`): it publishes nothing before.
        self.retiring: Stamp | None = Stamp.decode(bytes.fromhex(raw.decode())) if raw else None
        self.stamp: Stamp | None = None
        self.forked_from: str | None = None
        self.rejoined = False  # this run got its id by giving its stored one back to a peer
        self.states = Held()  # provider -> its newest StateRecord (this node's too)
        self.receipts = Held()  # recipient -> its newest ReceiptRecord (this node's too)
        self.previous: AllocationState | None = None  # this node's last state, for convergence
        self.my_receipt: Receipt | None = None
        self.history: tuple[DampingSample, ...] = ()
        self.damping = Decimal(1)
        self.rounds = 0
        self.refused: dict[str, int] = {}  # why records were refused -> how many
        self.traffic: list[tuple[int, int]] = []  # (round, bytes this node sent for it)
        self.bytes_sent = 0
        self.bytes_by: dict[str, int] = {"records": 0, "subscriptions": 0, "digests": 0}  # what bytes_sent was for
        self.subscribers = subscribers  # who subscribed to this node's records (and its market commitment)
        self.subscribed: dict[str, tuple[frozenset[str], float]] = {}  # peer -> (topics, when sent) we asked it for
        self._named: dict[str, set[str]] = {"state": set(), "receipt": set()}  # named in our last published record
        self._greeted: set[str] = set()  # peers that took a subscription of ours since we started
        self._retry_at: dict[str, float] = {}  # peer -> when to try a subscription that failed again
        self._dirty = True
        # Rounds in step (`_provider_waits`, `_recipient_waits`): when this node last computed as a provider
        # and published a receipt, the receipts its provider side last read (recipient -> signature), when each
        # provider's state last arrived (even unchanged: an answer), the recipients to answer with our unchanged
        # state, and the pending wake-up of a side that waits.
        self._computed_at = 0.0
        self._receipt_at = 0.0
        self._read: dict[str, str] = {}
        self._heard: dict[str, float] = {}
        self.acks: set[str] = set()
        # Needs reached and answered (`unanswered`, `needs_moved`): when our first receipt listing each of our
        # need slots was published, when each provider's state last arrived (even unchanged), and the needs
        # this node's provider side last computed on.
        self._listed_at: dict[str, float] = {}
        self._arrived: dict[str, float] = {}
        self._computed_needs: frozenset = frozenset()
        self._wake: asyncio.TimerHandle | None = None
        self.out_of_step = 0  # rounds a side computed after the bound, without every answer (status)
        self._changed = asyncio.Event()
        self._started = time.monotonic()

    # --- standing needs (kept by the market's NeedRegistry) --------------------------------------------
    def add_need(self, kind: Any, quantity: Any, seconds: Any = 3600, max_price: Any = None) -> dict:
        """A standing need slot of this node: published with its offer and allocated in rounds until
        its window ends (or `remove_need`)."""
        return _need_view(self.needs.add_standing(kind, quantity, seconds, max_price))

    def remove_need(self, need_id: str) -> bool:
        return self.needs.remove_standing(need_id)

    # --- the network ------------------------------------------------------------------------------
    def network(self) -> dict[str, Commitment]:
        """participant -> allocator commitment, for every active participant of the book."""
        out: dict[str, Commitment] = {}
        for mc in self.market.book.commitments():
            p = mc.participant
            if not self.market.active(p):
                continue
            receipt = self.receipts.get(p)
            factor = self.damping if p == self.me else (receipt.damping_factor if receipt is not None else Decimal(1))
            out[p] = Commitment.model_construct(
                participant=p, capacity_slots=tuple(a.slot for a in mc.asks), need_slots=tuple(b.slot for b in mc.bids),
                recognition=dict(mc.recognition), damping_factor=factor,
                damping_history=self.history if p == self.me else (), stamp=mc.stamp, timestamp=mc.timestamp)
        return out

    def _active_states(self, network: dict[str, Commitment]) -> list[AllocationState]:
        """The states of the active providers, each cut to the capacity slots its commitment still offers (a
        provider that left cleanly offers nothing, whatever its last state said)."""
        out = []
        for p, r in self.states.items():
            if p not in network:
                continue
            offered = {c.id for c in network[p].capacity_slots}
            state = r.to_state()
            if any(a.capacity_slot not in offered for a in state.slot_allocations):
                state = state.model_copy(update={"slot_allocations": tuple(
                    a for a in state.slot_allocations if a.capacity_slot in offered)})
            out.append(state)
        return out

    # --- a round ----------------------------------------------------------------------------------
    def touch(self) -> None:
        """Something a round reads changed: compute again (debounced)."""
        self._dirty = True
        self._changed.set()

    @property
    def idle(self) -> bool:
        """No round is due: everything this node read has been computed on (a test waits for it before it
        compares allocations: a change the node has not computed on yet would make them look settled)."""
        return not self._dirty and self._wake is None

    def _bound(self) -> float:
        return max(STEP_WAIT * self.config.allocation_delay, STEP_WAIT_MIN)

    def _wait_until(self, since: float) -> bool:
        """True (the side waits) while `since` + the bound is ahead; a wake-up is set for then."""
        left = since + self._bound() - time.monotonic()
        if left <= 0:
            self.out_of_step += 1  # computes without every answer: this round may not be the simulator's
            return False
        if self._wake is not None:
            self._wake.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._wake = loop.call_later(left + 0.01, self._woken)
        return True

    def _woken(self) -> None:
        self._wake = None
        self.touch()

    def _provider_waits(self, mine: StateRecord | None, receipts: dict[str, Receipt]) -> bool:
        """The provider's side waits until every recipient its latest state names has answered it (the
        receipt's part of ours and request are the state's), at most the bound after it last computed: it then
        computes from receipts that all answer the same state of its own, as in the simulator's rounds."""
        if mine is None or self.previous is None or answered(self.me, mine.allocations, mine.wanted, receipts):
            return False
        return self._wait_until(self._computed_at)

    def _recipient_waits(self, network: dict[str, Commitment]) -> bool:
        """The recipient's side waits, once a provider's state arrived since its last receipt, until every
        provider that receipt names (or, while it names none, every active provider recognising it) has
        sent a state since, at most the bound after the first of them: its receipt then answers every provider
        of the round at once, as in the simulator's rounds (a provider whose state is unchanged sends it
        again, to say so)."""
        since = self._receipt_at
        new = [t for t in self._heard.values() if t > since]
        if not new:
            return False
        held = self.receipts.get(self.me)
        expected = set() if held is None else {p for e in held.needs.values() for p in (*e.by_provider, *e.wanting)}
        if not expected:  # the first round: every provider that may answer
            expected = {p for p, c in network.items() if p != self.me and c.capacity_slots
                        and c.recognition.get(self.me, 0) > 0}
        expected = {p for p in expected if p in network}
        if all(self._heard.get(p, 0.0) > since for p in expected):
            return False
        return self._wait_until(min(new))

    def _event(self) -> Stamp:
        """This node's next ITC event, after every stamp it received."""
        stamp = self.stamp
        for held in (self.states, self.receipts):
            for owner in held.owners():
                seen = held.seen(owner)
                if owner != self.me and seen is not None:
                    stamp = stamp.join(seen.peek())
        self.stamp = stamp.event()
        self.db.put(keys.MARKET_ALLOCATION, self.stamp.encode().hex().encode())
        return self.stamp

    def round(self, now: int | None = None) -> list:
        """One round (see the module docstring); returns the records it published."""
        now = now_ms() if now is None else now
        if self.stamp is None:
            return []  # no ITC id yet: nothing may be published (see `ensure_id`)
        self._dirty = False
        self.rounds += 1
        network = self.network()
        me = network.get(self.me)
        out: list = []
        receipts = {r: rec.to_receipt() for r, rec in self.receipts.items() if r in network and r != self.me}
        mine = self.states.get(self.me)
        if me is not None and me.capacity_slots and self._provider_waits(mine, receipts):
            pass  # a recipient has not answered our latest state yet
        elif me is not None and me.capacity_slots:
            self._computed_at = time.monotonic()
            read = {r: rec.signature for r, rec in self.receipts.items() if r != self.me}
            fresh = {r for r, sig in read.items() if self._read.get(r) != sig}
            self._read = read
            state = provider_round(me, network, receipts, previous=self.previous, now_ms=now)
            self.previous = state
            self._computed_needs = _followed_needs(me, network)
            content = (tuple((a.capacity_slot, a.recipient, a.need_slot, a.quantity, a.tier)
                             for a in state.slot_allocations), tuple(state.wanted), state.converged)
            nothing = not content[0] and not content[1]
            if (mine is None and not nothing) or (mine is not None and content != (mine.allocations, mine.wanted,
                                                                                  mine.converged)):
                record = sign_state(self.identity, state, stamp=self._event(), timestamp=now)
                self.states.receive(record)
                out.append(record)
            elif mine is not None:  # unchanged: the recipients whose new receipts it answers are told so (every
                # recipient it recognises: one whose need it computed on but gives nothing to learns it was answered)
                self.acks |= fresh & ({r for _, r, _, _, _ in mine.allocations} | {r for r, _ in mine.wanted}
                                      | {r for r, w in me.recognition.items() if w > 0})
        elif mine is not None and mine.allocations:
            # No capacity any more (full, or leaving): withdraw every allocation.
            empty = AllocationState.model_construct(provider=self.me, slot_allocations=(), wanted=(), converged=True,
                                                    convergence_history=())
            record = sign_state(self.identity, empty, stamp=self._event(), timestamp=now)
            self.states.receive(record)
            self.previous = None
            out.append(record)
        if me is not None and me.need_slots and self._recipient_waits(network):
            pass  # a provider of the round has not answered our last receipt yet
        elif me is not None and me.need_slots:
            self._receipt_at = time.monotonic()
            received, wanted = addressed_to(self.me, [s for s in self._active_states(network) if s.provider != self.me])
            damped, receipt = recipient_round(me, received, wanted, now, previous=self.my_receipt)
            self.history, self.damping = damped.damping_history, damped.damping_factor
            self.my_receipt = receipt
            held = self.receipts.get(self.me)
            if held is None or receipt.needs != held.to_receipt().needs \
                    or receipt.damping_factor != held.damping_factor:
                record = sign_receipt(self.identity, receipt, stamp=self._event(), timestamp=now)
                self.receipts.receive(record)
                out.append(record)
                listed = time.monotonic()
                self._listed_at = {nid: self._listed_at.get(nid, listed) for nid in receipt.needs}
        if self.previous is not None and not self.previous.converged and self._wake is None:
            self._dirty = True  # not converged: compute again after the delay, as the simulator does
        return out

    # --- receiving ----------------------------------------------------------------------------------
    def _refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    def receive(self, body: Any) -> dict[str, int]:
        """A peer's message {"states": [...], "receipts": [...]}: how many records changed what is held,
        and how many were refused.  Invalid records are skipped (counted in `refused`)."""
        if not isinstance(body, dict):
            raise InvalidArgument('send {"states": [...], "receipts": [...]}')
        states, receipts = body.get("states", []), body.get("receipts", [])
        if not isinstance(states, list) or not isinstance(receipts, list):
            raise InvalidArgument("states and receipts must be lists")
        if len(states) > MAX_RECORDS or len(receipts) > MAX_RECORDS:
            raise InvalidArgument(f"at most {MAX_RECORDS} states and {MAX_RECORDS} receipts per message")
        changed = refused = 0
        heard = False
        now = now_ms()
        for items, parse, held in ((states, parse_state, self.states), (receipts, parse_receipt, self.receipts)):
            for item in items:
                owner = item.get("provider" if held is self.states else "recipient") if isinstance(item, dict) else None
                if owner == self.me:
                    continue  # ours echoed back: ours is always the newest
                if self.peers is not None and not (isinstance(owner, str) and self.peers.known(owner)):
                    refused += 1
                    self._refuse("unknown peer")
                    continue  # not a peer's: not worth checking its signature
                try:
                    record = parse(item, now_ms=now)
                    if held is self.states:
                        mc = self.market.book.get(record.provider)
                        check_state(record, None if mc is None else Commitment.model_construct(
                            participant=mc.participant, capacity_slots=tuple(a.slot for a in mc.asks)))
                except XscError as err:
                    reason = _reason(err)
                    self._refuse(reason)  # counted (GET /v1/allocation: refused), never logged one by one
                    if reason == "bad signature":  # the message ends here: a forgery is a strike, not noise
                        raise ForgedRecord(f"an allocation record of {str(owner)[:16]} is not signed by it") from None
                    refused += 1
                    continue
                if held is self.states:
                    self._arrived[record.provider] = time.monotonic()  # (an answer to a need: `unanswered`)
                if held is self.states and (_names(record, self.me) or _names(held.get(record.provider), self.me)):
                    self._heard[record.provider] = time.monotonic()  # an answer to our receipt (`_recipient_waits`)
                    heard = True
                outcome = held.receive(record)
                if outcome.value == "stale" and held.get(record.owner) is not None \
                        and held.get(record.owner).signature == record.signature:
                    continue  # the state held, sent again: its provider's answer that nothing changed
                if outcome.value == "stale":
                    self._refuse("stale")
                    continue
                changed += 1
        if changed or heard:
            self.touch()
        return {"changed": changed, "refused": refused}

    def answer(self, body: Any) -> dict:
        """A peer's side of a push: take its records; with `ask`, answer with this node's own."""
        result = self.receive(body)
        if isinstance(body, dict) and body.get("ask") is True:
            own = self._own()
            self._count("records", own)
            return {**result, **own}
        return result

    def fork(self, peer: str, body: Any = None) -> dict:
        """Give a joining peer half of this node's ITC id (stored before it is answered): a known peer only
        (UnknownPeer), within its quota of forks (QuotaExceeded).

        A returning peer sends the id it had (`{"retire": HEX}`): it is joined into this node's own first
        (ITC's retire: the id space stays whole) when it is disjoint from ours and within the id of the
        newest record we hold of that peer (if any); the half given is after everything we hold of it."""
        if self.stamp is None:
            raise InvalidArgument("this node has no ITC id yet to fork", hint="ask another peer")
        self._check_peer(peer)
        if self.forks is not None:
            self.forks.check(peer, time.monotonic(), "ITC forks")
        stamp, retired = self.stamp, False
        old = _retired_stamp(body)
        if old is not None and not old.is_anonymous and _disjoint(old.id, stamp.id):
            latest = [s for s in (self.states.seen(peer), self.receipts.seen(peer))
                      if s is not None and not s.is_anonymous]  # (a merge of concurrent copies keeps no id)
            if all(_within(old.id, s.id) for s in latest):
                stamp, retired = stamp.join(old), True
        for held in (self.states, self.receipts):
            seen = held.seen(peer)
            if seen is not None:
                stamp = stamp.join(seen.peek())  # its next records must be newer than all we hold of it
        try:
            keep, give = stamp.fork()
        except ItcError as err:
            raise InvalidArgument(f"cannot fork this node's ITC id: {err}", hint="ask another peer") from None
        self.stamp = keep
        self.db.put(keys.MARKET_ALLOCATION, keep.encode().hex().encode(), sync=True)
        log.info("forked half of the allocation ITC id for %s%s", peer[:12], " (its old id given back)" if retired else "")
        return {"stamp": give.encode().hex(), "retired": retired}

    # --- subscriptions and digests ------------------------------------------------------------------
    def check_sender(self, sender: str) -> None:
        """Refuse (UnknownPeer) a message from a node this one does not know, before any of it is read."""
        self._check_peer(sender)

    def _check_peer(self, sender: str) -> None:
        if self.peers is not None and not self.peers.known(sender):
            self._refuse("unknown peer")
            raise UnknownPeer(f"{sender[:16]} is not a known peer of this node",
                              hint="a node joins first (xsc peers add); only peers subscribe or exchange digests")

    def subscribe(self, sender: str, body: Any) -> dict:
        """A peer's subscriptions to this node's records: {"subscriptions": [signed Subscription, ...]}.  In this
        order: at most MAX_SUBSCRIPTIONS (else 400); the sender a known peer (else 403, before any signature is
        checked); each one the sender's own and addressed to this node; then parsed and its signature checked;
        then kept (at most `Subscribers.max_total` subscribers).  Answers with this node's current records of
        the topics it took, so a new subscriber starts full."""
        if not isinstance(body, dict) or not isinstance(body.get("subscriptions"), list):
            raise InvalidArgument('send {"subscriptions": [...]}')
        items = body["subscriptions"]
        if len(items) > MAX_SUBSCRIPTIONS:
            self._refuse("oversized")
            raise InvalidArgument(f"{len(items)} subscriptions in one message (at most {MAX_SUBSCRIPTIONS})")
        self._check_peer(sender)
        now = now_ms()
        taken: set[str] = set()
        before = self.subscribers.topics(sender, now)
        if (not before or body.get("fresh") is True) and sender in self.subscribed:
            # A subscriber new here or that says it just started (so it lost our subscription): subscribe again.
            self.subscribed[sender] = (frozenset(), 0.0)
            self._changed.set()
        for item in items:
            if not isinstance(item, dict) or item.get("subscriber") != sender or item.get("publisher") != self.me:
                self._refuse("not the sender's")
                raise InvalidArgument("a subscription names its sender as subscriber and this node as publisher")
            try:
                sub = parse_subscription(item, now_ms=now)
            except XscError as err:
                self._refuse(_reason(err))
                raise
            if not self.subscribers.add(sub, now):
                self._refuse("too many subscribers")
                raise InvalidArgument(f"this node keeps at most {self.subscribers.max_total} subscribers",
                                      hint="try again later")
            taken |= set(sub.topics)
        taken -= before  # a renewal is answered with nothing more: the pushes kept it current
        out: dict[str, Any] = {"accepted": len(items)}
        state, receipt = self.states.get(self.me), self.receipts.get(self.me)
        if "state" in taken and state is not None:
            out["states"] = [state.to_json()]
        if "receipt" in taken and receipt is not None:
            out["receipts"] = [receipt.to_json()]
        mc = self.market.book.get(self.me)
        kinds = {b.slot.kind for b in mc.bids} if mc is not None else set()
        if mc is not None and ("commitment" in taken or any(f"needs:{k}" in taken for k in kinds)):
            out["commitments"] = [mc.to_json()]
        self._count("subscriptions", out)
        return out

    def digest_answer(self, sender: str, body: Any) -> dict:
        """A peer's digest {"states": {publisher: hash}, "receipts": {...}}: the records held here that it lacks
        or holds another of.  Bounded before anything is read (MAX_DIGEST per kind), a stranger refused (403)."""
        if not isinstance(body, dict):
            raise InvalidArgument('send {"states": {publisher: hash}, "receipts": {publisher: hash}}')
        try:
            states, receipts = parse_digest(body.get("states"), "states"), parse_digest(body.get("receipts"), "receipts")
        except XscError:
            self._refuse("oversized")
            raise
        self._check_peer(sender)
        out = {"states": [r.to_json() for r in differing(states, dict(self.states.items()))],
               "receipts": [r.to_json() for r in differing(receipts, dict(self.receipts.items()))]}
        self._count("digests", out)
        return out

    def interests(self) -> dict[str, frozenset[str]]:
        """peer -> the topics this node subscribes to at it (`MarketService.interests`)."""
        return self.market.interests()

    def _count(self, what: str, message: dict) -> int:
        size = len(dumps(message))
        self.bytes_sent += size
        self.bytes_by[what] += size
        return size

    async def maintain_subscriptions(self) -> None:
        """Subscribe where `interests` changed, renew what is due (every third of SUBSCRIPTION_TTL), and say
        so where nothing is wanted any more (an empty subscription)."""
        if self.peers is None:
            return
        want = self.interests()
        now = time.monotonic()
        calls = []
        for d in self.peers.peers():
            topics = want.get(d.id, frozenset())
            held = self.subscribed.get(d.id)
            if held is None and not topics:
                continue
            if held is not None and held[0] == topics and now - held[1] < SUBSCRIPTION_TTL / 3:
                continue
            if not self.peers.up(d.id) or self._retry_at.get(d.id, 0.0) > now:
                continue
            if topics:
                self.subscribed[d.id] = (topics, now)
            else:
                self.subscribed.pop(d.id, None)
            calls.append((d, topics))
        # signed as they go, a few at a time: a directory of 1,000 peers recognising this node asked for 1,000
        await at_most(SUBSCRIPTIONS_AT_ONCE, (self._send_subscription(d, topics) for d, topics in calls))

    async def _send_subscription(self, d, topics: frozenset[str]) -> None:
        sub = sign_subscription(self.identity, d.id, topics, now_ms() + int(SUBSCRIPTION_TTL * 1000))
        message: dict[str, Any] = {"subscriptions": [sub.to_json()]}
        if d.id not in self._greeted:
            message["fresh"] = True  # our first since we started: it re-subscribes here (we hold none of its)
        self._count("subscriptions", message)
        try:
            response = await self.peers.request(d.url, "POST", SUBSCRIBE_PATH, json=message, to=d.id)
            answer = response.json()
        except PeerError as err:
            self.subscribed.pop(d.id, None)  # asked again after SUBSCRIBE_RETRY (a slow peer must not hold up rounds)
            self._retry_at[d.id] = time.monotonic() + SUBSCRIBE_RETRY
            log.debug("subscription at %s failed: %s", d.id[:12], err)
            return
        except Exception:  # noqa: BLE001 -- one peer's bad answer must not end the pass
            self.subscribed.pop(d.id, None)
            self._retry_at[d.id] = time.monotonic() + SUBSCRIBE_RETRY
            log.exception("subscription at %s failed", d.id[:12])
            return
        self._retry_at.pop(d.id, None)
        self._greeted.add(d.id)
        if isinstance(answer, dict):
            if isinstance(answer.get("commitments"), list):
                self.market.receive(answer["commitments"][:1])
            self.receive({"states": answer.get("states", [])[:1] if isinstance(answer.get("states"), list) else [],
                          "receipts": answer.get("receipts", [])[:1]
                          if isinstance(answer.get("receipts"), list) else []})

    def _digest(self) -> dict[str, dict[str, str]]:
        """What this node holds of the publishers it wants (its interests, and whatever it holds): a digest."""
        want = self.interests()
        out: dict[str, dict[str, str]] = {}
        for kind, held in (("state", self.states), ("receipt", self.receipts)):
            owners = {p for p, t in want.items() if kind in t} | {p for p in held.owners() if p != self.me}
            out[kind + "s"] = {p: short_hash(held.get(p).signature) if held.get(p) is not None else ""
                               for p in sorted(owners)}
        return out

    async def pull(self, d) -> int:
        """Anti-entropy with one peer: send it our digest, take the records it answers; returns how many
        changed what is held."""
        message = self._digest()
        if not message["states"] and not message["receipts"]:
            return 0
        self._count("digests", message)
        try:
            response = await self.peers.request(d.url, "POST", DIGEST_PATH, json=message, to=d.id)
            answer = response.json()
        except PeerError as err:
            log.debug("allocation digest exchange with %s failed: %s", d.id[:12], err)
            return 0
        if not isinstance(answer, dict):
            return 0
        return self.receive({"states": answer.get("states", []), "receipts": answer.get("receipts", [])})["changed"]

    # --- sending ------------------------------------------------------------------------------------
    def _own(self) -> dict:
        state, receipt = self.states.get(self.me), self.receipts.get(self.me)
        return {"states": [state.to_json()] if state else [], "receipts": [receipt.to_json()] if receipt else []}

    def _targets(self) -> list:
        if self.peers is None:
            return []
        return self.peers.up_peers()

    def _audience(self, record) -> set[str]:
        """Who gets `record`: the parties it names (now, and in the record before it) and its subscribers."""
        if isinstance(record, StateRecord):
            kind = "state"
            named = {r for _, r, _, _, _ in record.allocations} | {r for r, _ in record.wanted}
        else:
            kind = "receipt"
            named = {p for e in record.needs.values() for p in (*e.by_provider, *e.wanting)}
        out = named | self._named[kind] | self.subscribers.of(kind, now_ms())
        self._named[kind] = named
        out.discard(self.me)
        return out

    async def push(self, records: list, *, everyone_asks: bool = False, only: list | None = None) -> int:
        """Send each of `records` to its audience (`_audience`) among the peers that are up (or to `only`, all
        of them); returns the bytes sent."""
        targets = only if only is not None else self._targets()
        audiences = {id(r): self._audience(r) for r in records} if only is None else None
        sent = 0
        calls = []
        for d in targets:
            mine = [r for r in records if audiences is None or d.id in audiences[id(r)]]
            if not mine:
                continue
            message: dict[str, Any] = {"states": [r.to_json() for r in mine if isinstance(r, StateRecord)],
                                       "receipts": [r.to_json() for r in mine if isinstance(r, ReceiptRecord)]}
            if everyone_asks:
                message["ask"] = True
            sent += self._count("records", message)
            calls.append(self._send(d, message))
        await asyncio.gather(*calls)
        return sent

    async def _send(self, d, message: dict) -> None:
        try:
            response = await self.peers.request(d.url, "POST", PEER_PATH, json=message, to=d.id)
            answer = response.json()
            if isinstance(answer, dict) and ("states" in answer or "receipts" in answer):
                self.receive({"states": answer.get("states", []), "receipts": answer.get("receipts", [])})
        except PeerError as err:
            log.debug("allocation push to %s failed: %s", d.id[:12], err)
        except Exception:  # noqa: BLE001 -- one peer's bad answer must not end the round
            log.exception("allocation push to %s failed", d.id[:12])

    async def ensure_id(self) -> bool:
        """Fork an ITC id from a peer (or seed one when no peer was known for FORK_WAIT s); a restarted node
        forks a fresh one and gives its stored id back (or keeps it when no peer answered for FORK_WAIT s)."""
        if self.stamp is not None:
            return True
        old = self.retiring
        ask = {} if old is None else {"retire": old.encode().hex()}
        for d in self._targets():
            try:
                response = await self.peers.request(d.url, "POST", FORK_PATH, json=ask, to=d.id)
                stamp = Stamp.decode(bytes.fromhex(response.json()["stamp"]))
            except (PeerError, XscError, ValueError, KeyError, TypeError) as err:
                log.debug("no ITC fork from %s: %s", d.id[:12], err)
                continue
            if stamp.is_anonymous:
                continue
            if old is not None:
                stamp = stamp.join(old.peek())  # after every event of its own before the restart
                self.rejoined, self.retiring = True, None
            self.stamp, self.forked_from = stamp, d.id
            self.db.put(keys.MARKET_ALLOCATION, stamp.encode().hex().encode(), sync=True)
            return True
        if old is not None and (time.monotonic() - self._started >= FORK_WAIT or not self._targets()):
            self.stamp, self.retiring = old, None  # no peer to rejoin through: the stored id is still ours alone
            return True
        # Nobody gave one: the first node of a network (no peer), or every peer is as new as this one
        # (then the smallest node id seeds and the others fork from it).
        targets = self._targets()
        alone = not targets and not self.joins
        smallest = bool(targets) and self.me < min(d.id for d in targets)
        if time.monotonic() - self._started >= FORK_WAIT and (alone or smallest):
            self.stamp = Stamp.seed()
            self.db.put(keys.MARKET_ALLOCATION, self.stamp.encode().hex().encode(), sync=True)
            return True
        return False

    async def _run(self) -> None:
        interval = max(self.gossip_interval, self.config.freshness / 3)  # anti-entropy: at most as often as offers
        next_gossip = time.monotonic() + interval * random.uniform(0.8, 1.2)
        seen_version = -1
        while True:
            await woken(self._changed, 0.5)
            self._changed.clear()
            try:
                await self.maintain_subscriptions()  # whatever the ITC id: the market's commitments travel by them
                if not await self.ensure_id():
                    continue
                if self.market.version != seen_version:
                    seen_version = self.market.version
                    self._dirty = True
                self.needs.expire()
                if self._dirty:
                    await asyncio.sleep(self.config.allocation_delay)  # debounce: gather what else changes
                    seen_version = self.market.version
                    records = self.round()
                    acks, self.acks = self.acks, set()
                    mine = self.states.get(self.me)
                    if acks and mine is not None and mine not in records:
                        await self.push([mine], only=[d for d in self._targets() if d.id in acks])
                    if records:
                        sent = await self.push(records)
                        self.traffic.append((self.rounds, sent))
                        del self.traffic[:-TRAFFIC_ROUNDS]
                    if self._dirty:
                        self._changed.set()
                if time.monotonic() >= next_gossip:
                    next_gossip = time.monotonic() + interval * random.uniform(0.8, 1.2)
                    want = self.interests()
                    targets = [d for d in self._targets() if d.id in want]
                    if targets and (len(self.states) or len(self.receipts)):  # an idle network says nothing
                        await self.pull(random.choice(targets))
            except Exception:  # a round must never end the allocation
                log.exception("allocation round failed")

    def forget(self, participant: str) -> None:
        """A node was removed: its records are dropped."""
        self.subscribers.forget(participant)
        self.subscribed.pop(participant, None)
        self._retry_at.pop(participant, None)
        self._heard.pop(participant, None)
        self._arrived.pop(participant, None)
        self._read.pop(participant, None)
        if self.states.forget(participant) | self.receipts.forget(participant):
            self.touch()

    def start(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        """The allocation's rounds, run by the node's supervisor (xsc.tasks.Supervisor)."""
        return {"allocation": self._run}

    def close(self) -> None:
        pass

    # --- serving --------------------------------------------------------------------------------------
    def allocated(self, kind: str) -> dict[str, int]:
        """provider -> units its current state gives this node's need slots of `kind` (active providers)."""
        ids = self.needs.ids(kind)
        out: dict[str, int] = {}
        for p, record in self.states.items():
            if p == self.me or not self.market.active(p):
                continue
            mc = self.market.book.get(p)
            offered = {a.slot.id for a in mc.asks} if mc is not None else set()
            units = sum(q for c, r, n, q, _ in record.allocations if r == self.me and n in ids and c in offered)
            if units:
                out[p] = units
        return out

    # --- needs reached and answered ------------------------------------------------------------------
    def needs_moved(self, me: Commitment, network: dict[str, Commitment]) -> bool:
        """Whether the needs this node's provider side follows (those of the participants it recognises) changed
        since it last computed: until its next round it has not computed on them, so its state is not converged."""
        return _followed_needs(me, network) != self._computed_needs

    def unanswered(self, network: dict[str, Commitment]) -> list[str]:
        """This node's need slots that a provider which should see them has not answered yet: an active provider
        recognising this node with a capacity slot `compatible` with the need slot, whose latest state neither
        names it (gives it units or asks for it) nor arrived, converged, after our first receipt listing it.
        Until every such provider has answered, the network has not converged for this node, whatever the
        providers' flags say (they may not have the need yet: it reaches them through their subscriptions)."""
        me = network.get(self.me)
        if me is None or not me.need_slots:
            return []
        providers = [c for p, c in network.items() if p != self.me and c.capacity_slots
                     and c.recognition.get(self.me, 0) > 0]
        out = []
        for n in me.need_slots:
            listed = self._listed_at.get(n.id)
            for c in providers:
                if not any(compatible(cap, n) for cap in c.capacity_slots):
                    continue
                record = self.states.get(c.participant)
                if record is not None and (any(r == self.me and nid == n.id for _, r, nid, _, _ in record.allocations)
                                           or (self.me, n.id) in record.wanted):
                    continue  # it gives the need slot units or asks for it
                if record is not None and record.converged and listed is not None \
                        and self._arrived.get(c.participant, 0.0) > listed:
                    continue  # its state since our receipt listed the need: it computed on it, and gives nothing
                out.append(n.id)
                break
        return sorted(out)

    # --- views ------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The stamp, the peers in causal order, and whether the allocation converged."""
        network = self.network()
        providers = {p: r for p, r in self.states.items() if p in network and network[p].capacity_slots}
        converged = [p for p, r in providers.items() if r.converged]
        share = len(converged) / len(providers) if providers else 1.0
        mine = self.states.get(self.me)
        me = network.get(self.me)
        moved = me is not None and self.previous is not None and self.needs_moved(me, network)
        provider_converged = None if mine is None else mine.converged and not moved
        unanswered = self.unanswered(network)
        delta = None
        if self.previous is not None and self.previous.convergence_history:
            delta = str(self.previous.convergence_history[-1].delta)
        elif mine is not None:
            delta = str(mine.delta)
        peers = []
        for p in _causal_order({p: self._latest_stamp(p) for p in set(self.states.owners()) | set(self.receipts.owners())
                                if p != self.me}):
            s = self.states.get(p)
            peers.append({"id": p, "stamp": self._latest_stamp(p).encode().hex(), "active": p in network,
                          "converged": None if s is None else s.converged,
                          "delta": None if s is None else str(s.delta)})
        rounds_sent = [b for _, b in self.traffic]
        allocated_total = sum(q for r in providers.values() for _, _, _, q, _ in r.allocations)
        received = self.receipts.get(self.me)
        return {
            "stamp": None if self.stamp is None else self.stamp.encode().hex(),
            "forked_from": self.forked_from,
            "rejoined": self.rejoined,
            "rounds": self.rounds,
            "converged": provider_converged is not False and share >= float(NETWORK_QUORUM) and not unanswered
            and not moved,
            "provider_converged": provider_converged,
            "unanswered": unanswered,
            "delta": delta,
            "converged_share": round(share, 4),
            "providers": len(providers),
            "peers": peers,
            "allocated": allocated_total,
            "mine": None if mine is None else [list(a) for a in mine.allocations],
            "received": None if received is None else {
                nid: {"quantity": e.quantity, "total": e.total, "by_provider": e.by_provider}
                for nid, e in received.needs.items()},
            "needs": [_need_view(b) for b in self.needs.standing()],
            "refused": dict(self.refused),
            "out_of_step": self.out_of_step,
            "bytes_sent": self.bytes_sent,
            "bytes_by": dict(self.bytes_by),
            "subscribers": self.subscribers.view(now_ms()),
            "subscribed": {p: sorted(t) for p, (t, _) in sorted(self.subscribed.items())},
            "bytes_per_round": round(sum(rounds_sent) / len(rounds_sent), 1) if rounds_sent else None,
        }

    def _latest_stamp(self, p: str) -> Stamp:
        stamps = [s for s in (self.states.seen(p), self.receipts.seen(p)) if s is not None]
        out = stamps[0].peek()
        for s in stamps[1:]:
            out = out.join(s.peek())
        return out


def _followed_needs(me: Commitment, network: dict[str, Commitment]) -> frozenset:
    """The need slots a provider's round reads: those of the participants it recognises, as (owner, id, kind,
    quantity, start, end)."""
    out = set()
    for r, w in me.recognition.items():
        other = network.get(r)
        if w > 0 and other is not None and r != me.participant:
            out.update((r, n.id, n.kind, n.quantity, n.start, n.end) for n in other.need_slots)
    return frozenset(out)


def _names(record: StateRecord | None, recipient: str) -> bool:
    """Whether a provider's state gives `recipient` units or asks it for more."""
    return record is not None and (any(r == recipient for _, r, _, _, _ in record.allocations)
                                   or any(r == recipient for r, _ in record.wanted))


def _need_view(bid) -> dict:
    s = bid.slot
    return {"id": s.id, "kind": s.kind, "quantity": s.quantity, "start": s.start, "end": s.end, "max_price": bid.price}


def _retired_stamp(body: Any) -> Stamp | None:
    """The id a returning peer gives back with its fork request ({"retire": HEX}), or None."""
    text = body.get("retire") if isinstance(body, dict) else None
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > MAX_STAMP_HEX:
        raise InvalidArgument(f"retire must be the hex of an ITC stamp of at most {MAX_STAMP_HEX} digits")
    try:
        return Stamp.decode(bytes.fromhex(text))
    except ValueError:
        raise InvalidArgument("retire must be the hex of an ITC stamp") from None


def _disjoint(a: Any, b: Any) -> bool:
    """ITC ids `a` and `b` own no part of the interval in common."""
    if a == 0 or b == 0:
        return True
    if a == 1 or b == 1:
        return False
    return _disjoint(a[0], b[0]) and _disjoint(a[1], b[1])


def _within(a: Any, b: Any) -> bool:
    """Every part of the interval id `a` owns, id `b` owns too."""
    if a == 0 or b == 1:
        return True
    if a == 1 or b == 0:
        return False  # a normal id other than 1 never owns the whole interval
    return _within(a[0], b[0]) and _within(a[1], b[1])


def _reason(err: XscError) -> str:
    text = str(err)
    if "not signed" in text:
        return "bad signature"
    if "future" in text:
        return "future-dated"
    if "gives" in text or "allocates to itself" in text or "no commitment" in text:
        return "beyond its offer"
    return "invalid"


def _causal_order(stamps: dict[str, Stamp]) -> list[str]:
    """Participants ordered by their stamps: one whose stamp is <= another's comes first (concurrent
    ones by how many stamps they follow, then by id)."""
    ids = sorted(stamps)
    before = {p: sum(1 for q in ids if q != p and stamps[q].leq(stamps[p]) and not stamps[p].leq(stamps[q]))
              for p in ids}
    return sorted(ids, key=lambda p: (before[p], p))
