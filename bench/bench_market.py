"""Market speed: clearing a large call market, and matching needs to capacity slots.

Run: .venv/bin/python -m bench.bench_market [--quick]

Times are CPU time of this process (best of a few runs; the machine is shared), printed with their
ratio to a raw step measured in the same run: `sorted()` of the same orders by (price, digest),
the one sort per side the auction cannot avoid.
  - clear_auction: 10,000 bids and 1,000 asks (random prices and byte quantities, seeded); target < 50 ms;
  - match_needs, one put: 6 needs of one group (distinct providers) against 50 providers;
  - match_needs, 1,000 needs (in groups of 6 and single) against 100 providers, with recognition.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from decimal import Decimal

from xsc.allocation import CapacitySlot, NeedSlot
from xsc.market import Ask, Bid, clear_auction, match_needs
from xsc.market.core.auction import Order

from .report import Report

HOUR = 3600
GIB = 2**30


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _orders(rng: random.Random, n_bids: int, n_asks: int) -> tuple[list[Order], list[Order]]:
    def digest(i: int) -> bytes:
        return hashlib.sha256(i.to_bytes(8, "big")).digest()

    bids = [Order(f"b{i}", f"u{i % 500}", "bid", "storage", 0, rng.randint(1, 64) * 2**20, rng.randint(500, 5_000),
                  digest(i)) for i in range(n_bids)]
    asks = [Order(f"a{i}", f"p{i}", "ask", "storage", 0, rng.randint(1, 512) * GIB // 8, rng.randint(1_000, 4_000),
                  digest(n_bids + i)) for i in range(n_asks)]
    return bids, asks


def _providers(rng: random.Random, n: int) -> list[Ask]:
    return [Ask(slot=CapacitySlot(id="storage", owner=f"p{i:03d}", kind="storage", quantity=rng.randint(10, 500) * GIB,
                                  start=0, end=30 * 24 * HOUR, location=rng.choice(("eu", "us", "any"))),
                price=rng.randint(1_000, 4_000)) for i in range(n)]


def _put(owner: str, name: str, share: int, price: int, start: int = 0) -> list[Bid]:
    return [Bid(slot=NeedSlot(id=f"{name}-{k}", owner=owner, kind="storage", quantity=share, start=start,
                              end=start + 7 * 24 * HOUR), price=price, group=name) for k in range(6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    rng = random.Random(1)

    bids, asks = _orders(rng, 10_000, 1_000)
    every = bids + asks
    raw = _best(lambda: sorted(every, key=lambda o: (o.price, o.digest)), repeat)
    t = _best(lambda: clear_auction(bids, asks), repeat)
    c = clear_auction(bids, asks)
    print(f"call market: {len(bids)} bids, {len(asks)} asks (best of {repeat}, CPU time)")
    print(f"  clear_auction                {t * 1e3:8.2f} ms   (target < 50 ms); price {c.price}, "
          f"{c.traded / GIB:.1f} GiB traded, {len(c.fills)} fills")
    print(f"  raw: sorted() 11,000 orders  {raw * 1e3:8.2f} ms   clear_auction = {t / raw:6.2f} x")
    report = Report("market")
    report.add("raw: sorted() 11,000 orders", raw * 1e3, "ms")
    report.add("clear 10,000 bids / 1,000 asks", t * 1e3, "ms", target=50, op="<")
    report.add("clearing x raw sorted()", t / raw, "x")

    providers = _providers(rng, 50)
    put = _put("user", "put-1", 256 * 2**20, 10_000)
    availability = {a.slot.owner: Decimal("0.99") for a in providers}

    def one_put():
        return match_needs(providers, put, recognition={}, availability=availability, bucket_seconds=HOUR, now_ms=0)

    r = one_put()
    t_put = _best(one_put, repeat)
    print("match_needs: one put, 6 shares in one group vs 50 providers")
    print(f"  match_needs                  {t_put * 1e3:8.2f} ms   ({len(r.assignments)} placed on "
          f"{len({a.provider for a in r.assignments.values()})} providers at {r.clearings[('storage', 0)].price})")
    print(f"  raw: sorted() 11,000 orders  {raw * 1e3:8.2f} ms   match_needs = {t_put / raw:6.2f} x")
    report.add("match_needs, one put vs 50 providers", t_put * 1e3, "ms")

    providers = _providers(rng, 100)
    needs: list[Bid] = []
    users = [f"u{i:03d}" for i in range(200)]
    while len(needs) < 1_000:
        owner = rng.choice(users)
        start = rng.randrange(4) * HOUR
        if rng.random() < 0.5:
            needs.extend(_put(owner, f"put-{len(needs)}", rng.randint(1, 64) * 2**20, rng.randint(1_000, 10_000), start))
        else:
            needs.append(Bid(slot=NeedSlot(id=f"n{len(needs)}", owner=owner, kind="storage",
                                           quantity=rng.randint(1, 2048) * 2**20, start=start, end=start + 24 * HOUR,
                                           location=rng.choice(("eu", "us", "any"))),
                             price=rng.randint(500, 10_000), min_availability=Decimal("0.9")))
    needs = needs[:1_000]
    recognition = {p: {q: Decimal(rng.randint(1, 10)) for q in rng.sample(users + [a.slot.owner for a in providers], 5)}
                   for p in [a.slot.owner for a in providers] + users}
    availability = {a.slot.owner: Decimal(rng.choice(("0.8", "0.95", "0.99"))) for a in providers}

    def many():
        return match_needs(providers, needs, recognition=recognition, availability=availability, bucket_seconds=HOUR,
                           now_ms=0)

    r = many()
    t_many = _best(many, max(2, repeat // 2))
    codes: dict[str, int] = {}
    for e in r.explanations.values():
        codes[e.code] = codes.get(e.code, 0) + 1
    tiers: dict[str, int] = {}
    for a in r.assignments.values():
        tiers[a.tier] = tiers.get(a.tier, 0) + 1
    print(f"match_needs: {len(needs)} needs vs {len(providers)} providers, 300 participants recognising 5 each")
    print(f"  match_needs                  {t_many * 1e3:8.2f} ms   outcomes {dict(sorted(codes.items()))}, "
          f"tiers {dict(sorted(tiers.items()))}")
    print(f"  raw: sorted() 11,000 orders  {raw * 1e3:8.2f} ms   match_needs = {t_many / raw:6.2f} x")
    report.add("match_needs, 1,000 needs vs 100 providers", t_many * 1e3, "ms")
    report.write()


if __name__ == "__main__":
    main()
