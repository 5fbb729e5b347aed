"""Allocator: one provider against many need slots, a whole network recomputing, and the
round protocol converging at scale.

Run: .venv/bin/python -m bench.bench_allocation [--quick] [--only compute,rounds,traffic,events,devnet] [--nodes N]
     [--recognised all|K,K,...] [--large M]

Figures are printed with their ratio to raw steps measured in the same run, and written with
their targets to bench/out/allocation.json (bench/report.py):
  - compute (CPU time of this process, best of a few runs): one provider with 100 capacity slots
    vs 10,000 need slots (target < 50 ms); a full recompute of 1,000 participants x 10 slots
    (target < 2 s).  Raw steps: a plain loop doing one comparison per (capacity, need) pair, a
    sort of the same slots, building the records one by one.
  - rounds (`RoundSimulation` with a process pool): 100 x 5 converge in <= 50 rounds, 1,000 x 5
    in <= 100, 10,000 x 3 converge with < 2 s per round on this machine, with peak memory.  Time
    per round is CPU time on the round's critical path (this process + the busiest worker of each
    of the round's two steps, providers then recipients: what the round takes on idle cores; the
    machine is shared), wall time printed beside it.  Raw
    step: one pass over every provider's view (each recognised recipient's need slots, one dict
    look-up each; CPU time), the least any round must do.
  - traffic: bytes each node sends per round at 1,000 nodes against the number of recognised
    peers, and at 10 recognised peers against the network size: it follows the recognised peers,
    not the size.  Raw step: the bytes of one empty allocation message.
  - events (`Simulation`: latencies, ITC, reactive recompute): 100 x 5, seed 5, which took 925
    rounds and 177 s before the round protocol.
  - devnet (not in the default run: node processes): live rounds on N nodes (default 6), 3 of them
    with a standing need, all recognising all or (--recognised 1,2,5) each node the next K: bytes
    each node sends per round until converged (allocation records, subscriptions, digests, and the
    answers it gives; market commitments and digests apart), and per second after (anti-entropy,
    renewals, the market's re-signed offers), and the rounds a side computed past the bound of its wait for
    the other side's answers (`out_of_step`); --large M repeats it on M nodes: the traffic follows
    the recognised peers, not the size.  Raw step: one message carrying an empty signed state at
    this network's stamp.
"""

from __future__ import annotations

import argparse
import json
import os
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
from xsc.allocation.roundsim import RoundSimulation
from xsc.allocation.core.simulate import SimConfig, random_commitments, simulate

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


def raw_view_pass(commitments) -> float:
    """One pass over every provider's view: each recognised recipient's need slots, one dict
    look-up each (CPU time, best of 3)."""
    net = {c.participant: c for c in commitments}
    table = {}

    def run():
        x = 0
        for c in commitments:
            if not c.capacity_slots:
                continue
            for r in c.recognition:
                other = net.get(r)
                if other is not None:
                    for n in other.need_slots:
                        x += table.get((r, n.id), 1)
        return x
    return best_of(run, 3)


def wall_best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_rounds(n: int, slots: int, seed: int, workers: int, target_rounds: int | None,
                 target_seconds: float | None) -> None:
    config = SimConfig(n, slots, seed, workers=workers, max_rounds=1_000)
    sim = RoundSimulation(config)
    raw = raw_view_pass(list(sim.published.values()))
    t0 = time.perf_counter()
    result = sim.run()
    wall = time.perf_counter() - t0
    s = result.summary()
    mean, worst = s["cpu_seconds_per_round_mean"], s["cpu_seconds_per_round_max"]
    wall_mean, wall_worst = s["seconds_per_round_mean"], s["seconds_per_round_max"]
    print(f"rounds: {n} participants x {slots} slots, seed {seed}, {workers} worker(s) "
          f"({result.providers} providers, {s['recognised_peers_mean']} recognised peers each on average)")
    print(f"  rounds to convergence     {result.rounds:9d}   (target <= {target_rounds or '-'}); "
          f"quiet after {result.rounds_run}: {result.quiet}")
    print(f"  over-allocation, any round {result.max_over_allocation:8d}   (target 0); capacity beyond quantity "
          f"{result.capacity_over_quantity}; allocated {result.allocated} of need {result.total_need}, "
          f"capacity {result.total_capacity}")
    print(f"  time per round, mean      {mean * 1e3:9.1f} ms   (target < {target_seconds or '-'} s); "
          f"max {worst * 1e3:.1f} ms  (CPU on the critical path: this process + the busiest worker of each step)")
    busiest = max(result.timeline, key=lambda x: x.cpu_seconds)
    print(f"  slowest round ({busiest.round}): busiest workers {busiest.worker_cpu_seconds * 1e3:.1f} ms + this process "
          f"{(busiest.cpu_seconds - busiest.worker_cpu_seconds) * 1e3:.1f} ms (passing messages on; all of it "
          f"with one worker)")
    print(f"  wall time per round, mean {wall_mean * 1e3:9.1f} ms   max {wall_worst * 1e3:.1f} ms; whole run "
          f"{wall:.1f} s (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  raw: one pass over views  {raw * 1e3:9.2f} ms   round = {mean / raw:7.1f} x (mean), "
          f"{worst / raw:7.1f} x (max)")
    print(f"  peak memory               {s['peak_rss_mib']:9.1f} MiB (largest of this process and a worker)")
    name = f"rounds {n} x {slots}, seed {seed}"
    if target_rounds:
        REPORT.add(f"{name}: rounds to convergence", result.rounds, "rounds", target=target_rounds, op="<=")
    else:
        REPORT.add(f"{name}: rounds to convergence", result.rounds, "rounds")
    REPORT.add(f"{name}: converged", float(result.converged), "", target=1, op=">=")
    REPORT.add(f"{name}: over-allocation in any round", result.max_over_allocation, "units", target=0, op="<=")
    REPORT.add(f"{name}: capacity beyond quantity", result.capacity_over_quantity, "units", target=0, op="<=")
    if target_seconds:
        REPORT.add(f"{name}: CPU per round, max", worst, "s", target=target_seconds, op="<")
    else:
        REPORT.add(f"{name}: CPU per round, max", worst, "s")
    REPORT.add(f"{name}: CPU per round, mean", mean, "s")
    REPORT.add(f"{name}: wall per round, mean (load {os.getloadavg()[0]:.0f})", wall_mean, "s")
    REPORT.add(f"{name}: raw view pass", raw * 1e3, "ms")
    REPORT.add(f"{name}: round mean x raw view pass", mean / raw, "x")
    REPORT.add(f"{name}: peak memory", s["peak_rss_mib"], "MiB")


TRAFFIC_ROUNDS = 12
"""Traffic is averaged over the first rounds (or until quiet): most of it is there."""


def bench_traffic(n: int, peer_counts: list[int], sizes: list[int], peers_at_size: int, workers: int) -> None:
    empty = len(json.dumps({"provider": "p0000", "stamp": "", "timestamp": 0, "allocations": [], "wanted": []},
                           separators=(",", ":")))
    rows = []

    def one(size: int, peers: int) -> dict:
        r = RoundSimulation(SimConfig(size, 5, 1, peers=peers, workers=workers, traffic=True,
                                      max_rounds=TRAFFIC_ROUNDS)).run()
        per_round = [x.bytes_per_node for x in r.timeline]
        mean = sum(per_round) / len(per_round)
        return {"participants": size, "recognised_peers": peers, "rounds": r.rounds_run,
                "bytes_per_node_per_round": round(mean, 1), "bytes_per_node_first_round": round(per_round[0], 1),
                "over_raw": round(mean / empty, 1), "recipients_named_per_provider": round(r.recipients_mean, 2)}

    for peers in peer_counts:
        rows.append(one(n, peers))
    for size in sizes:
        if size != n or peers_at_size not in peer_counts:
            rows.append(one(size, peers_at_size))
    print(f"traffic: bytes each node sends per round (mean over the first {TRAFFIC_ROUNDS} rounds or until quiet; "
          f"raw: an empty allocation message, {empty} bytes)")
    print(f"  {'nodes':>6} {'recognised':>10} {'rounds':>6} {'bytes/node/round':>16} {'first round':>11} "
          f"{'x raw':>6} {'recipients named':>16}")
    for row in rows:
        print(f"  {row['participants']:6d} {row['recognised_peers']:10d} {row['rounds']:6d} "
              f"{row['bytes_per_node_per_round']:16.1f} {row['bytes_per_node_first_round']:11.1f} "
              f"{row['over_raw']:6.1f} {row['recipients_named_per_provider']:16.2f}")
    REPORT.add("traffic: raw empty allocation message", empty, "B")
    for row in rows:
        REPORT.add(f"traffic {row['participants']} nodes, {row['recognised_peers']} recognised: bytes/node/round",
                   row["bytes_per_node_per_round"], "B")


def bench_events(n: int, slots: int, seed: int) -> None:
    t0 = time.perf_counter()
    r = simulate(n, slots, seed)
    wall = time.perf_counter() - t0
    raw = raw_view_pass(random_commitments(SimConfig(n, slots, seed)))
    print(f"events: {n} participants x {slots} slots, seed {seed} (latencies 20-200 ms, reactive recompute)")
    print(f"  rounds to convergence     {r.rounds:9d}   (925 before the round protocol); converged {r.converged}, "
          f"quiescent {r.quiescent}")
    print(f"  computations, messages    {r.computations:9d}   {r.messages}; simulated {r.end_ms / 1000:.1f} s; "
          f"max over-allocation {max(o for _, _, o in r.timeline)}, final {r.over_allocation}")
    print(f"  whole run                 {wall:9.1f} s    (177 s before); raw view pass {raw * 1e3:.2f} ms, "
          f"run = {wall / raw:.0f} x")
    name = f"events {n} x {slots}, seed {seed}"
    REPORT.add(f"{name}: rounds to convergence (925 before)", r.rounds, "rounds", target=50, op="<=")
    REPORT.add(f"{name}: final over-allocation", r.over_allocation, "units", target=0, op="<=")
    REPORT.add(f"{name}: largest transient over-allocation", max(o for _, _, o in r.timeline), "units")
    REPORT.add(f"{name}: run x raw view pass", wall / raw, "x")


def _api(node, method: str, path: str, payload=None) -> dict:
    import urllib.request

    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(node.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {node.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def bench_devnet(n: int, recipients: int, recognised: int | None = None, timeout: float = 180.0) -> dict:
    """Live rounds on `n` node processes (xsc.devnet): every node recognising every other (`recognised` None), or
    node i recognising only the next `recognised` nodes (weight 1; the others set to 0).  Bytes each node sends
    per round until the network converged -- allocation records, subscriptions and digests (`bytes_sent` of
    /v1/allocation), and market commitments and digests (of /v1/market/status) -- and per second after
    (anti-entropy and renewals only).  Raw step: the bytes of a message carrying one signed state with no
    allocation, at a stamp of this network."""
    import tempfile
    from pathlib import Path

    from xsc.devnet import Devnet

    env = {"XSC_PEERS_GOSSIP_INTERVAL": "0.3", "XSC_HEALTH_PROBE_INTERVAL": "0.2", "XSC_HEALTH_PROBE_TIMEOUT": "2",
           "XSC_MARKET_ALLOCATION_DELAY": "0.1", "XSC_MARKET_FRESHNESS": "10", "XSC_STORAGE_CAPACITY": "40000000",
           "XSC_MARKET_OFFER_COMPUTE": "false", "XSC_AUDIT_REPAIR_AFTER_FAILURES": "1000000"}
    quiet_s = 10.0
    with tempfile.TemporaryDirectory(prefix="bench-alloc-") as root:
        net = Devnet(Path(root), n, env=env, name="n{}")
        try:
            net.spawn().wait_listening(120)
            if net.wait_peered(180):
                raise SystemExit("devnet: the nodes did not all meet")
            nodes = list(net)
            ids = [_api(node, "GET", "/v1/market/status")["node"] for node in nodes]
            for i, (node, me) in enumerate(zip(nodes, ids)):
                chosen = {ids[(i + j) % n] for j in range(1, n if recognised is None else recognised + 1)}
                for other in ids:
                    if other != me:
                        _api(node, "POST", "/v1/market/recognize", {"peer": other, "weight": "1" if other in chosen
                                                                    else "0"})
            time.sleep(3)  # the new weights published and the subscriptions moved before counting starts
            before = [(_api(node, "GET", "/v1/allocation"), _api(node, "GET", "/v1/market/status")) for node in nodes]
            started = time.monotonic()
            for node in nodes[:recipients]:
                _api(node, "POST", "/v1/allocation/needs", {"kind": "storage", "quantity": 30_000_000, "seconds": 1800})

            def settled() -> list | None:
                statuses = [_api(node, "GET", "/v1/allocation") for node in nodes]
                if all(s["converged"] and (not s["needs"] or s["received"]) for s in statuses):
                    return [(s, _api(node, "GET", "/v1/market/status")) for s, node in zip(statuses, nodes)]
                return None

            converged = True
            while (after := settled()) is None:
                if time.monotonic() - started > timeout:
                    converged = False  # measured all the same, until now: the row says so
                    statuses = [_api(node, "GET", "/v1/allocation") for node in nodes]
                    for i, st in enumerate(statuses):
                        print(f"  not converged: node {i} converged={st['converged']} own={st['provider_converged']} "
                              f"share={st['converged_share']} of {st['providers']} delta={st['delta']} "
                              f"needs={len(st['needs'])} received={bool(st['received'])}")
                    after = [(st, _api(node, "GET", "/v1/market/status")) for st, node in zip(statuses, nodes)]
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - started
            time.sleep(quiet_s)
            quiet = [(_api(node, "GET", "/v1/allocation"), _api(node, "GET", "/v1/market/status")) for node in nodes]
            raw = _empty_record_bytes(after[0][0]["stamp"])
            subscribed = sum(len(a.get("subscribed", ())) for a, _ in quiet) / n
            allocated = sum(a["allocated"] for a, _ in after) / max(1, sum(1 for a, _ in after if a["mine"]))
        finally:
            net.stop(10)
    sent = [a["bytes_sent"] - b["bytes_sent"] for (a, _), (b, _) in zip(after, before)]
    market = [am.get("bytes_sent", 0) - bm.get("bytes_sent", 0) for (_, am), (_, bm) in zip(after, before)]
    rounds = [a["rounds"] - b["rounds"] for (a, _), (b, _) in zip(after, before)]
    out_of_step = sum(a["out_of_step"] - b["out_of_step"] for (a, _), (b, _) in zip(after, before))
    per_round = sum(s / max(1, r) for s, r in zip(sent, rounds)) / n
    market_per_round = sum(s / max(1, r) for s, r in zip(market, rounds)) / n
    idle = sum(q["bytes_sent"] - a["bytes_sent"] for (q, _), (a, _) in zip(quiet, after)) / n / quiet_s
    idle_market = sum(qm.get("bytes_sent", 0) - am.get("bytes_sent", 0)
                      for (_, qm), (_, am) in zip(quiet, after)) / n / quiet_s
    idle_by = {k: sum(q.get("bytes_by", {}).get(k, 0) - a.get("bytes_by", {}).get(k, 0)
                      for (q, _), (a, _) in zip(quiet, after)) / n / quiet_s
               for k in quiet[0][0].get("bytes_by", {})}
    who = "all recognising all" if recognised is None else f"each recognising {recognised}"
    label = f"devnet {n} nodes, {'all' if recognised is None else recognised} recognised"
    print(f"devnet: {n} nodes, {recipients} with a standing need, {who}; converged in {seconds:.1f} s "
          f"({out_of_step} rounds computed past the wait's bound), {subscribed:.1f} peers subscribed to per node")
    print(f"  allocation bytes per node per round  {per_round:10.1f}   ({per_round / raw:.2f} x one empty signed "
          f"state message, {raw} B; over {sum(rounds) / n:.1f} rounds each)")
    print(f"  market bytes per node per round      {market_per_round:10.1f}")
    print(f"  after convergence, per node          {idle:10.1f} B/s allocation, {idle_market:.1f} B/s market"
          + (f" (allocation: {', '.join(f'{k} {v:.1f}' for k, v in idle_by.items())})" if idle_by else ""))
    REPORT.add(f"{label}: raw empty signed state message", raw, "B")
    REPORT.add(f"{label}: allocation bytes per node per round", per_round, "B")
    REPORT.add(f"{label}: market bytes per node per round", market_per_round, "B")
    REPORT.add(f"{label}: seconds to converge", seconds, "s")
    REPORT.add(f"{label}: anti-entropy allocation bytes per node per second", idle, "B/s")
    REPORT.add(f"{label}: anti-entropy market bytes per node per second", idle_market, "B/s")
    return {"nodes": n, "recognised": "all" if recognised is None else recognised, "seconds": seconds,
            "converged": converged,
            "subscribed": subscribed, "rounds": sum(rounds) / n, "allocation": per_round, "market": market_per_round,
            "raw": raw, "idle": idle, "idle_market": idle_market}


def devnet_table(rows: list[dict]) -> None:
    print("devnet traffic: bytes each node sends per allocation round until converged, and per second after")
    print(f"  {'nodes':>5} {'recognised':>10} {'subscribed':>10} {'rounds':>6} {'alloc B/round':>13} "
          f"{'x raw':>6} {'market B/round':>14} {'alloc B/s after':>15} {'market B/s after':>16} {'converged':>9}")
    for r in rows:
        print(f"  {r['nodes']:>5} {r['recognised']:>10} {r['subscribed']:>10.1f} {r['rounds']:>6.1f} "
              f"{r['allocation']:>13.1f} {r['allocation'] / r['raw']:>6.2f} {r['market']:>14.1f} {r['idle']:>15.1f} "
              f"{r['idle_market']:>16.1f} {r['seconds']:>8.1f}s" + ("" if r["converged"] else " (did not converge)"))


def _empty_record_bytes(stamp_hex: str) -> int:
    """Bytes of a signed allocation state with no allocation, at a stamp of this network: the least a
    node publishes."""
    from xsc.allocation import AllocationState
    from xsc.allocation.core.records import sign_state
    from xsc.identity import Identity

    empty = AllocationState.model_construct(provider="", slot_allocations=(), wanted=(), converged=True,
                                            convergence_history=())
    record = sign_state(Identity.generate(), empty, stamp=Stamp.decode(bytes.fromhex(stamp_hex)),
                        timestamp=int(time.time() * 1000))
    return len(json.dumps({"states": [record.to_json()], "receipts": []}, separators=(",", ":")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default="compute,rounds,traffic,events",
                        help="comma-separated sections: compute, rounds, traffic, events, devnet (node processes)")
    parser.add_argument("--nodes", type=int, default=6, help="node processes of the devnet section")
    parser.add_argument("--recognised", default="all",
                        help="devnet: comma-separated counts of peers each node recognises (all: every other), "
                             "e.g. 1,2,5")
    parser.add_argument("--large", type=int, default=0,
                        help="devnet: also run a devnet of this many nodes with the same recognition counts")
    parser.add_argument("--workers", type=int, default=2, help="processes for the rounds simulator")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if "compute" in only:
        if args.quick:
            bench_one_provider(20, 200, 10, repeat=3)
            bench_network(100, 10, 10)
        else:
            bench_one_provider(100, 1_000, 10, repeat=7)
            bench_network(1_000, 10, 10)
    if "rounds" in only:
        bench_rounds(100, 5, 5, 1, 50, None)
        if args.quick:
            bench_rounds(300, 5, 1, args.workers, 100, 2.0)
        else:
            bench_rounds(1_000, 5, 1, args.workers, 100, None)
            bench_rounds(10_000, 3, 1, args.workers, None, 2.0)
    if "traffic" in only:
        if args.quick:
            bench_traffic(200, [2, 5, 10], [100, 200], 5, args.workers)
        else:
            bench_traffic(1_000, [2, 5, 10, 20], [250, 500, 1_000], 10, args.workers)
    if "events" in only:
        bench_events(30 if args.quick else 100, 5, 5)
    if "devnet" in only:
        counts = [None if c == "all" else int(c) for c in args.recognised.split(",")]
        rows = []
        for size in [args.nodes] + ([args.large] if args.large else []):
            for count in counts:
                rows.append(bench_devnet(size, min(3, size - 1), count))
        devnet_table(rows)
    REPORT.write()


if __name__ == "__main__":
    main()
