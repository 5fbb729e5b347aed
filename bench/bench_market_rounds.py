"""A market round's CPU on a node whose book holds many participants: with nothing changed, after one offer changed,
and a clearing made from scratch.

Run: .venv/bin/python -m bench.bench_market_rounds [--quick] [--profile]

A node clears its book again in every market round in which the book changed (xsc/market/clearing.py:
`ShownClearing`), at least every second; a network in which every node re-signs its offer every third of
`market.freshness` changes the book of a node holding N participants some N / 20 times a second, so nearly every
round is one after a change.  The book here: N participants, each offering storage for this bucket and the next (two
asks), one in ten with a put's 6 needs open (bids, backed by a credit line), and this node's own put; every peer
known and up.  Times are CPU time of this process (best of a few runs; the machine is shared), each with its ratio
to a raw step measured in the same run: `sorted()` of the book's orders by (price, digest).

  - round, nothing changed: `ShownClearing.now()` with the book as it was (what every idle second costs);
  - round after one offer re-signed: one peer's commitment taken again with the same orders (a new stamp), then
    `now()` (what an idle network's rounds cost: every offer is re-signed to stay current);
  - round after one offer changed: one peer's new commitment taken into the book, then `now()`;
  - round after a probe round, no flip: the peers' state moved, PROBED of them probed and answering as before, none
    came up or went down, then `now()` (what every probe interval costs);
  - round after one peer's probe flipped: a probe round in which one peer went down or came back up, then `now()`;
  - a bootstrap sample after a flip: the recognition of a node that has traded with nobody yet (a sample of every
    peer up, `Recognition.weights`) made again after a probe round in which one peer went down or came back up;
  - full clearing from scratch: who takes part and the clearing made anew (a new `ShownClearing`);
  - a deal's first matching of the book: a put's 6 needs dealt (`Dealing.deal`) by a node that kept no deal yet:
    the whole book matched (`supply.match_spread`), what the first put after a node sees a big book costs;
  - a deal matched after a probe round: a put's 6 needs dealt (`Dealing.deal`) after a probe round that flipped no
    peer and the market round after it, a deal of the same shape matched just before (what every put after a probe
    round costs: its deal is answered by the one kept, unless the probe round changed what it rests on).

`--profile` prints where the round after one change spends its time at the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from xsc.allocation import CapacitySlot, NeedSlot, Stamp
from xsc.config import MarketSection
from xsc.db import open_database
from xsc.identity import Identity
from xsc.market import Ask, Bid, clearing, dealing
from xsc.market import service as market_service
from xsc.market.clearing import ShownClearing
from xsc.market.core.book import MarketCommitment
from xsc.market.dealing import Dealing
from xsc.market.needs import NeedRegistry
from xsc.market.recognition import Recognition

from .report import Report

HOUR = 3600
GIB = 2**30
START = 10**12  # ms: the clock the market reads (held still: no offer goes stale during a run)

EARNERS = 16  # peers this node exchanged money with (its derived recognition is of these)
PROBED = 20  # peers a probe round probes: the neighbours and a sample of the others (xsc/peers/probes.py: `_due`)


class _Peers:
    """Every participant a known peer, up until a probe round finds it down; a probe round moves the state version
    and, as the node's peer service does, says which peers it probed (PROBED of them, each answering as before, and
    those that came up or went down) and which of them flipped."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = set(ids)
        self.order = sorted(ids)
        self.down: set[str] = set()
        self.probes = 0  # probe rounds so far
        self.flips: list[str] = []  # the peers each flip was of, in order (its version: how many came before)
        self.probed: list[str] = []  # the peers each probe was of, in order

    def probe_round(self, flipped: tuple[str, ...] = ()) -> None:
        self.probes += 1
        for p in flipped:
            (self.down.discard if p in self.down else self.down.add)(p)
            self.flips.append(p)
        first = self.probes * PROBED
        self.probed.extend([self.order[(first + k) % len(self.order)] for k in range(PROBED)] + list(flipped))

    def peers(self) -> list:
        return [SimpleNamespace(id=p, url=f"https://{p[:12]}.example:7000") for p in self.order]

    def get(self, node_id: str) -> SimpleNamespace | None:
        return SimpleNamespace(id=node_id, url=f"https://{node_id[:12]}.example:7000") if node_id in self.ids else None

    def state_version(self) -> tuple:
        return (self.probes,)

    def flips_version(self) -> tuple:
        return (0, len(self.flips))

    def flipped_since(self, version: tuple) -> set[str]:
        return set(self.flips[version[1]:])

    def availability_version(self) -> tuple:
        return 0, len(self.probed), 0

    def availability_changed_since(self, version: tuple) -> set[str]:
        return set(self.probed[version[1]:])

    def known(self, node_id: str) -> bool:
        return node_id in self.ids

    def availability(self, node_id: str) -> SimpleNamespace:
        return SimpleNamespace(up=node_id not in self.down, ratio_1h=1.0, ratio_24h=1.0, last_probe=START,
                               up_since=START - 86_400_000, last_audit=None)

    def up(self, node_id: str) -> bool:
        return node_id in self.ids and node_id not in self.down

    def up_peers(self) -> list:
        return [d for d in self.peers() if self.up(d.id)]


class _Backing:
    """Every peer's bids backed (a credit line each), as a recognised neighbourhood's are."""

    version = 0

    @staticmethod
    def backing(owner: str) -> int:
        return 10**15


def _participant(n: int) -> str:
    """A node id (the book looks at ids; `replication.show` checks no signature)."""
    return Identity.generate().id


def _commitment(owner: str, n: int, price: int, timestamp: int, stamp: Stamp) -> MarketCommitment:
    asks = tuple(Ask(slot=CapacitySlot(id=f"storage-{b}", owner=owner, kind="storage", quantity=(64 + n % 512) * GIB,
                                       start=b * HOUR, end=(b + 1) * HOUR), price=price) for b in (0, 1))
    bids = () if n % 10 else tuple(
        Bid(slot=NeedSlot(id=f"put-{n}-{k}", owner=owner, kind="storage", quantity=(1 + n % 64) * 2**20, start=0,
                          end=HOUR), price=2_000 + n % 3_000, group=f"put-{n}") for k in range(6))
    # Built without a signature: the book and the clearing never look at it.
    return MarketCommitment.model_construct(participant=owner, asks=asks, bids=bids, recognition={}, stamp=stamp,
                                            timestamp=timestamp, signature="0" * 128)


def _market(path: Path, ids: list[str]) -> market_service.MarketService:
    db = open_database(path)
    me = Identity.generate()
    config = MarketSection(freshness=60.0, offer_storage=False, offer_compute=False)
    peers = _Peers(ids)
    market = market_service.MarketService(
        config=config, identity=me, db=db, peers=peers, needs=NeedRegistry(db=db, me=me.id, config=config),
        weights=Recognition(db=db, me=me.id, peers=peers), subscribers=None, compute_threads=1,
        storage_usage=lambda: (0, 0), gossip_interval=1.0, credit_lines=_Backing())
    for p in ids[:EARNERS]:  # an established node: it has traded with some of its peers
        market.weights.note_paid(p, 10**6, by_them=True)
    market.replication.show(_commitment(me.id, 0, 1_500, START, Stamp.seed().event()))
    for n, p in enumerate(ids, start=1):
        market.replication.show(_commitment(p, n, 1_000 + (n * 7919) % 3_000, START, Stamp.seed().event()))
    return market


def _best(fn, repeat: int, before=None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _dealt(market: market_service.MarketService, repeat: int, probe_round) -> tuple[float, float]:
    """The CPU seconds of a put's deal that is the first matching of the book (each by a new `Dealing`: no deal kept
    yet), and of one after `probe_round` (and the market round after it), one of the same shape dealt just before."""
    puts = iter(range(10**6))
    loop = asyncio.new_event_loop()

    def put(deals: Dealing) -> None:
        k = next(puts)
        bids = [Bid(slot=NeedSlot(id=f"share-{k}-{i}", owner=market.me, kind="storage", quantity=2**20, start=0,
                                  end=HOUR), price=10**6, group=f"put-{k}") for i in range(6)]
        loop.run_until_complete(deals.deal(bids))

    def dealing() -> Dealing:
        return Dealing(market=market, needs=market.needs, allocated=None)

    try:
        first = _best(lambda: put(dealing()), repeat)
        deals = dealing()
        put(deals)
        return first, _best(lambda: put(deals), repeat, before=probe_round)
    finally:
        loop.close()


def measure(n: int, repeat: int, profile: bool = False) -> dict[str, float]:
    """The CPU seconds of each kind of round over a book of `n` participants (and the raw sort's)."""
    ids = [_participant(i) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        market = _market(Path(tmp) / "db", ids)
        try:
            market.clearings()
            orders = market.book.orders()
            raw = _best(lambda: sorted(orders, key=lambda o: (o.price, o.digest)), repeat)
            idle = _best(market.clearings, repeat)
            changes = iter(range(10**6))
            stamps = {p: Stamp.seed().event() for p in ids}

            def change() -> None:
                k = next(changes)
                p = ids[k % n]
                stamps[p] = stamps[p].event()
                market.replication.show(_commitment(p, k % n + 1, 1_000 + (k * 104729) % 3_000, START, stamps[p]))
                market.clearings()

            changed = _best(change, repeat)

            def resign() -> None:  # the offer re-signed to stay current, its orders as they were
                p = ids[next(changes) % n]
                held = market.book.get(p)
                stamps[p] = stamps[p].event()
                market.replication.show(held.model_copy(update={"stamp": stamps[p]}))
                market.clearings()

            resigned = _best(resign, repeat)
            flips = iter(range(10**6))

            def probed(flipped: int) -> None:  # a probe round (every peer's history moved), then the market round
                market.peers.probe_round(tuple(ids[(next(flips) * 7919) % n] for _ in range(flipped)))
                market.clearings()

            probed_none = _best(lambda: probed(0), repeat)
            first_deal, dealt = _dealt(market, repeat, lambda: probed(0))
            probed_one = _best(lambda: probed(1), repeat)
            scratch = _best(lambda: ShownClearing(market).now(), repeat)
            # A node that has traded with nobody yet (bootstrapping) recognises a sample of every peer up, made again
            # at every probe round (measured last: the sample it keeps is live memory every collection walks).
            sample = Recognition(db=market.db, me=market.me, peers=market.peers)
            sample.weights()
            sampled = _best(sample.weights, repeat, before=lambda: market.peers.probe_round(
                (ids[(next(flips) * 7919) % n],)))
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(3):
                    change()
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        finally:
            market.db.close()
    return {"raw": raw, "idle": idle, "resigned": resigned, "changed": changed, "probed_none": probed_none,
            "probed_one": probed_one, "sampled": sampled, "scratch": scratch, "first_deal": first_deal, "dealt": dealt,
            "orders": len(orders)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--profile", action="store_true", help="profile the round after one change at 10,000")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    real_now = clearing.now_ms, market_service.now_ms, dealing.REUSE_SECONDS
    clearing.now_ms = market_service.now_ms = lambda: START
    dealing.REUSE_SECONDS = 3600.0  # (a kept deal serves the next put however slow the machine is)
    report = Report("market_rounds")
    try:
        for n in (1_000, 10_000):
            m = measure(n, repeat, profile=args.profile and n == 10_000)
            raw = m["raw"]
            print(f"book of {n} participants, {m['orders']} orders (best of {repeat}, CPU time)")
            print(f"  raw: sorted() {m['orders']} orders    {raw * 1e3:8.2f} ms")
            for key, what in (("idle", "round, nothing changed"), ("resigned", "round after one offer re-signed"),
                              ("changed", "round after one offer changed"),
                              ("probed_none", "round after a probe round, no flip"),
                              ("probed_one", "round after one peer's probe flipped"),
                              ("sampled", "a bootstrap sample after a flip"),
                              ("scratch", "full clearing from scratch"),
                              ("first_deal", "a deal's first matching of the book"),
                              ("dealt", "a deal matched after a probe round")):
                print(f"  {what:38s} {m[key] * 1e3:8.2f} ms   = {m[key] / raw:7.2f} x raw")
                report.add(f"{what}, {n} participants", m[key] * 1e3, "ms")
                report.add(f"{what}, {n} participants x raw sorted()", m[key] / raw, "x")
            report.add(f"raw: sorted() the orders of {n} participants", raw * 1e3, "ms")
    finally:
        clearing.now_ms, market_service.now_ms, dealing.REUSE_SECONDS = real_now
    report.write()


if __name__ == "__main__":
    main()
