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

With `workers` > 1 the participants are split over that many forked processes (participant i of
the sorted list to part i mod W), each running both sides for its own: its providers' previous
states, its recipients' inboxes, commitments and receipts, and a copy of every published
commitment and receipt.  A round is two steps: the providers compute, and their messages for
recipients of other parts go out; then the recipients run, and what they publish goes out.  This
process only passes the pickled bytes on and adds up the parts' figures, so both sides use all
the workers.  The run is the same, to the last receipt, with any number of workers.

Traffic (with `traffic=True`): the bytes a node sends in a round, as compact JSON: a provider's
message to each recipient it allocates to or asks (allocations and requests for that recipient,
its stamp and time), only when they changed; a recipient's receipt to each provider it names,
when it changed; a commitment with a new damping factor to each provider the recipient names.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import pickle
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler

from .. import codec
from .core.convergence import NETWORK_QUORUM
from .core.models import AllocationState, Commitment
from .core.rounds import Receipt, provider_round, recipient_round
from .core.simulate import SimConfig, random_commitments

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
    """CPU time on the round's critical path: this process's (passing messages on) plus, for
    each of the round's two steps (providers, recipients), the busiest worker's (all of it is
    this process's with one worker).  What the round takes on idle cores, whatever else the
    machine runs."""
    worker_cpu_seconds: float = 0.0
    """The workers' part of it: the busiest worker of each step, added (0 with one worker)."""


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
    return len(codec.dumps(value))


def _receipt_json(r: Receipt) -> dict:
    return {"recipient": r.recipient, "stamp": r.stamp.encode().hex(), "timestamp": r.timestamp,
            "damping_factor": str(r.damping_factor),
            "needs": {nid: [e.quantity, e.total, e.by_provider, list(e.wanting)] for nid, e in r.needs.items()}}


class _Part:
    """Some participants, both sides: the providers' previous states, and the recipients' inboxes,
    commitments and receipts; with a copy of every published commitment and receipt (what its
    providers read).  Participant i of the sorted list belongs to part i mod (number of parts).

    A round runs in two steps.  `providers`: the changes other parts published last round come
    in, the providers compute, and their messages to each recipient are kept here or returned
    for the recipient's part.  `recipients`: the messages of the other parts come in, every
    recipient whose inbox changed runs `recipient_round`, and what it publishes is returned for
    the other parts (and applied here)."""

    def __init__(self, index: int, parts: int, ids: list[str], network: dict[str, Commitment], traffic: bool) -> None:
        self.index, self.parts = index, parts
        self.owner = {pid: i % parts for i, pid in enumerate(ids)}
        mine = ids[index::parts]
        self.providers = [p for p in mine if network[p].capacity_slots]
        self.network = network
        self.local: dict[str, Commitment] = {p: network[p] for p in mine}
        self.stamps = {p: network[p].stamp for p in mine}
        self.receipts: dict[str, Receipt] = {}
        self.states: dict = {}
        self.sent: dict[str, dict[str, tuple]] = {}  # provider -> recipient -> what it last sent
        self.traffic = traffic
        self.beyond: dict[str, int] = {}  # provider -> units its slots give beyond their quantity
        self.readers: dict[str, list[str]] | None = None  # participant -> my providers recognising it
        self.converged: dict[str, bool] = {}
        # The recipients' side: provider -> units per need slot, provider -> asked need slot ids.
        self.inbox: dict[str, dict[str, dict[str, int]]] = {}
        self.asks: dict[str, dict[str, list[str]]] = {}
        self.named: dict[str, set[str]] = {}  # recipient -> providers its receipt goes to
        self.over: dict[str, int] = {}
        self.over_total = 0
        self.mail: list[tuple] = []  # (recipient, provider, units or None, asks or None) kept here
        self.changed_receipts: dict[str, Receipt] = {}
        self.changed_commitments: dict[str, Commitment] = {}

    def providers_round(self, now: int, receipts: dict[str, Receipt],
                        commitments: dict[str, Commitment]) -> tuple[tuple, dict[int, list]]:
        """The providers' side.  `receipts`, `commitments`: what the other parts published last
        round (this part's own changes are applied already).  Returns (summary: computations,
        providers whose messages changed, converged providers, largest and every denominator
        change, bytes sent, units beyond capacity; the messages for each other part).

        A provider computes when something it reads changed (the commitment or receipt of a
        participant it recognises, or its own commitment) or its last state had not converged;
        otherwise its answer would be the same, and it stays as it is (a node recomputes on
        change, not on a clock)."""
        self.receipts.update(receipts)
        self.network.update(commitments)
        dirty = self._dirty({**self.changed_receipts, **receipts}, {**self.changed_commitments, **commitments})
        self.changed_receipts, self.changed_commitments = {}, {}
        outgoing: dict[int, list] = {}
        self.mail = []
        computations = moved = nbytes = 0
        delta_max = 0.0
        deltas: list[float] = []
        for pid in self.providers:
            if pid not in dirty:
                continue
            computations += 1
            prev = self.states.get(pid)
            state = provider_round(self.network[pid], self.network, self.receipts, previous=prev, now_ms=now)
            self.states[pid] = state
            self.converged[pid] = state.converged
            delta = float(state.convergence_history[-1].delta) if prev is not None else 1.0
            delta_max = max(delta_max, delta)
            deltas.append(delta)
            if prev is not None and state.slot_allocations == prev.slot_allocations and state.wanted == prev.wanted:
                continue
            moved += 1
            nbytes += self._send(pid, state, now, outgoing)
        summary = (computations, moved, sum(self.converged.values()), delta_max, deltas, nbytes,
                   sum(self.beyond.values()))
        return summary, outgoing

    def _dirty(self, receipts: dict[str, Receipt], commitments: dict[str, Commitment]) -> set[str]:
        """The providers to compute this round: every one the first time; then those that read a changed receipt
        or commitment, whose own commitment changed, or that had not converged."""
        if self.readers is None:
            self.readers = {}
            for pid in self.providers:
                for r in self.network[pid].recognition:
                    self.readers.setdefault(r, []).append(pid)
            return set(self.providers)
        dirty = {pid for pid, s in self.states.items() if not s.converged}
        for changed in (receipts, commitments):
            for r in changed:
                dirty.update(self.readers.get(r, ()))
        dirty.update(p for p in commitments if p in self.states)
        return dirty

    def _send(self, pid: str, state: AllocationState, now: int, outgoing: dict[int, list]) -> int:
        """Provider `pid`'s new allocations, as messages to its recipients' parts (this part's in `self.mail`);
        the bytes they would take on the wire (counted when `traffic`)."""
        owner, me, mail = self.owner, self.index, self.mail
        nbytes = 0
        used: dict[str, int] = {}
        for a in state.slot_allocations:
            used[a.capacity_slot] = used.get(a.capacity_slot, 0) + a.quantity
        self.beyond[pid] = sum(max(0, used.get(c.id, 0) - c.quantity) for c in self.network[pid].capacity_slots)
        per: dict[str, tuple[dict, list]] = {}
        records: dict[str, list] = {}
        for a in state.slot_allocations:
            units, _ = per.setdefault(a.recipient, ({}, []))
            units[a.need_slot] = units.get(a.need_slot, 0) + a.quantity
            if self.traffic:
                records.setdefault(a.recipient, []).append([a.capacity_slot, a.need_slot, a.quantity, a.tier])
        for r, nid in state.wanted:
            per.setdefault(r, ({}, []))[1].append(nid)
        before = self.sent.get(pid, {})
        if self.traffic:
            head = {"provider": pid, "stamp": state.stamp.encode().hex(), "timestamp": now}
            for r in per.keys() | before.keys():
                now_sent = per.get(r)
                if now_sent != before.get(r):
                    asks = now_sent[1] if now_sent else []
                    nbytes += _dumps({**head, "allocations": records.get(r, []), "wanted": asks})
        # To every recipient named now or last time: its part (units, asks), or a withdrawal.
        for r in before:
            if r not in per:
                part = owner[r]
                (mail if part == me else outgoing.setdefault(part, [])).append((r, pid, None, None))
        for r, (units, asks) in per.items():
            part = owner[r]
            (mail if part == me else outgoing.setdefault(part, [])).append((r, pid, units, asks))
        self.sent[pid] = per
        return nbytes

    def recipients_round(self, now: int, mail: list[tuple]) -> tuple[tuple, dict, dict]:
        """The recipients' side, on this round's messages to this part's recipients (this part's
        own and `mail` from the others).  Returns (summary: over-allocation of this part's
        recipients, bytes sent, receipts and commitments published; the receipts and the
        commitments it published, for the other parts)."""
        inbox, asks = self.inbox, self.asks
        touched: set[str] = set()
        for messages in (self.mail, mail):
            for r, pid, units, wanted in messages:
                box = inbox.get(r)
                if box is None:
                    box = inbox[r] = {}
                    asks[r] = {}
                if units:
                    box[pid] = units
                else:
                    box.pop(pid, None)
                if wanted:
                    asks[r][pid] = wanted
                else:
                    asks[r].pop(pid, None)
                touched.add(r)
        self.mail = []
        nbytes = 0
        receipts, commitments = self.changed_receipts, self.changed_commitments
        published = self.network
        for r in sorted(touched):
            commitment = self.local[r]
            if not commitment.need_slots:
                continue
            previous = self.receipts.get(r)
            damped, receipt = recipient_round(commitment, inbox[r], asks[r], now, previous=previous)
            self.local[r] = damped
            self.over_total += receipt.over_allocation - self.over.get(r, 0)
            self.over[r] = receipt.over_allocation
            audience = set(inbox[r]) | set(asks[r])
            if damped.damping_factor != published[r].damping_factor:
                self.stamps[r] = stamp = self.stamps[r].event()
                published[r] = commitments[r] = damped.model_copy(update={"stamp": stamp, "timestamp": now})
                if self.traffic:
                    nbytes += _dumps(published[r].model_dump(mode="json")) * len(audience)
            if previous is None or receipt.needs != previous.needs:
                self.receipts[r] = receipts[r] = receipt
                if self.traffic:
                    nbytes += _dumps(_receipt_json(receipt)) * len(audience | self.named.get(r, set()))
            self.named[r] = audience
        return (self.over_total, nbytes, len(receipts), len(commitments)), receipts, commitments

    def collect(self) -> tuple:
        """What the result needs: units per need slot (recipient, id), recipients each provider
        named, this part's recipients' last receipts, commitments republished."""
        totals: dict[tuple[str, str], int] = {}
        for r, parts in self.inbox.items():
            for units in parts.values():
                for nid, q in units.items():
                    totals[(r, nid)] = totals.get((r, nid), 0) + q
        named = {p: len(self.sent.get(p, ())) for p in self.providers}
        receipts = {r: self.receipts[r] for r in self.local if r in self.receipts}
        published = {r: self.network[r] for r in self.local}
        return totals, named, receipts, published


def _worker(conn, part: _Part) -> None:
    # The rounds make no reference cycles (`tests/allocation/test_allocation_scale.py` checks it:
    # provider_round breaks its view's), so reference counting frees everything and the cyclic
    # garbage collector only walks the parts' live states, receipts and inboxes over and over (at
    # 3,000 x 3 in one process, 40% of the CPU time went to it; still 15% with the survivors
    # of each step frozen).  A worker lives for one simulation.
    gc.disable()
    while True:
        job = conn.recv()
        if job is None:
            break
        t0 = time.process_time()
        step = job[0]
        if step == "providers":
            _, now, blobs = job
            receipts: dict = {}
            commitments: dict = {}
            for blob in blobs:
                r, c = pickle.loads(blob)
                receipts.update(r)
                commitments.update(c)
            summary, outgoing = part.providers_round(now, receipts, commitments)
            reply = (summary, {k: pickle.dumps(v, pickle.HIGHEST_PROTOCOL) for k, v in outgoing.items()})
        elif step == "recipients":
            _, now, blobs = job
            mail: list = []
            for blob in blobs:
                mail.extend(pickle.loads(blob))
            summary, receipts, commitments = part.recipients_round(now, mail)
            reply = (summary, pickle.dumps((receipts, commitments), pickle.HIGHEST_PROTOCOL))
        else:
            reply = part.collect()
        conn.send((reply, time.process_time() - t0))
    conn.close()


class _Pool:
    """The participants split over forked processes (or all in one part here, with one worker).

    Between the steps, this process only passes on what the parts send each other, as the bytes
    they pickled: the parts do the work, on both cores."""

    def __init__(self, ids: list[str], network: dict[str, Commitment], workers: int, traffic: bool) -> None:
        self.local: _Part | None = None
        self.procs: list = []
        if workers <= 1 or len(ids) < 2 * workers:
            self.local = _Part(0, 1, ids, dict(network), traffic)
            return
        ctx = multiprocessing.get_context("fork")
        # The network is read by every round and freed by none: frozen before the fork, the
        # workers' garbage collector never walks it again, nor touches its pages (one trial at
        # 10,000 x 3 under load: the largest of 6 rounds went from 5.5 to 4.2 s of CPU).
        gc.collect()
        gc.freeze()
        try:
            for w in range(workers):
                part = _Part(w, workers, ids, network, traffic)
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, part), daemon=True)
                proc.start()
                child.close()
                self.procs.append((proc, parent))
        finally:
            gc.unfreeze()  # (this process keeps collecting as before)
        self.published: list[bytes] = []  # per part: what it published last round, pickled

    def _ask(self, jobs: list) -> tuple[list, float]:
        for (_, conn), job in zip(self.procs, jobs):
            conn.send_bytes(bytes(ForkingPickler.dumps(job)))
        replies, slowest = [], 0.0
        for _, conn in self.procs:
            reply, cpu = conn.recv()
            replies.append(reply)
            slowest = max(slowest, cpu)
        return replies, slowest

    def round(self, now: int) -> tuple[tuple, tuple, float]:
        """One round: (providers' summary, recipients' summary, both summed over the parts; the
        CPU time of the busiest part in each step, added: 0 when local)."""
        if self.local is not None:
            summary, _ = self.local.providers_round(now, {}, {})
            summary_r, _, _ = self.local.recipients_round(now, [])
            return summary, summary_r, 0.0
        n = len(self.procs)
        replies, cpu_providers = self._ask(
            [("providers", now, [b for k, b in enumerate(self.published) if k != w]) for w in range(n)])
        replies_r, cpu_recipients = self._ask(
            [("recipients", now, [out[w] for k, (_, out) in enumerate(replies) if k != w and w in out])
             for w in range(n)])
        self.published = [blob for _, blob in replies_r]
        return (_add(s for s, _ in replies), _add(s for s, _ in replies_r), cpu_providers + cpu_recipients)

    def collect(self) -> list[tuple]:
        if self.local is not None:
            return [self.local.collect()]
        replies, _ = self._ask([("collect",)] * len(self.procs))
        return replies

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


def _add(summaries) -> tuple:
    """Summaries of the parts, added field by field (the providers' largest denominator change is
    a maximum, their list of changes a concatenation)."""
    rows = list(summaries)
    if len(rows) == 1:
        return rows[0]
    if len(rows[0]) == 4:  # recipients
        return tuple(sum(column) for column in zip(*rows))
    out = [sum(column) if k not in (3, 4) else None for k, column in enumerate(zip(*rows))]
    out[3] = max(row[3] for row in rows)
    out[4] = [d for row in rows for d in row[4]]
    return tuple(out)


class RoundSimulation:
    def __init__(self, config: SimConfig, commitments: list[Commitment] | None = None) -> None:
        config.check("rounds")
        self.config = config
        commitments = commitments if commitments is not None else random_commitments(config)
        self.published: dict[str, Commitment] = {c.participant: c for c in commitments}

    def run(self) -> RoundResult:
        config = self.config
        published = self.published
        ids = sorted(published)
        providers = [p for p in ids if published[p].capacity_slots]
        pool = _Pool(ids, published, config.workers, config.traffic)
        timeline: list[RoundSample] = []
        quiet = False
        computations = 0
        t = 0
        try:
            while t < config.max_rounds:
                t += 1
                now = t * ROUND_MS
                started = time.perf_counter()
                cpu_started = time.process_time()
                (done, moved, n_converged, delta, deltas, sent, beyond), \
                    (over, sent_r, n_receipts, n_commitments), worker_cpu = pool.round(now)
                computations += done
                n_providers = max(1, len(providers))
                fraction = n_converged / len(providers) if providers else 1.0
                timeline.append(RoundSample(
                    round=t, converged_fraction=fraction, delta=delta, delta_mean=math.fsum(deltas) / n_providers,
                    over_allocation=over,
                    changed=moved, bytes_per_node=(sent + sent_r) / len(published) if config.traffic else None,
                    seconds=time.perf_counter() - started,
                    cpu_seconds=time.process_time() - cpu_started + worker_cpu,
                    worker_cpu_seconds=worker_cpu))
                if not moved and not n_receipts and not n_commitments and n_converged == len(providers):
                    quiet = True
                    break
            collected = pool.collect()
        finally:
            pool.close()
        totals: dict = {}
        named: dict = {}
        receipts: dict = {}
        for part_totals, part_named, part_receipts, republished in collected:
            totals.update(part_totals)
            named.update(part_named)
            receipts.update(part_receipts)
            published.update(republished)
        # For inspection (tests): the last receipts, and the providers' last states when they
        # ran in this process.
        self.receipts = receipts
        self.states = pool.local.states if pool.local is not None else None
        return self._result(providers, timeline, quiet, computations, totals, named, beyond if timeline else 0)

    def _result(self, providers, timeline, quiet, computations, totals, named_counts, beyond) -> RoundResult:
        quorum = float(NETWORK_QUORUM)
        rounds = None
        for s in reversed(timeline):
            if s.converged_fraction + 1e-12 < quorum:
                break
            rounds = s.round
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
        named = [named_counts.get(p, 0) for p in providers]
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
    from .core.simulate import _pyplot, _save

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
