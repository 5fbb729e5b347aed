"""Allocator speed: one provider against many need slots, and a whole network recomputing.

Run: .venv/bin/python -m bench.bench_allocation [--quick]

Times are CPU time of this process (best of a few runs), printed with their ratio to raw steps
measured in the same run:
  - pair loop: a plain Python loop doing one comparison per (capacity slot, need slot) pair,
    over as many pairs as the allocator actually looked at (after bucketing), and over all pairs;
  - sort: sorting the same number of (kind, start, id) tuples;
  - records: building the result's SlotAllocations one by one (the dataclass constructor).
Targets (one core): one provider with 100 capacity slots vs 10,000 need slots < 50 ms;
a full recompute of 1,000 participants x 10 slots < 2 s.
"""

from __future__ import annotations

import argparse
import random
import time
from decimal import Decimal
from statistics import median

from .report import Report
from xsc.allocation import (
    CapacitySlot,
    Commitment,
    NeedIndex,
    NeedSlot,
    ReceivedIndex,
    SlotAllocation,
    Stamp,
    compute_allocation,
)

KINDS = ("storage", "compute")
LOCATIONS = ("eu", "us", "asia", "any")
HOUR = 3600
GB = 10**9


def _window(rng: random.Random) -> tuple[int, int]:
    start = rng.randrange(7 * 24) * HOUR  # on the hour, over a week
    return start, start + rng.randint(1, 8) * HOUR


def _quantity(rng: random.Random, kind: str) -> int:
    return rng.randint(1, 200) * GB if kind == "storage" else rng.randint(10**6, 10**9)


def _slot(cls, rng: random.Random, owner: str, sid: str, need: bool):
    kind = rng.choice(KINDS)
    start, end = _window(rng)
    location = rng.choice(LOCATIONS)
    if need and rng.random() < 0.2:
        location = tuple(rng.sample(LOCATIONS[:3], 2))
    return cls(id=sid, owner=owner, kind=kind, quantity=_quantity(rng, kind), start=start, end=end,
               location=location)


def _stamps(n: int) -> list[Stamp]:
    out = [Stamp.seed()]
    while len(out) < n:
        out.extend(out.pop(0).fork())
    return out


def one_provider(rng: random.Random, n_caps: int, n_recipients: int, needs_each: int):
    """A provider recognising every recipient (weights 1..10); 70% of them recognise it back."""
    rids = [f"r{i:05d}" for i in range(n_recipients)]
    stamps = _stamps(n_recipients + 1)
    provider = Commitment(
        participant="provider",
        capacity_slots=[_slot(CapacitySlot, rng, "provider", f"c{i}", False) for i in range(n_caps)],
        recognition={r: Decimal(rng.randint(1, 10)) for r in rids},
        stamp=stamps[0].event(), timestamp=0)
    network = {}
    for r, stamp in zip(rids, stamps[1:]):
        back = {"provider": Decimal(rng.randint(1, 10))} if rng.random() < 0.7 else {}
        back.update({rng.choice(rids): Decimal(rng.randint(1, 10)) for _ in range(3)})
        network[r] = Commitment(
            participant=r,
            need_slots=[_slot(NeedSlot, rng, r, f"n{j}", True) for j in range(needs_each)],
            recognition=back, damping_factor=Decimal(rng.choice(("1", "1", "0.8", "0.5"))),
            stamp=stamp.event(), timestamp=0)
    return provider, network


def network_of(rng: random.Random, n: int, slots: int, peers: int):
    """n participants with `slots` slots each (capacity or need, half and half on average),
    each recognising `peers` random others."""
    ids = [f"p{i:05d}" for i in range(n)]
    out = {}
    for pid, stamp in zip(ids, _stamps(n)):
        caps, needs = [], []
        for j in range(slots):
            if rng.random() < 0.5:
                caps.append(_slot(CapacitySlot, rng, pid, f"c{j}", False))
            else:
                needs.append(_slot(NeedSlot, rng, pid, f"n{j}", True))
        recognition = {q: Decimal(rng.randint(1, 10)) for q in rng.sample(ids, peers) if q != pid}
        out[pid] = Commitment(participant=pid, capacity_slots=caps, need_slots=needs, recognition=recognition,
                              stamp=stamp.event(), timestamp=0)
    return out


# CPU time of this process: the machine is shared, and wall time would count other people's work.
clock = time.process_time


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def pair_loop(caps, need_lists) -> float:
    """One comparison per (capacity, need) pair: the floor under any matching in Python."""
    def run():
        x = 0
        for c, needs in zip(caps, need_lists):
            end = c.end
            for n in needs:
                if n.start < end:
                    x += 1
        return x
    return best_of(run, 3)


def sort_step(slots) -> float:
    keys = [(s.kind, s.start, s.id) for s in slots]
    return best_of(lambda: sorted(keys), 5)


def visited_pairs(provider: Commitment, needs) -> list[list]:
    index = NeedIndex(needs)
    return [index.candidates(c) for c in provider.capacity_slots]


REPORT = Report("allocation")


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms"


def bench_one_provider(n_caps: int, n_recipients: int, needs_each: int, repeat: int) -> None:
    rng = random.Random(1)
    provider, network = one_provider(rng, n_caps, n_recipients, needs_each)
    needs = [n for c in network.values() for n in c.need_slots]
    t0 = clock()
    state = compute_allocation(provider, network)
    t_first = clock() - t0
    t = best_of(lambda: compute_allocation(provider, network), repeat)
    candidates = visited_pairs(provider, needs)
    pairs = sum(map(len, candidates))
    raw_pairs = pair_loop(provider.capacity_slots, candidates)
    raw_all = pair_loop(provider.capacity_slots, [needs] * len(provider.capacity_slots))
    raw_sort = sort_step(needs)
    rows = [(a.capacity_slot, a.need_slot, a.recipient, a.quantity, a.tier) for a in state.slot_allocations]
    allocated = sum(a.quantity for a in state.slot_allocations)
    print(f"one provider: {n_caps} capacity slots vs {len(needs)} need slots "
          f"({n_recipients} recipients), best of {repeat}")
    print(f"  compute_allocation        {fmt(t)}   (target < 50 ms)")
    print(f"  first call                {fmt(t_first)}   (nothing cached yet: each commitment's weights and "
          f"need rows are made once, then reused)")
    print(f"  compatible pairs visited  {pairs:>9}   of {n_caps * len(needs)} "
          f"({pairs / (n_caps * len(needs)):.1%}); {len(state.slot_allocations)} allocations, "
          f"{sum(state.unallocated.values()) / max(1, sum(c.quantity for c in provider.capacity_slots)):.1%}"
          f" of capacity left open, {allocated} units given")
    print(f"  raw: pair loop, visited   {fmt(raw_pairs)}   allocator = {t / raw_pairs:6.1f} x")
    print(f"  raw: pair loop, all pairs {fmt(raw_all)}   allocator = {t / raw_all:6.2f} x")
    print(f"  raw: sort {len(needs)} need slots {fmt(raw_sort)}   allocator = {t / raw_sort:6.1f} x")
    raw_records = best_of(lambda: [SlotAllocation(*a) for a in rows], 3)
    print(f"  raw: {len(rows)} SlotAllocation() {fmt(raw_records)}   allocator = {t / raw_records:6.1f} x")
    name = f"one provider, {n_caps} caps vs {len(needs)} needs"
    REPORT.add(name, t * 1e3, "ms", target=50, op="<")
    REPORT.add(f"{name}: x raw pair loop (visited)", t / raw_pairs, "x")


def bench_network(n: int, slots: int, peers: int) -> None:
    rng = random.Random(2)
    network = network_of(rng, n, slots, peers)

    def recompute(previous):
        received = ReceivedIndex(s for s in previous.values() if s is not None)
        return {pid: compute_allocation(c, network, received=received.excluding(pid), previous=previous.get(pid))
                for pid, c in network.items()}

    t0 = clock()
    first = recompute({})
    t_first = clock() - t0
    t0 = clock()
    second = recompute(first)
    t_second = clock() - t0
    per = []
    for pid, c in list(network.items())[:200]:
        t = clock()
        compute_allocation(c, network, previous=first[pid])
        per.append(clock() - t)
    all_slots = [s for c in network.values() for s in (*c.capacity_slots, *c.need_slots)]
    raw_sort = sort_step(all_slots)
    # The pairs the whole recompute looked at: each provider's slots against its recognised peers' needs.
    visited_caps, visited_lists = [], []
    for c in network.values():
        needs = [nd for r in c.recognition if r in network for nd in network[r].need_slots]
        for cap, cands in zip(c.capacity_slots, visited_pairs(c, needs)):
            visited_caps.append(cap)
            visited_lists.append(cands)
    pairs = sum(map(len, visited_lists))
    raw_pairs = pair_loop(visited_caps, visited_lists)
    converged = sum(1 for s in second.values() if s.converged)
    allocs = sum(len(s.slot_allocations) for s in first.values())
    print(f"network: {n} participants x {slots} slots ({len(all_slots)} slots, {peers} recognised peers each)")
    print(f"  full recompute, first     {fmt(t_first)}   (target < 2 s); {allocs} allocations")
    print(f"  full recompute, again     {fmt(t_second)}   (with the first round's allocations as received; "
          f"{converged} of {n} converged)")
    print(f"  one participant, median   {fmt(median(per))}")
    print(f"  raw: pair loop, visited   {fmt(raw_pairs)}   ({pairs} pairs) recompute = "
          f"{t_second / raw_pairs:6.1f} x")
    print(f"  raw: sort all {len(all_slots)} slots {fmt(raw_sort)}   recompute = {t_second / raw_sort:6.1f} x")
    name = f"network {n} x {slots} slots"
    REPORT.add(f"{name}: full recompute, first", t_first, "s", target=2, op="<")
    REPORT.add(f"{name}: full recompute, again", t_second, "s")
    REPORT.add(f"{name}: recompute x raw pair loop (visited)", t_second / raw_pairs, "x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        bench_one_provider(20, 200, 10, repeat=3)
        bench_network(100, 10, 10)
    else:
        bench_one_provider(100, 1_000, 10, repeat=7)
        bench_network(1_000, 10, 10)
    REPORT.write()


if __name__ == "__main__":
    main()
