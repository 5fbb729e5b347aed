"""An event-driven exchange among in-process participants, to watch the allocator converge.

Every participant publishes its commitment, then reacts to what reaches it:
  - a message (a peer's commitment or allocation state) arrives after a random latency; it is
    accepted by its ITC stamp (`receive`: stale copies, overtaken in flight, are ignored), merged
    into the participant's own stamp (join with its peek), and schedules a computation after a
    debounce, unless one is already due;
  - a computation first updates the participant's damping from what its need slots receive
    (`update_damping`; a changed factor is published as a new commitment), then recomputes its
    allocation (`compute_allocation` against its view) and publishes the state when the
    allocations changed;
  - a provider that is not converged yet checks again after `recheck_ms`.
The run ends when nothing is in flight (quiescent) or at `max_time_ms` of simulated time.

A *round* is one computation of one participant; "rounds to convergence" is the largest number
of computations any participant made until the network converged for good (>= 80% of
participants converged from then to the end).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from statistics import median

from ...errors import InvalidArgument
from .causality import Outcome, receive
from .convergence import network_converged
from ...itc import Stamp
from .matching import NeedIndex
from .models import AllocationState, CapacitySlot, Commitment, NeedSlot, SlotFilter
from .received import ReceivedIndex
from .recognition import mutual_recognition
from .rounds import Receipt, addressed_to, provider_round, recipient_round

KINDS = ("storage", "compute")
LOCATIONS = ("eu", "us", "asia")
HOUR = 3600


@dataclass(frozen=True)
class SimConfig:
    participants: int
    slots: int
    seed: int
    latency_ms: tuple[int, int] = (20, 200)
    debounce_ms: int = 100
    recheck_ms: int = 1_000
    max_time_ms: int = 600_000
    peers: int | None = None
    """Recognised peers per participant; None: 1 to max(5, min(50, (N - 1) / 3)) at random."""
    max_rounds: int = 1_000
    """Rounds mode: stop after this many rounds if the network has not gone quiet."""
    workers: int = 1
    """Rounds mode: processes computing the providers' side (the recipients' side stays here)."""
    traffic: bool = False
    """Rounds mode: measure the bytes each node sends per round (costs an encoding per message)."""

    def check(self, mode: str = "events") -> None:
        most = EVENTS_MAX if mode == "events" else ROUNDS_MAX
        if not 2 <= self.participants <= most:
            raise InvalidArgument(f"--participants must be between 2 and {most} in {mode} mode, got {self.participants}",
                                  hint="events mode sends every message to every participant in this process; "
                                       "rounds mode goes further" if mode == "events" else None)
        if not 1 <= self.slots <= 50:
            raise InvalidArgument(f"--slots must be between 1 and 50, got {self.slots}")
        if self.peers is not None and self.peers < 1:
            raise InvalidArgument(f"--peers must be at least 1, got {self.peers}")
        if not 1 <= self.workers <= 64:
            raise InvalidArgument(f"--workers must be between 1 and 64, got {self.workers}")


EVENTS_MAX = 500
ROUNDS_MAX = 20_000
MAX_PEERS = 50


@dataclass
class _Participant:
    id: str
    stamp: Stamp
    commitment: Commitment
    commitments: dict[str, Commitment] = field(default_factory=dict)
    states: dict[str, AllocationState] = field(default_factory=dict)
    receipts: dict[str, Receipt] = field(default_factory=dict)
    state: AllocationState | None = None
    receipt: Receipt | None = None
    computations: int = 0
    due: bool = False


def random_commitments(config: SimConfig) -> list[Commitment]:
    """N participants with M random slots each (capacity or need, half and half on average),
    windows of 2 to 8 hours starting on the hour within 12 hours, 1 to max(5, (N - 1) / 3)
    recognised peers with weights 1 to 10."""
    rng = random.Random(config.seed)
    width = max(3, len(str(config.participants - 1)))
    ids = [f"p{i:0{width}d}" for i in range(config.participants)]
    stamps = _fork(Stamp.seed(), len(ids))
    out = []
    for i, (pid, stamp) in enumerate(zip(ids, stamps)):
        caps, needs = [], []
        for j in range(config.slots):
            kind = rng.choice(KINDS)
            start = rng.randrange(12) * HOUR
            end = start + rng.randint(2, 8) * HOUR
            quantity = rng.randint(10, 100)
            if rng.random() < 0.5:
                location = rng.choice(LOCATIONS) if rng.random() < 0.8 else "any"
                tags = ("ssd",) if rng.random() < 0.3 else ()
                caps.append(CapacitySlot(id=f"c{j}", owner=pid, kind=kind, quantity=quantity, start=start,
                                         end=end, location=location, tags=tags))
            else:
                roll = rng.random()
                location = ("any" if roll < 0.4 else rng.choice(LOCATIONS) if roll < 0.8
                            else tuple(rng.sample(LOCATIONS, 2)))
                filters = SlotFilter(
                    deny=(rng.choice(ids),) if rng.random() < 0.1 else (),
                    require_tags=("ssd",) if rng.random() < 0.1 else (),
                )
                needs.append(NeedSlot(id=f"n{j}", owner=pid, kind=kind, quantity=quantity, start=start,
                                      end=end, location=location, filters=filters))
        # The others are ids without pid: position j is ids[j] below pid's index, ids[j + 1] from it
        # (the same draws as sampling the list of the others, without building it).
        others = len(ids) - 1
        most = min(others, max(5, min(MAX_PEERS, others // 3))) if config.peers is None else min(others, config.peers)
        count = rng.randint(1, most) if config.peers is None else most
        chosen = [ids[j + (j >= i)] for j in rng.sample(range(others), count)]
        recognition = {q: Decimal(rng.randint(1, 10)) for q in chosen}
        out.append(Commitment(participant=pid, capacity_slots=caps, need_slots=needs,
                              recognition=recognition, stamp=stamp.event(), timestamp=0))
    return out


def _fork(seed: Stamp, n: int) -> list[Stamp]:
    stamps = [seed]
    while len(stamps) < n:
        stamps.extend(stamps.pop(0).fork())
    return stamps


@dataclass
class SimResult:
    config: SimConfig
    converged: bool
    quiescent: bool
    converged_at_ms: int | None
    rounds: int
    computations: int
    messages: int
    stale_ignored: int
    end_ms: int
    total_capacity: int
    total_need: int
    allocated: int
    over_allocation: int
    over_allocated_slots: int
    unmet_need: int
    capacity_over_quantity: int
    fairness: list[dict]
    timeline: list[tuple[int, float, int]]

    def summary(self) -> dict:
        ratios = [f["ratio"] for f in self.fairness if not f["satisfied"] and f["mr_share"] > 0]
        return {
            "participants": self.config.participants,
            "slots": self.config.slots,
            "seed": self.config.seed,
            "converged": self.converged,
            "quiescent": self.quiescent,
            "converged_at_ms": self.converged_at_ms,
            "rounds_to_convergence": self.rounds,
            "computations": self.computations,
            "messages": self.messages,
            "stale_ignored": self.stale_ignored,
            "simulated_ms": self.end_ms,
            "total_capacity": self.total_capacity,
            "total_need": self.total_need,
            "allocated": self.allocated,
            "over_allocation": self.over_allocation,
            "over_allocated_need_slots": self.over_allocated_slots,
            "capacity_allocated_beyond_quantity": self.capacity_over_quantity,
            "unmet_need": self.unmet_need,
            "fairness": {
                "unsatisfied_recipients": len(ratios),
                "share_over_mr_share_min": round(min(ratios), 4) if ratios else None,
                "share_over_mr_share_median": round(median(ratios), 4) if ratios else None,
                "share_over_mr_share_max": round(max(ratios), 4) if ratios else None,
            },
        }


class Simulation:
    def __init__(self, config: SimConfig, commitments: list[Commitment] | None = None) -> None:
        config.check()
        self.config = config
        self.rng = random.Random(config.seed ^ 0x5EED)
        commitments = commitments if commitments is not None else random_commitments(config)
        self.people = {c.participant: _Participant(c.participant, c.stamp, c) for c in commitments}
        self.queue: list = []
        self.seq = 0
        self.now = 0
        self.messages = 0
        self.stale = 0
        self.computations = 0
        self.timeline: list[tuple[int, float, int]] = []
        self.converged_since: int | None = None
        self.rounds_at_convergence = 0

    # --- events -----------------------------------------------------------------------
    def _push(self, at: int, kind: str, *args) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, args))

    def _broadcast(self, sender: _Participant, payload: Commitment | AllocationState) -> None:
        lo, hi = self.config.latency_ms
        for pid in self.people:
            if pid != sender.id:
                self.messages += 1
                self._push(self.now + self.rng.randint(lo, hi), "deliver", pid, payload)

    def _schedule(self, p: _Participant, delay: int) -> None:
        if not p.due:
            p.due = True
            self._push(self.now + delay + self.rng.randint(0, self.config.debounce_ms), "compute", p.id)

    def _publish_commitment(self, p: _Participant, commitment: Commitment) -> None:
        p.stamp = p.stamp.event()
        p.commitment = commitment.model_copy(update={"stamp": p.stamp, "timestamp": self.now})
        p.commitments[p.id] = p.commitment
        self._broadcast(p, p.commitment)

    def _deliver(self, p: _Participant, payload: Commitment | AllocationState) -> None:
        if isinstance(payload, Commitment):
            held, store, owner = p.commitments.get(payload.participant), p.commitments, payload.participant
        elif isinstance(payload, Receipt):
            held, store, owner = p.receipts.get(payload.recipient), p.receipts, payload.recipient
        else:
            held, store, owner = p.states.get(payload.provider), p.states, payload.provider
        value, outcome = receive(held, payload)
        if outcome is Outcome.STALE:
            self.stale += 1
            return
        store[owner] = value
        p.stamp = p.stamp.join(payload.stamp.peek())
        self._schedule(p, self.config.debounce_ms)

    def _compute(self, p: _Participant) -> None:
        p.due = False
        p.computations += 1
        self.computations += 1
        # The recipient's side: total what the providers' latest states give me, damp, publish.
        received, wanted = addressed_to(p.id, p.states.values())
        damped, receipt = recipient_round(p.commitment, received, wanted, self.now, previous=p.receipt)
        if damped.damping_factor != p.commitment.damping_factor:
            self._publish_commitment(p, damped)
        else:
            # The history is kept locally until the factor it yields changes.
            p.commitment = damped
            p.commitments[p.id] = damped
        if p.receipt is None or receipt.needs != p.receipt.needs:
            p.receipt = receipt
            p.receipts[p.id] = receipt
            p.stamp = p.stamp.join(receipt.stamp.peek())
            if p.commitment.need_slots:
                self._broadcast(p, receipt)
        # The provider's side: divide my capacity by the receipts I hold.
        state = provider_round(p.commitment, p.commitments, p.receipts, previous=p.state, now_ms=self.now)
        # Peers need the allocations and requests, not the flag: publishing a flag change alone
        # would only make every peer recompute the same thing.
        changed = (p.state is None or state.slot_allocations != p.state.slot_allocations
                   or state.wanted != p.state.wanted)
        p.state = state
        p.stamp = p.stamp.join(state.stamp.peek())
        if changed:
            p.states[p.id] = state
            self._broadcast(p, state)
        if not state.converged:
            self._schedule(p, self.config.recheck_ms)
        self._observe()

    def _observe(self) -> None:
        states = {pid: q.state for pid, q in self.people.items()}
        done = network_converged(states)
        if done and self.converged_since is None:
            self.converged_since = self.now
            self.rounds_at_convergence = max(q.computations for q in self.people.values())
        elif not done:
            self.converged_since = None
        fraction = sum(1 for s in states.values() if s is not None and s.converged) / len(states)
        over = self._over_allocation()[0]
        if not self.timeline or self.timeline[-1][1:] != (fraction, over) or self.timeline[-1][0] != self.now:
            self.timeline.append((self.now, fraction, over))

    def _truth(self) -> ReceivedIndex:
        return ReceivedIndex(q.state for q in self.people.values() if q.state is not None)

    def _over_allocation(self) -> tuple[int, int, int]:
        """(units beyond need, need slots over-allocated, unmet units) over the real latest states."""
        totals = self._truth().totals
        over = slots = unmet = 0
        for q in self.people.values():
            for n in q.commitment.need_slots:
                got = totals.get((q.id, n.id), 0)
                if got > n.quantity:
                    over += got - n.quantity
                    slots += 1
                else:
                    unmet += n.quantity - got
        return over, slots, unmet

    # --- run --------------------------------------------------------------------------
    def run(self) -> SimResult:
        for p in self.people.values():
            p.commitments[p.id] = p.commitment
            self._push(self.rng.randrange(500), "start", p.id)
        while self.queue:
            at, _, kind, args = heapq.heappop(self.queue)
            if at > self.config.max_time_ms:
                heapq.heappush(self.queue, (at, 0, kind, args))
                break
            self.now = at
            p = self.people[args[0]]
            if kind == "start":
                self._broadcast(p, p.commitment)
                self._schedule(p, self.config.debounce_ms)
            elif kind == "deliver":
                self._deliver(p, args[1])
            else:
                self._compute(p)
        return self._result(quiescent=not self.queue)

    def _result(self, quiescent: bool) -> SimResult:
        over, over_slots, unmet = self._over_allocation()
        states = [q.state for q in self.people.values() if q.state is not None]
        beyond = 0
        for q in self.people.values():
            if q.state is None:
                continue
            used: dict[str, int] = {}
            for a in q.state.slot_allocations:
                used[a.capacity_slot] = used.get(a.capacity_slot, 0) + a.quantity
            for c in q.commitment.capacity_slots:
                beyond += max(0, used.get(c.id, 0) - c.quantity)
        converged = self.converged_since is not None
        return SimResult(
            config=self.config,
            converged=converged,
            quiescent=quiescent,
            converged_at_ms=self.converged_since,
            rounds=self.rounds_at_convergence if converged else max(q.computations for q in self.people.values()),
            computations=self.computations,
            messages=self.messages,
            stale_ignored=self.stale,
            end_ms=self.now,
            total_capacity=sum(c.quantity for q in self.people.values() for c in q.commitment.capacity_slots),
            total_need=sum(n.quantity for q in self.people.values() for n in q.commitment.need_slots),
            allocated=sum(a.quantity for s in states for a in s.slot_allocations),
            over_allocation=over,
            over_allocated_slots=over_slots,
            unmet_need=unmet,
            capacity_over_quantity=beyond,
            fairness=self._fairness(),
            timeline=self.timeline,
        )

    def _fairness(self) -> list[dict]:
        """Per recipient r: share = r's part of all tier-1 units; MR share = r's part of all mutual
        recognition that could reach it, sum of MR(p, r) over the providers p with a capacity slot
        compatible with one of r's need slots.  Tier 1 divides by MR x need (then caps), so the
        two differ even in a fair run; a satisfied recipient (no unmet need) is fair by definition.
        Units of both simulated kinds are drawn from the same range, so they are added here."""
        commitments = {pid: q.commitment for pid, q in self.people.items()}
        index = NeedIndex(n for c in commitments.values() for n in c.need_slots)
        reach: set[tuple[str, str]] = set()
        for p in commitments.values():
            for c in p.capacity_slots:
                reach.update((p.participant, n.owner) for n in index.candidates(c))
        tier1: dict[str, int] = {}
        for q in self.people.values():
            if q.state is not None:
                for a in q.state.slot_allocations:
                    if a.tier == 1:
                        tier1[a.recipient] = tier1.get(a.recipient, 0) + a.quantity
        totals = self._truth().totals
        mr: dict[str, Fraction] = {}
        for r, c in commitments.items():
            if c.need_slots:
                mr[r] = sum((mutual_recognition(commitments[p], c) for p, rr in reach if rr == r), Fraction(0))
        mr_sum = sum(mr.values(), Fraction(0))
        t1_sum = sum(tier1.values())
        out = []
        for r in sorted(mr):
            mr_share = float(mr[r] / mr_sum) if mr_sum else 0.0
            share = tier1.get(r, 0) / t1_sum if t1_sum else 0.0
            satisfied = all(totals.get((r, n.id), 0) >= n.quantity for n in commitments[r].need_slots)
            out.append({
                "recipient": r,
                "tier1_units": tier1.get(r, 0),
                "share": round(share, 6),
                "mr_share": round(mr_share, 6),
                "ratio": round(share / mr_share, 6) if mr_share else 0.0,
                "satisfied": satisfied,
            })
        return out


def simulate(participants: int, slots: int, seed: int, **options) -> SimResult:
    """Run one simulation (see the module docstring); deterministic for a given seed."""
    return Simulation(SimConfig(participants, slots, seed, **options)).run()


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or PlotUnavailable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from ...errors import PlotUnavailable

        raise PlotUnavailable("--plot needs matplotlib, which is not installed",
                              hint="pip install 'xsc[plot]', or leave out --plot") from None
    return plt


def _save(fig, plt, path: str) -> None:
    from ...errors import InvalidArgument

    try:
        fig.savefig(path, format="png")
    except OSError as e:
        raise InvalidArgument(f"cannot write the plot to {path}: {e.strerror}", hint="pick a writable path") from None
    finally:
        plt.close(fig)


def plot(result: SimResult, path: str) -> None:
    """Convergence over simulated time as a PNG: the share of converged participants (with the
    80% line) and the total over-allocation."""
    plt = _pyplot()
    times = [t / 1000 for t, _, _ in result.timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    top.step(times, [f for _, f, _ in result.timeline], where="post")
    top.axhline(0.8, linestyle="--", color="grey", linewidth=1)
    top.set_ylabel("participants converged")
    top.set_ylim(-0.02, 1.02)
    bottom.step(times, [o for _, _, o in result.timeline], where="post", color="tab:red")
    bottom.set_ylabel("over-allocation (units)")
    bottom.set_xlabel("simulated time (s)")
    c = result.config
    fig.suptitle(f"xsc allocation simulate: {c.participants} participants, {c.slots} slots, seed {c.seed}, events")
    fig.tight_layout()
    _save(fig, plt, path)
