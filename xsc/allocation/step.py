"""Rounds in step, and needs answered: what a node's allocation rounds wait for, and what says its needs were heard
(AllocationService.round and .status read it).

- **Rounds in step**, as the simulator's: the provider's side waits until every recipient its latest state names has
  answered it (`provider_waits`), the recipient's side until every provider of the round is done with its last
  receipt (`recipient_waits`), each at most the bound (`STEP_WAIT` allocation delays, at least `STEP_WAIT_MIN` s).
  A side that waits sets a wake-up for the end of the bound (`waiting`); one that computes without every answer,
  the bound past, is counted (`out_of_step`).  A provider whose state did not change for a new receipt signs it
  again: the recipients it answers so are `acks`.
- **Needs reached and answered**: a provider has computed on the needs it follows (`needs_moved`), a recipient's
  need slots have each been answered by every provider that should see them (`unanswered`; docs/allocation.md).

`Step` keeps what those read: when this node last computed as a provider and published a receipt, the receipts its
provider side last read, when each provider's state last arrived and last named this node, when our first receipt
listing each of our need slots was published, and the needs our provider side last computed on.  The states and
receipts held are the service's (`Held`); a wake-up that comes due calls the service's `touch`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from ..config import MarketSection
from .core.matching import compatible
from .core.models import AllocationState, Commitment
from .core.records import Held, ReceiptRecord, StateRecord
from .core.rounds import Receipt, answered

STEP_WAIT = 10  # allocation delays a side waits for the other side's answers ...
STEP_WAIT_MIN = 5.0  # ... and at least this many seconds


class Step:
    def __init__(self, *, me: str, config: MarketSection, states: Held, receipts: Held,
                 touch: Callable[[], None]) -> None:
        self.me = me
        self.config = config
        self.states = states  # provider -> its newest StateRecord (the service's, this node's too)
        self.receipts = receipts  # recipient -> its newest ReceiptRecord (the service's, this node's too)
        self.touch = touch  # a round comes due
        self._computed_at = 0.0
        self._receipt_at = 0.0
        self._read: dict[str, str] = {}  # recipient -> the signature of its receipt our provider side last read
        self._heard: dict[str, float] = {}  # provider -> when its state naming this node last arrived (even unchanged)
        self._arrived: dict[str, float] = {}  # provider -> when its state last arrived (even unchanged)
        self._listed_at: dict[str, float] = {}  # our need slot -> when our first receipt listing it was published
        self._computed_needs: frozenset = frozenset()
        self._wake: asyncio.TimerHandle | None = None
        self.acks: set[str] = set()  # the recipients to answer with our unchanged state
        self.out_of_step = 0  # rounds a side computed after the bound, without every answer (status)

    @property
    def waiting(self) -> bool:
        """A side waits: a wake-up is set for the end of its bound."""
        return self._wake is not None

    def round_begins(self) -> None:
        """A round runs: the wake-up was for it (a side that still waits sets it again)."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None

    # --- the provider's side -----------------------------------------------------------------------------
    def provider_waits(self, mine: StateRecord | None, previous: AllocationState | None,
                       receipts: dict[str, Receipt]) -> bool:
        """The provider's side waits until every recipient its latest state names has answered it (the
        receipt's part of ours and request are the state's), at most the bound after it last computed: it then
        computes from receipts that all answer the same state of its own, as in the simulator's rounds."""
        if mine is None or previous is None or answered(self.me, mine.allocations, mine.wanted, receipts):
            return False
        return self._wait_until(self._computed_at)

    def provider_computes(self, me: Commitment, network: dict[str, Commitment]) -> set[str]:
        """Our provider side computes now, on the needs it follows: the recipients whose receipts are new to it."""
        self._computed_at = time.monotonic()
        read = {r: rec.signature for r, rec in self.receipts.items() if r != self.me}
        fresh = {r for r, sig in read.items() if self._read.get(r) != sig}
        self._read = read
        self._computed_needs = _followed_needs(me, network)
        return fresh

    def needs_moved(self, me: Commitment, network: dict[str, Commitment]) -> bool:
        """Whether the needs this node's provider side follows (those of the participants it recognises) changed
        since it last computed: until its next round it has not computed on them, so its state is not converged."""
        return _followed_needs(me, network) != self._computed_needs

    # --- the recipient's side ------------------------------------------------------------------------------
    def recipient_waits(self, network: dict[str, Commitment]) -> bool:
        """The recipient's side waits, once a provider's state arrived since its last receipt, until every provider
        that receipt names (or, while it names none, every active provider recognising it) is done with that
        receipt (`_done_with`), at most the bound after the first of those states arrived: its next receipt then
        answers every provider of the round at once, and every provider computes its grant from that one receipt,
        as in the simulator's rounds (grants from two receipts of one need can give its gap twice)."""
        since = self._receipt_at
        new = [t for t in self._heard.values() if t > since]
        if not new:
            return False
        held = self.receipts.get(self.me)
        expected = set() if held is None else {p for e in held.needs.values() for p in (*e.by_provider, *e.wanting)}
        if not expected:  # the first round: every provider that may answer (not one whose slots serve no need of ours)
            needs = network[self.me].need_slots
            expected = {p for p, c in network.items() if p != self.me and c.recognition.get(self.me, 0) > 0
                        and any(compatible(cap, n) for cap in c.capacity_slots for n in needs)}
        expected = {p for p in expected if p in network}
        if all(p in self._heard if held is None else self._done_with(p, held) for p in expected):
            return False
        return self._wait_until(min(new))

    def recipient_computes(self) -> None:
        self._receipt_at = time.monotonic()

    def listed(self, needs) -> None:
        """Our receipt listing `needs` (need slot ids) is published now."""
        listed = time.monotonic()
        self._listed_at = {nid: self._listed_at.get(nid, listed) for nid in needs}

    def _done_with(self, provider: str, receipt: ReceiptRecord) -> bool:
        """Whether the provider will not compute from our `receipt` any more: its latest state was computed after the
        receipt reached it (the state's stamp is causally after the receipt's; an unchanged state is signed again to
        say so), or the receipt does not answer that state, so the provider computes again only once we answer it
        (the two crossed on their way).  When a state arrived does not tell: one computed before the receipt
        reached its provider can arrive after the receipt left."""
        state = self.states.get(provider)
        if state is None:
            return False
        seen = self.states.seen(provider)
        if seen is not None and receipt.stamp.leq(seen):
            return True
        return not answered(provider, state.allocations, state.wanted, {self.me: receipt.to_receipt()})

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

    # --- what arrives and leaves -------------------------------------------------------------------------------
    def arrived(self, record: StateRecord) -> bool:
        """A provider's state arrived, before it is taken into the states held: whether it answers our receipt (it
        or the state it follows gives this node units or asks it for more)."""
        now = time.monotonic()
        self._arrived[record.provider] = now  # (an answer to a need: `unanswered`)
        if _names(record, self.me) or _names(self.states.get(record.provider), self.me):
            self._heard[record.provider] = now  # (an answer to our receipt: `recipient_waits`)
            return True
        return False

    def forget(self, participant: str) -> None:
        for kept in (self._heard, self._arrived, self._read):
            kept.pop(participant, None)

    # --- the bound -------------------------------------------------------------------------------------------
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
