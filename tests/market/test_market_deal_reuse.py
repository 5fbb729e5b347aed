"""A deal's answer serves later needs of the same shape for a moment (a matching of the book for every small put
was half of what the put cost): reused only while nothing it rests on changed, never past its slots' room."""

from __future__ import annotations

from decimal import Decimal

import pytest

from xsc.allocation import Stamp
from xsc.errors import MarketNoDeal
from xsc.identity import Identity
from xsc.market import sign_commitment
from xsc.market.dealing import Dealing
from xsc.node.appkeys import NODE

from tests.support.attacks import fake_descriptors, now_ms
from tests.support.compute import peer_with_provider
from tests.support.market import HOUR, ask
from tests.support.waiting import eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


@pytest.fixture(autouse=True)
def _kept_for_the_whole_test(monkeypatch) -> None:
    """A kept deal serves for a second (`REUSE_SECONDS`); a probe round or a node's start on a loaded machine can
    take longer, and these tests are about what a deal rests on, not its age (one sets the age to 0 itself)."""
    monkeypatch.setattr("xsc.market.dealing.REUSE_SECONDS", 600.0)


async def _buyer_and_provider(node_factory):
    """Node a (offering no storage) and provider b, known to each other and up: (a's node, b's id, b's
    largest storage slot)."""
    a = await node_factory("a", storage={"capacity": 0}, **QUIET)
    b = await node_factory("b", **QUIET)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await a.app[NODE].market.fill_book()
    await a.app[NODE].health.probe_round()  # b is seen up: it may be matched
    provider = b.app[NODE].peers.identity.id
    slot = max((x.slot for x in a.app[NODE].market.book.get(provider).asks if x.slot.kind == "storage"),
               key=lambda s: s.quantity)
    return a.app[NODE], provider, slot


async def _deal_open(node, need_id: str, size: int, price: int = 10**9):
    """A need of `size` opened (as a put's are while it stores) and dealt."""
    need = node.dealing.need(need_id, "storage", size, 3600, price)
    node.needs.open([need])
    return (await node.dealing.deal([need]))[need_id]


async def test_a_deal_is_reused_for_needs_of_its_shape_and_gives_what_a_matching_gives(node_factory) -> None:
    node, provider, slot = await _buyer_and_provider(node_factory)
    dealing = node.dealing
    first = await _deal_open(node, "first", 1000)
    second = await _deal_open(node, "second", 1000)
    assert dealing.reused == 1
    assert (second.need_id, second.provider, second.capacity_slot, second.price, second.cost) == \
        ("second", first.provider, first.capacity_slot, first.price, first.cost)
    assert first.provider == provider

    fresh = dealing.need("fresh", "storage", 1000, 3600, 10**9)
    matched = (await dealing.deal([fresh], here=True))["fresh"]  # a matching of the book as it is now
    assert (matched.provider, matched.capacity_slot, matched.price) == (second.provider, second.capacity_slot,
                                                                        second.price)
    explained = dealing.explanations.explain("second")  # `xsc market explain` knows the reused need
    assert explained["need"] == "second" and explained["code"] == "matched"
    assert explained["assignment"]["provider"] == provider

    # Another shape (a bid, a size, a provider left out) is matched, not reused.
    for need_id, size, price, exclude in (("dearer", 1000, 10**9 + 1, frozenset()), ("larger", 1001, 10**9,
                                          frozenset()), ("elsewhere", 1000, 10**9, frozenset({"f" * 64}))):
        need = dealing.need(need_id, "storage", size, 3600, price)
        node.needs.open([need])
        await dealing.deal([need], exclude)
    assert dealing.reused == 1


async def test_a_reused_deal_never_places_more_than_its_slots_have_room_for(node_factory) -> None:
    node, provider, slot = await _buyer_and_provider(node_factory)
    dealing = node.dealing
    third = slot.quantity * 3 // 10
    for n in range(3):
        assert (await _deal_open(node, f"put{n}", third)).provider == provider
    assert dealing.reused == 2
    with pytest.raises(MarketNoDeal):  # a tenth of the slot is left while the three are open: matched, refused
        await _deal_open(node, "put3", third)
    assert dealing.reused == 2

    # A deal of another shape takes its units from what the kept one may still place.
    node.needs.withdraw(["put0", "put1", "put2"])  # their puts ended
    assert (await _deal_open(node, "a0", third)).provider == provider  # kept: 70% of the slot left to it
    assert (await _deal_open(node, "half", slot.quantity // 2)).provider == provider  # matched
    with pytest.raises(MarketNoDeal):  # 20% left: not reused, and matched it does not fit
        await _deal_open(node, "a1", third)
    assert dealing.reused == 0 + 2


async def test_a_deal_is_not_reused_once_the_book_changed_or_it_grew_old(node_factory, monkeypatch) -> None:
    node, provider, slot = await _buyer_and_provider(node_factory)
    dealing, market = node.dealing, node.market
    await _deal_open(node, "first", 1000)

    # The book changes: a stranger's offer arrives.
    stranger = Identity.generate()
    node.peers.accept(fake_descriptors([stranger]))
    start = now_ms() // 1000
    offer = sign_commitment(stranger, asks=[ask(stranger.id, "s0", 10**6, 10**9, start - 60, start + 10 * HOUR)],
                            bids=[], recognition={}, stamp=Stamp.seed().event(), timestamp=now_ms())
    assert market.receive([offer.to_json()]) == 1
    await _deal_open(node, "after-the-book-changed", 1000)
    assert dealing.reused == 0

    monkeypatch.setattr("xsc.market.dealing.REUSE_SECONDS", 0.0)  # answers kept from now on serve no later deal
    for n in range(3):
        await _deal_open(node, f"put{n}", 1000, price=10**9 - 1)
    assert dealing.reused == 0


async def test_a_deal_is_not_reused_once_a_trust_line_changed_which_bids_count(node_factory) -> None:
    """Buyer c's standing need is in a's book, but counts in a's matchings only as far as c's trust line at a backs
    it: once a's user gives c credit (no order of the book changed), a's next deal of the same shape is matched
    again, at the price a matching of the book now gives, not reused at the price of a market c's bid took no part
    in.  A change of a line that moves no bid (a reservation on one whose peer bids nothing) keeps the answer."""
    node, provider, slot = await _buyer_and_provider(node_factory)
    c = await node_factory("c", storage={"capacity": 0}, **QUIET)
    buyer = c.app[NODE].peers.identity.id
    await c.app[NODE].peers.add(node.peers.url)
    node.market.recognize(buyer, "1", 0)  # recognised, on a line of no credit: its bid counts for nothing yet
    c.app[NODE].needs.add_standing("storage", 1000, 3600, 3000)

    async def in_the_book() -> bool:
        await node.market.fill_book()
        await node.health.probe_round()
        mine = node.market.book.get(node.peers.identity.id)
        return any(b.slot.owner == buyer for b in node.market.book.bids()) and node.peers.up(buyer) and \
            mine is not None and buyer in mine.recognition
    await eventually_async(in_the_book, "c's need and a's recognition of c in a's book")
    dealing = node.dealing
    first = await _deal_open(node, "first", 1000, price=4000)
    node.market.recognize(buyer, "1", 10**15)
    second = await _deal_open(node, "second", 1000, price=4000)
    fresh = dealing.need("fresh", "storage", 1000, 3600, 4000)
    matched = (await dealing.deal([fresh], here=True))["fresh"]  # a matching of the book as it is now
    assert (first.price, matched.price) == (2500, 2000)  # c's bid of 3,000 at the margin once it counts
    assert (second.provider, second.capacity_slot, second.price) == (matched.provider, matched.capacity_slot,
                                                                     matched.price)
    assert dealing.reused == 0
    node.trust.reserve(provider, 0, "a share")  # a line whose peer bids nothing here: no bid counts otherwise
    await _deal_open(node, "third", 1000, price=4000)
    assert dealing.reused == 1



async def test_a_deal_is_not_reused_once_this_nodes_recognition_weights_changed(node_factory) -> None:
    """This node's recognition of its peers is matched by (a need's tier among equal bids): a weight its user sets
    changes it with no order of the book changed (the node's offer naming it is published later), and the next deal
    of the same shape is matched again."""
    node, provider, slot = await _buyer_and_provider(node_factory)
    dealing = node.dealing
    await _deal_open(node, "first", 1000)
    await _deal_open(node, "second", 1000)
    assert dealing.reused == 1
    before = node.market.recognition()
    node.market.recognize(provider, "0.25")
    assert node.market.recognition() != before
    await _deal_open(node, "after-a-weight-was-set", 1000)
    assert dealing.reused == 1


async def _recognition_held(gateway, providers: list, monkeypatch) -> None:
    """Each node's commitment signed now, with its recognition as it is, the gateway's book brought up to the
    providers' own, and every node's recognition held from then on: the book then changes only by what the test does.
    (Nodes: their services, `app[NODE]`.)  A node's market round signs its recognition of a peer once it has seen it
    up (the gateway's of its second provider came a round after that provider's offer was in its book), and a probe
    that finds a provider down moves the gateway's: either, signed while a test held the book's version still,
    changed the book under it."""
    ids = [p.peers.identity.id for p in providers]
    await eventually_async(lambda: all(gateway.peers.up(i) for i in ids), "the gateway to see its providers up", 30)
    for node in (gateway, *providers):
        node.market.publish()
        monkeypatch.setattr(node.market, "recognition", lambda held=node.market.recognition(): dict(held))
    await gateway.market.replication.pull_own([gateway.peers.get(i) for i in ids], 30)
    for provider, i in zip(providers, ids):
        assert gateway.market.book.get(i) == provider.market.book.get(i), "the gateway's book holds the provider's newest"


async def _kept_invoke_deal(node_factory, names: tuple[str, ...], monkeypatch):
    """A gateway offering no compute and the compute providers `names`, peered, and an invoke's deal it keeps:
    (gateway, providers, the deal).  freshness: no node re-signs its offer (every freshness/3 s) while a test holds
    the book's version still, nor for its recognition (`_recognition_held`)."""
    terms = {"compute_ask_floor": 10**6, "compute_ask_ceiling": 10**6, "compute_bid": 10**6, "freshness": 3600}
    gateway = await node_factory("gateway", **QUIET, market={**terms, "offer_compute": False})
    providers = [await node_factory(name, **QUIET, market=terms) for name in names]
    for provider in providers:
        await peer_with_provider(gateway, provider)
    await _recognition_held(gateway.app[NODE], [p.app[NODE] for p in providers], monkeypatch)
    dealing = gateway.app[NODE].dealing
    first = await dealing.compute_deal(250_000, 10**6)
    dealing.ended(first)
    assert (await dealing.compute_deal(250_000, 10**6)).provider == first.provider  # (kept)
    return gateway, providers, first


async def test_an_invoke_deal_is_not_kept_once_its_provider_is_seen_down(node_factory, monkeypatch) -> None:
    # An invoke's deal is kept while the book holds: a provider a probe finds down since is no longer asked first (a
    # connection tried and failed for every call until the book changed), the next call goes to another at once.
    gateway, providers, first = await _kept_invoke_deal(node_factory, ("p1", "p2"), monkeypatch)
    dealing, market = gateway.app[NODE].dealing, gateway.app[NODE].market
    book = market.version
    down = next(p for p in providers if p.app[NODE].peers.identity.id == first.provider)
    for site in list(down.server.runner.sites):  # gone without a word, as a crash or a cut link leaves it
        await site.stop()
    await down.server.runner.server.shutdown(0)  # (its connections too)
    await gateway.app[NODE].health.probe_round()
    assert gateway.app[NODE].peers.up(first.provider) is False and market.version == book
    assert (await dealing.compute_deal(250_000, 10**6)).provider != first.provider


async def test_a_deal_is_reused_after_a_probe_round_that_changed_no_peers_availability(node_factory) -> None:
    """A probe round moves every probed peer's history: one in which every peer answered as before changes nothing a
    deal rests on, and the next put of the same shape is answered by the kept deal, not by a matching of the book."""
    node, provider, slot = await _buyer_and_provider(node_factory)
    dealing = node.dealing
    first = await _deal_open(node, "first", 1000)
    await node.health.probe_round()
    assert node.peers.up(provider)
    second = await _deal_open(node, "after-a-probe-round", 1000)
    assert dealing.reused == 1
    assert (second.provider, second.capacity_slot, second.price) == (first.provider, first.capacity_slot, first.price)


async def test_a_deal_with_a_minimum_availability_is_matched_again_once_a_probe_moved_a_providers_ratio(
        node_factory) -> None:
    """A need's minimum availability is matched against each provider's ratio of answered probes over the hour, which
    a probe round moves with no peer coming up or going down (a provider that missed one probe): a deal of such needs
    is matched again after it, one whose needs ask no minimum is still reused."""
    node, provider, slot = await _buyer_and_provider(node_factory)
    dealing, health = node.dealing, node.health
    answer = health.probe

    async def refused(peer):
        return False, None, "refused"

    health.probe = refused
    await health.probe_round()
    health.probe = answer
    await health.probe_round()  # up again, a missed probe in its hour
    assert node.peers.up(provider)

    async def deal(need_id: str, floor: str | None) -> None:
        need = dealing.need(need_id, "storage", 1000, 3600, 10**9,
                            min_availability=None if floor is None else Decimal(floor))
        node.needs.open([need])
        assert (await dealing.deal([need]))[need_id].provider == provider

    for n in range(2):
        await deal(f"plain-{n}", None)
        await deal(f"floored-{n}", "0.5")
    assert dealing.reused == 2
    ratio = node.market.availability_map()[provider]
    await health.probe_round()  # answered: no flip, and its ratio moved
    assert node.peers.up(provider) and node.market.availability_map()[provider] != ratio
    await deal("plain-after", None)
    assert dealing.reused == 3
    await deal("floored-after", "0.5")
    assert dealing.reused == 3


async def test_a_deal_is_not_reused_once_a_cheaper_provider_answered_its_first_probe(node_factory) -> None:
    """A peer learned of through gossip takes part only once it answered a probe: its availability counts 1 before and
    after, and yet the answer, which had to leave it out, is matched again: the put goes to the cheaper provider."""
    node, provider, slot = await _buyer_and_provider(node_factory)
    dealing, market = node.dealing, node.market
    market.note_paid(provider, 10**6, by_them=True)  # (recognised for its trade: no newcomer moves the weights)
    stranger = Identity.generate()
    node.peers.accept(fake_descriptors([stranger]))
    start = now_ms() // 1000
    offer = sign_commitment(stranger, asks=[ask(stranger.id, "s0", 10**6, 1, start - 60, start + 10 * HOUR)],
                            bids=[], recognition={}, stamp=Stamp.seed().event(), timestamp=now_ms())
    assert market.receive([offer.to_json()]) == 1
    assert (await _deal_open(node, "first", 1000)).provider == provider  # (never probed: it takes no part)
    assert (await _deal_open(node, "second", 1000)).provider == provider
    assert dealing.reused == 1
    node.health.answered(node.peers.get(stranger.id), 1.0)
    assert market.availability_map()[stranger.id] == 1
    assert (await _deal_open(node, "after-its-first-answer", 1000)).provider == stranger.id
    assert dealing.reused == 1


async def test_an_invoke_deal_kept_from_the_allocation_is_not_reused_past_what_the_allocation_gives_since_it_changed(
        node_factory) -> None:
    """An invoke placed from the allocation is kept while the provider's part holds a call's budget.  The allocation
    changes without a change of the book (the provider divides its part again among its recipients): a call then
    answered by the kept deal spends from the new part, and once that is spent the next call is not placed on the
    provider from it again, whether the kept deal or a new matching would answer it."""
    terms = {"compute_ask_floor": 10, "compute_ask_ceiling": 10, "compute_bid": 100, "freshness": 3600}
    gateway = await node_factory("gateway", **QUIET, market={**terms, "offer_compute": False})
    provider = await node_factory("provider", **QUIET, market=terms)
    await peer_with_provider(gateway, provider)
    node, b = gateway.app[NODE], provider.app[NODE].peers.identity.id
    fuel = 100_000
    budget = 1 << fuel.bit_length()  # the fuel a call reserves of the part
    given = {b: 2 * budget}  # what the allocation gives this node's standing compute needs, provider -> units
    dealing = Dealing(market=node.market, needs=node.needs,
                      allocated=lambda kind: dict(given) if kind == "compute" else {})
    first = await dealing.compute_deal(fuel, 100)
    assert first.allocated and first.provider == b, first
    dealing.ended(first)  # (it failed before it ran: it spent nothing)
    book = node.market.version

    given[b] = budget + budget // 2  # the provider's part shrank: it holds one call's budget, not two
    second = await dealing.compute_deal(fuel, 100)
    assert second.allocated and second.provider == b, second
    assert node.market.version == book  # (answered by the kept deal: nothing it is keyed by changed)
    dealing.invoked(second, budget // 2 + 1)  # it ran: the part left holds less than a call's budget

    third = await dealing.compute_deal(fuel, 100)
    assert not third.allocated, third
    dealing.ended(third)
    node.market.touch()
    await eventually_async(lambda: node.market.version != book, "the gateway's offer re-signed: the book changed")
    fresh = await dealing.compute_deal(fuel, 100)  # a new matching, the kept deal's key gone with the book
    assert not fresh.allocated, fresh


async def test_an_invoke_deal_is_not_kept_once_its_providers_offer_went_stale(node_factory, monkeypatch) -> None:
    # An offer goes stale with time alone, no change of the book: a kept deal rests on who takes part, as a matching
    # made afresh does, so a provider that stopped re-signing its offer gets no further call from it.
    gateway, _, first = await _kept_invoke_deal(node_factory, ("p1",), monkeypatch)
    dealing, market = gateway.app[NODE].dealing, gateway.app[NODE].market
    book = market.version
    later = now_ms() + 2 * 3600 * 1000  # the gateway's clock past the offer's freshness
    monkeypatch.setattr("xsc.market.service.now_ms", lambda: later)
    monkeypatch.setattr("xsc.market.clearing.now_ms", lambda: later)
    assert not market.active(first.provider) and market.version == book
    with pytest.raises(MarketNoDeal):
        await dealing.compute_deal(250_000, 10**6)
