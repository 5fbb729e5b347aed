"""A deal's matchings run in the CPU pool on a copy of the book (a 1,000-participant book held the event
loop 60-230 ms per put); they must give exactly what the same matchings give run in place."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from xsc.allocation import Stamp
from xsc.errors import MarketNoDeal
from xsc.identity import Identity
from xsc.market import sign_commitment
from xsc.market import dealing as dealing_module
from xsc.node.appkeys import NODE

from tests.support.attacks import fake_descriptors, now_ms
from tests.support.market import HOUR, ask, bid
from tests.support.waiting import eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


def _commitment(rng: random.Random, who: Identity, others: list[str], start: int) -> dict:
    me = who.id
    asks = [ask(me, f"c{i}", rng.choice([10**6, 10**8, 10**10]), rng.randint(1, 60), start - 60, start + 10 * HOUR,
                kind=rng.choice(["storage", "storage", "compute"])) for i in range(rng.randint(0, 2))]
    bids = [bid(me, f"n{i}", rng.choice([10**5, 10**7]), rng.randint(1, 80), start, start + HOUR,
                kind=rng.choice(["storage", "compute"]), group=rng.choice([None, "g"])) for i in range(rng.randint(0, 2))]
    recognition = {p: Decimal(rng.randint(1, 9)) for p in rng.sample(others, min(len(others), rng.randint(0, 3)))}
    return sign_commitment(who, asks=asks, bids=bids, recognition=recognition, stamp=Stamp.seed().event(),
                           timestamp=now_ms()).to_json()


async def _outcome(dealing, bids, exclude, *, in_pool: bool) -> tuple[str, object]:
    try:
        return "deal", await dealing.deal(bids, exclude, here=not in_pool)
    except MarketNoDeal as err:
        return "none", (str(err), err.details)


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_deal_matched_in_the_pool_equals_the_deal_matched_in_place(node_factory, seed) -> None:
    node = await node_factory("a", **QUIET)
    market, dealing, peers = node.app[NODE].market, node.app[NODE].dealing, node.app[NODE].peers
    rng = random.Random(seed)
    keys = [Identity.generate() for _ in range(80)]
    for at in range(0, len(keys), 16):
        peers.accept(fake_descriptors(keys[at:at + 16]))
    ids = [k.id for k in keys] + [market.me]
    start = now_ms() // 1000
    taken = market.receive([_commitment(rng, k, ids, start) for k in keys])
    assert taken == len(keys)
    market.publish(force=True)

    wanted = [
        [dealing.need(f"put-{s}", "storage", 50_000, 3600, 100, group="put") for s in range(6)],
        [dealing.need("repair", "storage", 10**6, 3600, 40, avoid=tuple(ids[:5]))],
        [dealing.need("invoke", "compute", 1 << 20, 60, 100)],
        [dealing.need("huge", "storage", 10**12, 3600, 100)],
        [dealing.need("cheap", "storage", 1000, 3600, 1)],
    ]
    seen = set()
    for bids in wanted:
        for exclude in (frozenset(), frozenset(ids[10:20])):
            outcomes = [await _outcome(dealing, bids, exclude, in_pool=p) for p in (False, True)]
            assert outcomes[0] == outcomes[1]
            seen.add(outcomes[0][0])
    assert seen == {"deal", "none"}  # both outcomes were compared


async def test_deals_asked_for_at_once_are_cleared_together_and_each_caller_hears_of_its_own_needs(
        node_factory, monkeypatch) -> None:
    node = await node_factory("a", **QUIET)
    dealing = node.app[NODE].dealing
    runs: list[int] = []
    real = dealing._run_deal

    async def counted(bids, exclude, here):
        runs.append(len(bids))
        return await real(bids, exclude, here)

    monkeypatch.setattr(dealing, "_run_deal", counted)
    monkeypatch.setattr("xsc.market.dealing.ON_THE_LOOP", 0)  # every matching in the pool, as over a large book
    puts = [[dealing.need(f"put{p}-{s}", "storage", 1000, 3600, 10**6, group=f"put{p}") for s in range(6)]
            for p in range(8)]
    answers = await asyncio.gather(*(dealing.deal(bids) for bids in puts))
    for bids, answer in zip(puts, answers):
        assert set(answer) == {b.slot.id for b in bids}  # its own needs, each placed
    assert len(runs) < len(puts) and sum(runs) == 6 * len(puts)  # fewer matchings than deals, every need in one

    # One deal that cannot be placed among them: the others are placed, and only its caller hears the refusal.
    runs.clear()
    mixed = puts[:3] + [[dealing.need("huge", "storage", 10**15, 3600, 10**6)]]
    outcomes = await asyncio.gather(*(dealing.deal(bids) for bids in mixed), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["dict", "dict", "dict", "MarketNoDeal"]
    assert "huge" in str(outcomes[3])



async def test_needs_in_flight_hold_their_units_and_are_not_matched_again(node_factory) -> None:
    """A put still storing holds what it was given of a provider's slot (the next matching sees the rest only),
    and this node's open needs are not matched again with each new deal: a matching reads the new needs alone."""
    a = await node_factory("a", storage={"capacity": 0}, **QUIET)
    b = await node_factory("b", **QUIET)
    market, dealing, needs = a.app[NODE].market, a.app[NODE].dealing, a.app[NODE].needs
    provider = b.app[NODE].peers.identity.id
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await market.fill_book()
    await a.app[NODE].health.probe_round()  # b is seen up: it may be matched
    slot = max((x.slot for x in market.book.get(provider).asks if x.slot.kind == "storage"),
               key=lambda s: s.quantity)
    size = slot.quantity * 6 // 10
    first = [dealing.need("first", "storage", size, 3600, 10**9)]
    needs.open(first)
    assert (await dealing.deal(first))["first"].provider == provider

    second = [dealing.need("second", "storage", size, 3600, 10**9)]
    needs.open(second)
    with pytest.raises(MarketNoDeal):  # 40% of the slot left while the first is in flight
        await dealing.deal(second)
    assert set(dealing.last_results.explanations) == {f"{market.me}/second"}  # the open first was not matched
    needs.withdraw(["first"])  # its put ended
    assert (await dealing.deal(second))["second"].provider == provider


async def test_a_caller_gone_while_its_batch_is_matched_in_the_pool_sets_no_price_of_the_others(
        node_factory, monkeypatch) -> None:
    """Needs x (bid 4,000) and y (bid 3,000) are dealt as one batch on provider b (ask 1,000); y's caller goes away
    while that matching runs in the pool.  y's bid, marginal, set that matching's price at 2,000: x is placed at the
    price a matching without y gives (2,500), as a deal made after y's caller went is, not at one a need nobody holds
    any more set."""
    a = await node_factory("a", storage={"capacity": 0}, **QUIET)
    b = await node_factory("b", **QUIET)
    dealing = a.app[NODE].dealing
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await a.app[NODE].market.fill_book()
    await a.app[NODE].health.probe_round()  # b is seen up: it may be matched
    monkeypatch.setattr("xsc.market.dealing.ON_THE_LOOP", 0)  # every matching in the pool, as over a large book
    gates: list[asyncio.Event] = []
    real = dealing_module.in_pool

    async def gated(pool, fn, *args):  # the first two matchings wait to be let go; later ones run at once
        if len(gates) < 2:
            gates.append(asyncio.Event())
            await gates[-1].wait()
        return await real(pool, fn, *args)

    monkeypatch.setattr(dealing_module, "in_pool", gated)
    ahead = asyncio.create_task(dealing.deal([dealing.need("ahead", "storage", 500, 3600, 4000)]))
    await eventually_async(lambda: len(gates) == 1, "the deal ahead to be matching")
    x = asyncio.create_task(dealing.deal([dealing.need("x", "storage", 1000, 3600, 4000)]))
    y = asyncio.create_task(dealing.deal([dealing.need("y", "storage", 1000, 3600, 3000)]))
    await eventually_async(lambda: dealing.status()["deals_waiting"] == 2, "x and y to wait their turn")
    gates[0].set()
    await ahead
    await eventually_async(lambda: len(gates) == 2, "x and y to be matched together")
    y.cancel()
    await asyncio.wait([y])
    gates[1].set()
    placed = (await x)["x"]
    alone = (await dealing.deal([dealing.need("alone", "storage", 1000, 3600, 4000)], here=True))["alone"]
    assert (placed.provider, placed.price) == (alone.provider, alone.price) == (b.app[NODE].peers.identity.id, 2500)
