"""Synchronous rounds: the allocator at scale, on exactly the functions a node calls.

Round t (simulated time t s):
  1. every provider runs `provider_round` on the same view: the published commitments and the
     receipts of round t - 1 (none in round 1: every provider only asks);
  2. each provider's allocations and requests reach the recipients they name (and those they
     named last time, to withdraw), and every recipient whose inbox changed runs
     `recipient_round`: it totals, updates its damping, and publishes its receipt (to the
     providers it names) if it changed, and its commitment if its damping factor changed.
The run stops when a round changes nothing and every provider has converged (quiet: nothing
would compute again), or after `max_rounds`.

A recipient whose inbox did not change keeps its receipt and skips its damping sample: the sample
would repeat the last one, and runs of equal samples are merged anyway.

With `workers` > 1 the providers are split over that many forked processes, each holding its
providers' previous states and a copy of the commitments and receipts, to which only what
changed is sent each round; the recipients' side runs in this process.

Traffic (with `traffic=True`): the bytes a node sends in a round, as compact JSON: a provider's
message to each recipient it allocates to or asks (allocations and requests for that recipient,
its stamp and time), only when they changed; a recipient's receipt to each provider it names,
when it changed; a commitment with a new damping factor to each provider the recipient names.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from typing import Iterable

from .convergence import NETWORK_QUORUM
from .models import Commitment
from .rounds import Receipt, provider_round, recipient_round
from .simulate import SimConfig, random_commitments

ROUND_MS = 1_000


@dataclass(frozen=True)
class RoundSample:
    round: int
    converged_fraction: float
    """Share of the providers whose denominators moved by <= 0.001 (relative) this round."""
    delta: float
    """The largest relative denominator change of any provider this round (1 for a first computation)."""
    delta_mean: float
    """The mean of that change over all providers (0 for one that had nothing new to compute)."""
    over_allocation: int
    """Units beyond need, over all need slots, by the recipients' totals this round."""
    changed: int
    """Providers whose allocations or requests changed this round."""
    bytes_per_node: float | None
    seconds: float
    """Wall time of the round."""
    cpu_seconds: float
    """CPU time on the round's critical path: this process's (sending, the recipients' side)
    plus the busiest worker's (all of it with one worker).  What the round takes on idle cores,
    whatever else the machine runs."""
    worker_cpu_seconds: float = 0.0
    """The busiest worker's part of it (0 with one worker: all of it is this process's)."""


@dataclass
class RoundResult:
    config: SimConfig
    converged: bool
    quiet: bool
    rounds: int
    """Rounds to convergence: the first round from which >= 80% of providers stayed converged."""
    rounds_run: int
    providers: int
    computations: int
    total_capacity: int
    total_need: int
    allocated: int
    over_allocation: int
    max_over_allocation: int
    unmet_need: int
    capacity_over_quantity: int
    timeline: list[RoundSample]
    peak_rss_bytes: int
    recognised_mean: float
    recipients_mean: float = 0.0
    """Mean number of recipients each provider named (allocated to or asked) in the last round."""
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        seconds = [s.seconds for s in self.timeline]
        cpu = [s.cpu_seconds for s in self.timeline]
        traffic = [s.bytes_per_node for s in self.timeline if s.bytes_per_node is not None]
        return {
            "mode": "rounds",
            "participants": self.config.participants,
            "slots": self.config.slots,
            "seed": self.config.seed,
            "providers": self.providers,
            "recognised_peers_mean": round(self.recognised_mean, 2),
            "converged": self.converged,
            "quiet": self.quiet,
            "rounds_to_convergence": self.rounds,
            "rounds_run": self.rounds_run,
            "computations": self.computations,
            "total_capacity": self.total_capacity,
            "total_need": self.total_need,
            "allocated": self.allocated,
            "over_allocation": self.over_allocation,
            "max_over_allocation_in_any_round": self.max_over_allocation,
            "capacity_allocated_beyond_quantity": self.capacity_over_quantity,
            "unmet_need": self.unmet_need,
            "seconds_per_round_mean": round(sum(seconds) / len(seconds), 4) if seconds else None,
            "seconds_per_round_max": round(max(seconds), 4) if seconds else None,
            "cpu_seconds_per_round_mean": round(sum(cpu) / len(cpu), 4) if cpu else None,
            "cpu_seconds_per_round_max": round(max(cpu), 4) if cpu else None,
            "bytes_per_node_per_round": round(sum(traffic) / len(traffic), 1) if traffic else None,
            "peak_rss_mib": round(self.peak_rss_bytes / 2**20, 1),
        }


def _dumps(value) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _receipt_json(r: Receipt) -> dict:
    return {"recipient": r.recipient, "stamp": r.stamp.encode().hex(), "timestamp": r.timestamp,
            "damping_factor": str(r.damping_factor),
            "needs": {nid: [e.quantity, e.total, e.by_provider, list(e.wanting)] for nid, e in r.needs.items()}}


class _Providers:
    """The providers' side for some providers: their previous states and a view of the network."""

    def __init__(self, ids: list[str], network: dict[str, Commitment], traffic: bool) -> None:
        self.ids = ids
        self.network = network
        self.receipts: dict[str, Receipt] = {}
        self.states: dict = {}
        self.sent: dict[str, dict[str, tuple]] = {}  # provider -> recipient -> what it last sent
        self.traffic = traffic
        self.beyond: dict[str, int] = {}  # provider -> units its slots give beyond their quantity
        self.readers: dict[str, list[str]] | None = None  # participant -> my providers recognising it

    def round(self, now: int, receipts: dict[str, Receipt], commitments: dict[str, Commitment]) -> list[tuple]:
        """[(provider, {recipient: ({need: units}, [asked need ids])} or None if unchanged,
        converged, delta, bytes sent, units beyond capacity)] for the providers that computed.

        A provider computes when something it reads changed (the commitment or receipt of a
        participant it recognises, or its own commitment) or its last state had not converged;
        otherwise its answer would be the same, and it stays as it is (a node recomputes on
        change, not on a clock)."""
        self.receipts.update(receipts)
        self.network.update(commitments)
        if self.readers is None:
            self.readers = {}
            for pid in self.ids:
                for r in self.network[pid].recognition:
                    self.readers.setdefault(r, []).append(pid)
            dirty = set(self.ids)
        else:
            dirty = {pid for pid, s in self.states.items() if not s.converged}
            for changed in (receipts, commitments):
                for r in changed:
                    dirty.update(self.readers.get(r, ()))
            dirty.update(p for p in commitments if p in self.states)
        out = []
        for pid in self.ids:
            if pid not in dirty:
                continue
            prev = self.states.get(pid)
            state = provider_round(self.network[pid], self.network, self.receipts, previous=prev, now_ms=now)
            self.states[pid] = state
            delta = float(state.convergence_history[-1].delta) if prev is not None else 1.0
            if prev is not None and state.slot_allocations == prev.slot_allocations and state.wanted == prev.wanted:
                out.append((pid, None, state.converged, delta, 0, self.beyond.get(pid, 0)))
                continue
            used: dict[str, int] = {}
            for a in state.slot_allocations:
                used[a.capacity_slot] = used.get(a.capacity_slot, 0) + a.quantity
            self.beyond[pid] = sum(max(0, used.get(c.id, 0) - c.quantity) for c in self.network[pid].capacity_slots)
            per: dict[str, tuple[dict, list]] = {}
            records: dict[str, list] = {}
            for a in state.slot_allocations:
                units, _ = per.setdefault(a.recipient, ({}, []))
                units[a.need_slot] = units.get(a.need_slot, 0) + a.quantity
                records.setdefault(a.recipient, []).append([a.capacity_slot, a.need_slot, a.quantity, a.tier])
            for r, nid in state.wanted:
                per.setdefault(r, ({}, []))[1].append(nid)
            nbytes = 0
            if self.traffic:
                before = self.sent.get(pid, {})
                head = {"provider": pid, "stamp": state.stamp.encode().hex(), "timestamp": now}
                for r in per.keys() | before.keys():
                    now_sent = per.get(r)
                    if now_sent != before.get(r):
                        asks = now_sent[1] if now_sent else []
                        nbytes += _dumps({**head, "allocations": records.get(r, []), "wanted": asks})
            self.sent[pid] = per
            out.append((pid, per, state.converged, delta, nbytes, self.beyond[pid]))
        return out


def _worker(conn, part: _Providers) -> None:
    while True:
        job = conn.recv()
        if job is None:
            break
        t0 = time.process_time()
        results = part.round(*job)
        conn.send((results, time.process_time() - t0))
    conn.close()


class _Pool:
    """The providers split over forked processes (or run here with one worker)."""

    def __init__(self, ids: list[str], network: dict[str, Commitment], workers: int, traffic: bool) -> None:
        self.local = None
        self.procs: list = []
        if workers <= 1 or len(ids) < 2 * workers:
            self.local = _Providers(ids, dict(network), traffic)
            return
        ctx = multiprocessing.get_context("fork")
        for w in range(workers):
            part = _Providers(ids[w::workers], network, traffic)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, part), daemon=True)
            proc.start()
            child.close()
            self.procs.append((proc, parent))

    def round(self, now: int, receipts: dict, commitments: dict) -> tuple[Iterable[tuple], float]:
        """(the providers' results, the largest CPU time a worker spent on them; 0 when local)."""
        if self.local is not None:
            return self.local.round(now, receipts, commitments), 0.0
        job = bytes(ForkingPickler.dumps((now, receipts, commitments)))  # pickled once for all workers
        for _, conn in self.procs:
            conn.send_bytes(job)
        out: list = []
        slowest = 0.0
        for _, conn in self.procs:
            results, cpu = conn.recv()
            out.extend(results)
            slowest = max(slowest, cpu)
        return out, slowest

    def close(self) -> None:
        for proc, conn in self.procs:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        self.procs = []


class RoundSimulation:
    def __init__(self, config: SimConfig, commitments: list[Commitment] | None = None) -> None:
        config.check("rounds")
        self.config = config
        commitments = commitments if commitments is not None else random_commitments(config)
        self.published: dict[str, Commitment] = {c.participant: c for c in commitments}
        self.local: dict[str, Commitment] = dict(self.published)
        self.stamps = {c.participant: c.stamp for c in commitments}

    def run(self) -> RoundResult:
        config = self.config
        published, local = self.published, self.local
        providers = sorted(p for p, c in published.items() if c.capacity_slots)
        pool = _Pool(providers, published, config.workers, config.traffic)
        receipts: dict[str, Receipt] = {}
        inbox: dict[str, dict[str, dict[str, int]]] = {}
        asks: dict[str, dict[str, list[str]]] = {}
        sent_to: dict[str, set[str]] = {}
        named: dict[str, set[str]] = {}  # recipient -> providers its receipt goes to
        over: dict[str, int] = {}
        converged: dict[str, bool] = {}
        beyond: dict[str, int] = {}
        timeline: list[RoundSample] = []
        quiet = False
        computations = 0
        changed_receipts: dict[str, Receipt] = {}
        changed_commitments: dict[str, Commitment] = {}
        t = 0
        try:
            while t < config.max_rounds:
                t += 1
                now = t * ROUND_MS
                started = time.perf_counter()
                cpu_started = time.process_time()
                results, worker_cpu = pool.round(now, changed_receipts, changed_commitments)
                changed_receipts, changed_commitments = {}, {}
                nbytes = 0
                touched: set[str] = set()
                moved = 0
                delta = delta_sum = 0.0
                for pid, per, done, d, sent, over_capacity in results:
                    computations += 1
                    beyond[pid] = over_capacity
                    converged[pid] = done
                    delta = max(delta, d)
                    delta_sum += d
                    nbytes += sent
                    if per is None:
                        continue
                    moved += 1
                    for r in sent_to.get(pid, ()):
                        inbox[r].pop(pid, None)
                        asks[r].pop(pid, None)
                        touched.add(r)
                    for r, (units, wanted) in per.items():
                        if units:
                            inbox.setdefault(r, {})[pid] = units
                        if wanted:
                            asks.setdefault(r, {})[pid] = wanted
                        inbox.setdefault(r, {})
                        asks.setdefault(r, {})
                        touched.add(r)
                    sent_to[pid] = set(per)
                for r in sorted(touched):
                    commitment = local.get(r)
                    if commitment is None or not commitment.need_slots:
                        continue
                    previous = receipts.get(r)
                    damped, receipt = recipient_round(commitment, inbox[r], asks[r], now, previous=previous)
                    local[r] = damped
                    over[r] = receipt.over_allocation
                    audience = set(inbox[r]) | set(asks[r])
                    if damped.damping_factor != published[r].damping_factor:
                        self.stamps[r] = stamp = self.stamps[r].event()
                        published[r] = changed_commitments[r] = damped.model_copy(
                            update={"stamp": stamp, "timestamp": now})
                        if config.traffic:
                            nbytes += _dumps(published[r].model_dump(mode="json")) * len(audience)
                    if previous is None or receipt.needs != previous.needs:
                        receipts[r] = changed_receipts[r] = receipt
                        if config.traffic:
                            nbytes += _dumps(_receipt_json(receipt)) * len(audience | named.get(r, set()))
                    named[r] = audience
                n_providers = max(1, len(providers))
                fraction = sum(converged.values()) / len(providers) if providers else 1.0
                timeline.append(RoundSample(
                    round=t, converged_fraction=fraction, delta=delta, delta_mean=delta_sum / n_providers,
                    over_allocation=sum(over.values()),
                    changed=moved, bytes_per_node=nbytes / len(published) if config.traffic else None,
                    seconds=time.perf_counter() - started,
                    cpu_seconds=time.process_time() - cpu_started + worker_cpu,
                    worker_cpu_seconds=worker_cpu))
                if not moved and not changed_receipts and not changed_commitments and all(converged.values()):
                    quiet = True
                    break
        finally:
            pool.close()
        # For inspection (tests): the last receipts, and the providers' last states when they
        # ran in this process.
        self.receipts = receipts
        self.states = pool.local.states if pool.local is not None else None
        return self._result(providers, timeline, quiet, computations, inbox, sent_to, sum(beyond.values()))

    def _result(self, providers, timeline, quiet, computations, inbox, sent_to, beyond) -> RoundResult:
        quorum = float(NETWORK_QUORUM)
        rounds = None
        for s in reversed(timeline):
            if s.converged_fraction + 1e-12 < quorum:
                break
            rounds = s.round
        totals = {}
        for r, parts in inbox.items():
            for units in parts.values():
                for nid, q in units.items():
                    totals[(r, nid)] = totals.get((r, nid), 0) + q
        over = unmet = 0
        for c in self.published.values():
            for n in c.need_slots:
                got = totals.get((c.participant, n.id), 0)
                over += max(0, got - n.quantity)
                unmet += max(0, n.quantity - got)
        allocated = sum(totals.values())
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        recognised = [len(c.recognition) for c in self.published.values()]
        named = [len(sent_to.get(p, ())) for p in providers]
        return RoundResult(
            config=self.config,
            converged=rounds is not None,
            quiet=quiet,
            rounds=rounds if rounds is not None else len(timeline),
            rounds_run=len(timeline),
            providers=len(providers),
            computations=computations,
            total_capacity=sum(c.quantity for p in self.published.values() for c in p.capacity_slots),
            total_need=sum(n.quantity for p in self.published.values() for n in p.need_slots),
            allocated=allocated,
            over_allocation=over,
            max_over_allocation=max((s.over_allocation for s in timeline), default=0),
            unmet_need=unmet,
            capacity_over_quantity=beyond,
            timeline=timeline,
            peak_rss_bytes=max(usage, children) * 1024,
            recognised_mean=sum(recognised) / len(recognised) if recognised else 0.0,
            recipients_mean=sum(named) / len(named) if named else 0.0,
            extra={"pid": os.getpid()},
        )


def simulate_rounds(participants: int, slots: int, seed: int, **options) -> RoundResult:
    """Run one synchronous-rounds simulation (see the module docstring); deterministic for a seed."""
    return RoundSimulation(SimConfig(participants, slots, seed, **options)).run()


def plot_rounds(result: RoundResult, path: str) -> None:
    """Convergence per round as a PNG: the largest and the mean denominator change (log scale,
    with the 0.001 line) and the share of converged providers (with the 80% line) above, the over-allocation
    below."""
    from .simulate import _pyplot, _save

    plt = _pyplot()
    rounds = [s.round for s in result.timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    top.step(rounds, [max(s.delta, 1e-6) for s in result.timeline], where="post", label="largest")
    top.step(rounds, [max(s.delta_mean, 1e-6) for s in result.timeline], where="post", label="mean")
    top.legend(loc="lower left", fontsize="small")
    top.axhline(0.001, linestyle="--", color="grey", linewidth=1)
    top.set_yscale("log")
    top.set_ylabel("denominator change")
    share = top.twinx()
    share.step(rounds, [s.converged_fraction for s in result.timeline], where="post", color="tab:green",
               label="providers converged")
    share.axhline(0.8, linestyle=":", color="tab:green", linewidth=1)
    share.set_ylim(-0.02, 1.02)
    share.set_ylabel("providers converged")
    bottom.step(rounds, [s.over_allocation for s in result.timeline], where="post", color="tab:red")
    bottom.set_ylabel("over-allocation (units)")
    bottom.set_xlabel("round")
    c = result.config
    fig.suptitle(f"xsc allocation simulate: {c.participants} participants, {c.slots} slots, seed {c.seed}, rounds")
    fig.tight_layout()
    _save(fig, plt, path)
