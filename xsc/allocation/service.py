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
- **Rounds in step** (`self.step`, xsc.allocation.step), as the simulator's: the provider's side waits until
  every recipient its latest state names has answered it, the recipient's side until every provider of the
  round is done with its last receipt, each at most a bound; a provider whose state did not change for a new
  receipt signs it again (`Step.acks`).
- **Converged** (`status`): the seed's rule, and no node says so before its needs are answered: a provider
  has computed on the needs it follows (`Step.needs_moved`), a recipient's need slots have each been answered by
  every provider that should see them (`Step.unanswered`; docs/allocation.md).
- **Receiving** (`receive`): only records whose publisher is a known peer, parsed with every bound
  of `xsc.allocation.core.records`, signature checked, states checked against the publisher's offer,
  future-dated ones refused; then stale ignored, newer replace, concurrent merged (`Held`).
- **Gossip** (`self.gossip`, xsc.allocation.gossip): subscriptions at the peers whose records the rounds read,
  pushes of what a round published, and every third of `market.freshness` (at least the gossip interval) an
  anti-entropy digest with one random peer we subscribe at.  A provider with nothing to allocate publishes
  nothing, so a network without needs sends no allocation records.
- **Causality** (`self.ids`, xsc.allocation.itc_ids): every record is an event of this node's ITC id, forked from
  a peer (or seeded by the first node), stored, and given back when a restarted node rejoins.

Serving: `allocated(kind)` says, per provider, the units the active providers' states give this
node's need slots of `kind`; `MarketService.deal` places needs there first (docs/allocation.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from decimal import Decimal
from typing import Any

from ..config import MarketSection
from ..db import Database
from ..errors import ForgedRecord, InvalidArgument, XscError
from ..identity import Identity
from ..itc import Stamp
from ..tasks import Quota, now_ms, woken
from .core.convergence import NETWORK_QUORUM
from .core.models import AllocationState, Commitment, DampingSample
from .core.records import (
    Held,
    check_state,
    parse_receipt,
    parse_state,
    refusal_reason,
    sign_receipt,
    sign_state,
)
from .core.rounds import Receipt, addressed_to, provider_round, recipient_round
from .core.subscriptions import Subscribers
from .gossip import AllocationGossip
from .itc_ids import ItcIds
from .step import Step

log = logging.getLogger(__name__)

MAX_RECORDS = 1_001  # states and receipts per message each: one per peer the directory can hold, and this node's
TRAFFIC_ROUNDS = 256  # rounds whose bytes are kept for the status
PASS = 0.5  # seconds between the allocation loop's passes while anything is to be allocated ...
# ... and at most while nothing is (`quiet`): a round then comes due only by what wakes the loop, and the subscriptions
# a pass renews or sends where their topics changed wait this long at most (a renewal is due every 20 s of 60).
QUIET_PASS = 2.0
# A state is a provider's word: a peer may name this node in allocations of capacity it never delivers, and each
# unit it claims is one that honest providers stop giving (the receipt says the need is covered).  A provider
# that failed work placed on it is not counted as serving this node's needs for this long.
DEFAULTED_SECONDS = 3600.0


class AllocationService:
    def __init__(self, *, config: MarketSection, identity: Identity, db: Database, market: Any, needs: Any,
                 subscribers: Subscribers, peers: Any, gossip_interval: float, joins: bool = False,
                 forks: Quota | None = None) -> None:
        self.config = config
        self.identity = identity
        self.me = identity.id
        self.market = market  # xsc.market.service.MarketService: the book, freshness, what this node subscribes to
        market.on_change.append(self.touch)  # a round reads the book
        self.needs = needs  # xsc.market.needs.NeedRegistry: this node's need slots (standing ones are allocated)
        needs.watch(self.touch, standing=True)
        self.peers = peers  # a PeerView (None: a node on its own)
        self.gossip_interval = gossip_interval
        self.states = Held()  # provider -> its newest StateRecord (this node's too)
        self.receipts = Held()  # recipient -> its newest ReceiptRecord (this node's too)
        self.previous: AllocationState | None = None  # this node's last state, for convergence
        self.my_receipt: Receipt | None = None
        self.history: tuple[DampingSample, ...] = ()
        self.damping = Decimal(1)
        self.rounds = 0
        self.refused: dict[str, int] = {}  # why records were refused -> how many
        self.traffic: list[tuple[int, int]] = []  # (round, bytes this node sent for it)
        self._changed = asyncio.Event()
        self.ids = ItcIds(me=self.me, db=db, peers=peers, held=(self.states, self.receipts), targets=self._targets,
                          joins=joins, forks=forks, fork_wait=config.allocation_fork_wait)
        self.gossip = AllocationGossip(identity=identity, peers=peers, market=market, subscribers=subscribers,
                                       states=self.states, receipts=self.receipts, receive=self.receive,
                                       refuse=self._refuse, wake=self._changed.set)
        self._dirty = True
        self.step = Step(me=self.me, config=config, states=self.states, receipts=self.receipts, touch=self.touch)
        self._defaulted = _Defaulted()  # providers not counted as serving this node's needs (`defaulted`)

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
        return not self._dirty and not self.step.waiting

    def round(self, now: int | None = None) -> list:
        """One round (see the module docstring); returns the records it published."""
        now = now_ms() if now is None else now
        if self.ids.stamp is None:
            return []  # no ITC id yet: nothing may be published (see `ensure_id`)
        self._dirty = False
        self.step.round_begins()
        self.rounds += 1
        network = self.network()
        me = network.get(self.me)
        out: list = []
        receipts = {r: rec.to_receipt() for r, rec in self.receipts.items() if r in network and r != self.me}
        mine = self.states.get(self.me)
        if me is not None and me.capacity_slots and self.step.provider_waits(mine, self.previous, receipts):
            pass  # a recipient has not answered our latest state yet
        elif me is not None and me.capacity_slots:
            fresh = self.step.provider_computes(me, network)
            state = provider_round(me, network, receipts, previous=self.previous, now_ms=now)
            self.previous = state
            content = (tuple((a.capacity_slot, a.recipient, a.need_slot, a.quantity, a.tier)
                             for a in state.slot_allocations), tuple(state.wanted), state.converged)
            nothing = not content[0] and not content[1]
            if (mine is None and not nothing) or (mine is not None and content != (mine.allocations, mine.wanted,
                                                                                  mine.converged)):
                record = sign_state(self.identity, state, stamp=self.ids.event(), timestamp=now)
                self.states.receive(record)
                out.append(record)
            elif mine is not None:  # unchanged: the recipients whose new receipts it answers are told so (every
                # recipient it recognises: one whose need it computed on but gives nothing to learns it was answered)
                acks = fresh & ({r for _, r, _, _, _ in mine.allocations} | {r for r, _ in mine.wanted}
                                | {r for r, w in me.recognition.items() if w > 0})
                if acks:  # signed again: its stamp, after the receipts it read, says which it answers
                    self.states.receive(sign_state(self.identity, state, stamp=self.ids.event(), timestamp=now))
                    self.step.acks |= acks
        elif mine is not None and mine.allocations:
            # No capacity any more (full, or leaving): withdraw every allocation.
            empty = AllocationState.model_construct(provider=self.me, slot_allocations=(), wanted=(), converged=True,
                                                    convergence_history=())
            record = sign_state(self.identity, empty, stamp=self.ids.event(), timestamp=now)
            self.states.receive(record)
            self.previous = None
            out.append(record)
        if me is not None and me.need_slots and self.step.recipient_waits(network):
            pass  # a provider of the round has not answered our last receipt yet
        elif me is not None and me.need_slots:
            self.step.recipient_computes()
            received, wanted = addressed_to(self.me, [s for s in self._active_states(network)
                                                      if s.provider != self.me and s.provider not in self._defaulted])
            damped, receipt = recipient_round(me, received, wanted, now, previous=self.my_receipt)
            self.history, self.damping = damped.damping_history, damped.damping_factor
            self.my_receipt = receipt
            held = self.receipts.get(self.me)
            if held is None or receipt.needs != held.to_receipt().needs \
                    or receipt.damping_factor != held.damping_factor:
                record = sign_receipt(self.identity, receipt, stamp=self.ids.event(), timestamp=now)
                self.receipts.receive(record)
                out.append(record)
                self.step.listed(receipt.needs)
        if self.previous is not None and not self.previous.converged and not self.step.waiting:
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
                    reason = refusal_reason(err)
                    self._refuse(reason)  # counted (GET /v1/allocation: refused), never logged one by one
                    if reason == "bad signature":  # the message ends here: a forgery is a strike, not noise
                        raise ForgedRecord(f"an allocation record of {owner} is not signed by it") from None
                    refused += 1
                    continue
                if held is self.states and self.step.arrived(record):
                    heard = True  # an answer to our receipt
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
            own = self.gossip.own()
            self.gossip.count("records", own)
            return {**result, **own}
        return result

    def fork(self, peer: str, body: Any = None) -> dict:
        """Give a known peer (else UnknownPeer) half of this node's ITC id (`ItcIds.fork`)."""
        self.gossip.check_peer(peer)
        return self.ids.fork(peer, body)

    # --- subscriptions and digests ------------------------------------------------------------------
    def check_sender(self, sender: str) -> None:
        """Refuse (UnknownPeer) a message from a node this one does not know, before any of it is read."""
        self.gossip.check_peer(sender)

    def subscribe(self, sender: str, body: Any) -> dict:
        """A peer's subscriptions to this node's records (`AllocationGossip.subscribe`)."""
        return self.gossip.subscribe(sender, body)

    def digest_answer(self, sender: str, body: Any) -> dict:
        """The records held here that a peer's digest lacks (`AllocationGossip.digest_answer`)."""
        return self.gossip.digest_answer(sender, body)

    @property
    def stamp(self) -> Stamp | None:
        """This node's ITC stamp (None until it has an id: it publishes nothing before)."""
        return self.ids.stamp

    async def ensure_id(self) -> bool:
        """Whether this node has an ITC id, forking one from a peer if not (`ItcIds.ensure`)."""
        return await self.ids.ensure()

    async def _run(self) -> None:
        interval = max(self.gossip_interval, self.config.freshness / 3)  # anti-entropy: at most as often as offers
        next_gossip = time.monotonic() + interval * random.uniform(0.8, 1.2)
        seen_version = -1
        while True:
            await woken(self._changed, _pause(self, next_gossip))
            self._changed.clear()
            try:
                await self.gossip.maintain_subscriptions()  # whatever the ITC id: the market's commitments travel by them
                if not await self.ids.ensure():
                    continue
                if self.market.version != seen_version:
                    seen_version = self.market.version
                    self._dirty = True
                self.needs.expire()
                if self._dirty:
                    await asyncio.sleep(self.config.allocation_delay)  # debounce: gather what else changes
                    seen_version = self.market.version
                    records = self.round()
                    acks, self.step.acks = self.step.acks, set()
                    mine = self.states.get(self.me)
                    if acks and mine is not None and mine not in records:
                        await self.gossip.push([mine], only=[d for d in self._targets() if d.id in acks])
                    if records:
                        sent = await self.gossip.push(records)
                        self.traffic.append((self.rounds, sent))
                        del self.traffic[:-TRAFFIC_ROUNDS]
                    if self._dirty:
                        self._changed.set()
                if time.monotonic() >= next_gossip:
                    next_gossip = time.monotonic() + interval * random.uniform(0.8, 1.2)
                    want = self.market.interests()
                    targets = [d for d in self._targets() if d.id in want]
                    if targets and (len(self.states) or len(self.receipts)):  # an idle network says nothing
                        await self.gossip.pull(random.choice(targets))
            except Exception:  # a round must never end the allocation
                log.exception("allocation round failed")

    def forget(self, participant: str) -> None:
        """A node was removed: its records are dropped."""
        self.gossip.forget(participant)
        self.step.forget(participant)
        self._defaulted.pop(participant)
        if self.states.forget(participant) | self.receipts.forget(participant):
            self.touch()

    def start(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        """The allocation's rounds and its forks asked again (`ItcIds.settle`), run by the node's supervisor."""
        return {"allocation": self._run, "allocation-forks": self.ids.settling()}

    def close(self) -> None:
        pass

    def _targets(self) -> list:
        return [] if self.peers is None else self.peers.up_peers()

    # --- serving --------------------------------------------------------------------------------------
    def allocated(self, kind: str) -> dict[str, int]:
        """provider -> units its current state gives this node's need slots of `kind` (active providers)."""
        ids: set[str] | None = None  # read once a provider's state is there to read (a put asks with none)
        out: dict[str, int] = {}
        for p, record in self.states.items():
            if p == self.me or not self.market.active(p) or p in self._defaulted:
                continue
            if ids is None:
                ids = self.needs.ids(kind)
            mc = self.market.book.get(p)
            offered = {a.slot.id for a in mc.asks} if mc is not None else set()
            units = sum(q for c, r, n, q, _ in record.allocations if r == self.me and n in ids and c in offered)
            if units:
                out[p] = units
        return out

    def defaulted(self, provider: str) -> None:
        """`provider` failed work placed on it (down, or refusing a share): for DEFAULTED_SECONDS what its state
        gives this node is neither served from nor counted in this node's receipts, so the providers that do
        deliver see the need uncovered and give it again."""
        if provider != self.me and (self.peers is None or self.peers.known(provider)):
            self._defaulted.add(provider)
            self.touch()

    # --- views ------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The stamp, the peers in causal order, and whether the allocation converged."""
        network = self.network()
        providers = {p: r for p, r in self.states.items() if p in network and network[p].capacity_slots}
        converged = [p for p, r in providers.items() if r.converged]
        share = len(converged) / len(providers) if providers else 1.0
        mine = self.states.get(self.me)
        me = network.get(self.me)
        moved = me is not None and self.previous is not None and self.step.needs_moved(me, network)
        provider_converged = None if mine is None else mine.converged and not moved
        unanswered = self.step.unanswered(network)
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
            "stamp": None if self.ids.stamp is None else self.ids.stamp.encode().hex(),
            "forked_from": self.ids.forked_from, "rejoined": self.ids.rejoined, "forks_asked": self.ids.asked_of(),
            "rounds": self.rounds, "converged": provider_converged is not False and share >= float(NETWORK_QUORUM)
            and not unanswered and not moved,
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
            "defaulted": self._defaulted.view(),
            "out_of_step": self.step.out_of_step,
            **self.gossip.view(),
            "bytes_per_round": round(sum(rounds_sent) / len(rounds_sent), 1) if rounds_sent else None,
        }

    def _latest_stamp(self, p: str) -> Stamp:
        stamps = [s for s in (self.states.seen(p), self.receipts.seen(p)) if s is not None]
        out = stamps[0].peek()
        for s in stamps[1:]:
            out = out.join(s.peek())
        return out


def _pause(service: AllocationService, next_gossip: float) -> float:
    """How long the allocation's loop sleeps unless woken: PASS, or while nothing is to be allocated (`quiet`) up to
    QUIET_PASS, and no later than the next anti-entropy pull."""
    if not quiet(service):
        return PASS
    return max(PASS, min(QUIET_PASS, next_gossip - time.monotonic()))


def quiet(service: AllocationService) -> bool:
    """Whether the allocation's loop may pass less often: nothing is to be allocated (no bid in the book, no standing
    need of this node's), it has an ITC id, and no round is due, waited for or computing again.  Its rounds come due
    only by what wakes the loop (`touch`: the book's `on_change`, the needs' watch, a record received; a side that
    waits sets a wake-up); what a pass does besides is all that then waits: subscriptions renewed, or sent where their
    topics changed with the recognition this node derives (a standing need, whose end a pass sees, is not quiet)."""
    if service._dirty or service.step.waiting or service.ids.stamp is None or service.needs.standing():
        return False
    if service.previous is not None and not service.previous.converged:
        return False
    return not any(mc.bids for mc in service.market.book.commitments())


def _need_view(bid) -> dict:
    s = bid.slot
    return {"id": s.id, "kind": s.kind, "quantity": s.quantity, "start": s.start, "end": s.end, "max_price": bid.price}


class _Defaulted:
    """Providers that failed work placed on them, each until DEFAULTED_SECONDS after its last failure, and only while
    it is in the directory (`pop` as it leaves): the providers are whoever a stranger cycles through it."""

    def __init__(self) -> None:
        self._until: OrderedDict[str, float] = OrderedDict()  # provider -> monotonic time, the soonest to end first

    def add(self, provider: str) -> None:
        now = time.monotonic()
        while self._until and next(iter(self._until.values())) <= now:  # those ended go as new ones come
            self._until.popitem(last=False)
        self._until[provider] = now + DEFAULTED_SECONDS
        self._until.move_to_end(provider)

    def pop(self, provider: str, default: None = None) -> None:
        self._until.pop(provider, default)

    def __contains__(self, provider: str) -> bool:
        until = self._until.get(provider)
        if until is not None and until <= time.monotonic():
            del self._until[provider]
            return False
        return until is not None

    def view(self) -> list[str]:
        return sorted(p for p in list(self._until) if p in self)


def _causal_order(stamps: dict[str, Stamp]) -> list[str]:
    """Participants ordered by their stamps: one whose stamp is <= another's comes first (concurrent
    ones by how many stamps they follow, then by id)."""
    ids = sorted(stamps)
    before = {p: sum(1 for q in ids if q != p and stamps[q].leq(stamps[p]) and not stamps[p].leq(stamps[q]))
              for p in ids}
    return sorted(ids, key=lambda p: (before[p], p))
