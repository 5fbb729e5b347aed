"""The market on one node (in process): its offer follows what it really has, its routes refuse bad input."""

from __future__ import annotations

import json
import os
import threading
from decimal import Decimal

import pytest

from xsc import keys
from xsc.errors import NodeStopping
from xsc.identity import Identity
from xsc.market import service as market_service
from xsc.node.appkeys import NODE
from xsc.peers.service import MAX_NEW_PER_MESSAGE
from xsc.storage import quotes, strangers

from tests.support.allocation import pair
from tests.support.attacks import fake_descriptors
from tests.support.compute import peer_with_provider
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async


async def _offer(node) -> dict:
    response = await node.get("/v1/market/offer")
    assert response.status == 200
    return await response.json()


async def test_the_storage_ask_rises_as_the_provider_fills_up(node_factory) -> None:
    node = await node_factory(storage={"segment_size": 4096, "capacity": 2_000_000})
    before = await _offer(node)
    assert before["storage"]["ask"] == 1_000 and before["storage"]["used"] == 0
    for _ in range(3):
        response = await node.post("/v1/store/files", data=os.urandom(150_000))
        assert response.status == 201, await response.text()
    after = await _offer(node)
    assert after["storage"]["used"] > 0
    assert after["storage"]["ask"] > before["storage"]["ask"]
    # What it publishes says the same: its own slots in the book carry the new ask and the free bytes left.
    node.app[NODE].market.publish()
    book = await (await node.get("/v1/market/book", params={"kind": "storage"})).json()
    asks = [a for row in book["books"] for a in row["asks"]]
    assert asks and {a["price"] for a in asks} == {after["storage"]["ask"]}
    assert {a["quantity"] for a in asks} == {after["storage"]["capacity"] - after["storage"]["used"]}


async def test_the_compute_ask_rises_with_the_fuel_used_in_the_bucket(node_factory) -> None:
    node = await node_factory(compute={"threads": 2}, market={"fuel_per_second": 1000})
    market = node.app[NODE].market
    first = market.offer.ask("compute")
    market.offer.note_fuel(market.offer.compute_capacity() // 2)
    assert market.offer.ask("compute") > first


async def test_market_routes_refuse_bad_input(node) -> None:
    for path, params in (("/v1/market/book", {"kind": "disk"}), ("/v1/market/prices", {"limit": "0"})):
        response = await node.get(path, params=params)
        assert response.status == 400 and (await response.json())["code"] == "invalid-argument"
    response = await node.get("/v1/market/explain/no-such-need")
    assert response.status == 404 and (await response.json())["code"] == "need-not-found"
    peer = node.app[NODE].market.me
    for body in ({"peer": peer}, {"peer": peer, "weight": "lots"}, {"peer": peer, "weight": -1},
                 {"peer": "not-a-node", "weight": 1}):
        response = await node.post("/v1/market/recognize", json=body)
        assert response.status == 400, body


async def test_a_refused_kind_weight_credit_or_need_is_quoted_back_cut_and_nothing_is_changed(node) -> None:
    """A stranger's 5,000-character kind or weight, or a 4,000-digit number (as many as a JSON reader takes), is
    refused in one short line that names the field, not sent back whole; no weight, credit line or need is set."""
    long, digits = "q" * 5000, "9" * 4000
    peer = Identity.generate().id
    cases = [("GET", f"/v1/market/book?kind={long}", None, "kind"), ("GET", f"/v1/market/prices?kind={long}", None, "kind"),
             ("POST", "/v1/market/recognize", f'{{"peer": "{peer}", "weight": "{long}"}}', "number"),
             ("POST", "/v1/market/recognize", f'{{"peer": "{peer}", "weight": {digits}}}', "weight"),
             ("POST", "/v1/market/recognize", f'{{"peer": "{peer}", "weight": 1, "credit": "{long}"}}', "credit"),
             ("POST", "/v1/market/recognize", f'{{"peer": "{peer}", "weight": 1, "credit": -{digits}}}', "credit"),
             ("POST", "/v1/allocation/needs", f'{{"kind": "{long}", "quantity": 1}}', "kind"),
             ("POST", "/v1/allocation/needs", f'{{"kind": "storage", "quantity": {digits}}}', "quantity"),
             ("POST", "/v1/allocation/needs", f'{{"kind": "storage", "quantity": 1, "max_price": "{long}"}}',
              "max_price")]
    for method, path, body, field in cases:
        response = await node.request(method, path, data=body, headers={"Content-Type": "application/json"})
        problem = await response.json()
        assert response.status == 400 and problem["code"] == "invalid-argument", (path, problem)
        assert field in problem["detail"] and len(problem["detail"]) < 300, (path, problem["detail"][:400])
    recognition = {r["peer"] for r in node.app[NODE].market.recognition_view()}
    assert peer not in recognition
    assert (await (await node.get("/v1/allocation")).json())["needs"] == []


async def test_recognition_set_by_the_user_is_published_and_kept(node_factory) -> None:
    node = await node_factory()
    peer = Identity.generate().id
    response = await node.post("/v1/market/recognize", json={"peer": peer, "weight": "0.75"})
    assert response.status == 200 and (await response.json())["weight"] == "0.75"
    market = node.app[NODE].market
    market.publish()
    assert market.book.get(market.me).recognition[peer] == market.recognition()[peer]
    response = await node.post("/v1/market/recognize", json={"peer": peer, "weight": None})
    assert response.status == 200 and peer not in market.weights.user_weights


async def test_a_market_round_writes_the_new_commitment_off_the_event_loop_and_shows_it_once_written(node_factory) -> None:
    """The round's synced write of this node's commitment ran on the event loop: up to 46 ms with puts fsyncing
    shares.  Now it runs in the CPU pool, and peers see the commitment only after."""
    node = await node_factory()
    market = node.app[NODE].market
    loop_thread, seen = threading.get_ident(), []
    store = market._store_own

    def recording(commitment, number, self_state):
        seen.append((threading.get_ident(), market.book.get(market.me).stamp == commitment.stamp))
        store(commitment, number, self_state)

    market._store_own = recording
    response = await node.post("/v1/market/recognize", json={"peer": Identity.generate().id, "weight": "0.5"})
    assert response.status == 200
    await eventually_async(lambda: seen, "the round to publish the change", 10, poll=0.02)
    assert seen[0] == (seen[0][0], False) and seen[0][0] != loop_thread  # in the pool, before the book has it
    # The write runs on after the recording above, and a later round may publish again: the book's commitment is
    # the one written once the writes have ended.
    def written() -> bool:
        raw = market.db.get(keys.market_commitment(market.identity.public_key))
        return raw is not None and json.loads(raw)["signature"] == market.book.get(market.me).signature

    await eventually_async(written, "the book's commitment written", 10)


async def test_an_older_commitment_written_late_never_overwrites_a_newer_one(node_factory) -> None:
    node = await node_factory()
    market = node.app[NODE].market
    market.recognize(Identity.generate().id, "0.5")
    first = market._sign_own(force=True)
    second = market._sign_own(force=True)
    market._store_own(*second)
    market._store_own(*first)  # a pool thread that lost the race: too late
    stored = json.loads(market.db.get(keys.market_commitment(market.identity.public_key)))
    assert stored["signature"] == second[0].signature != first[0].signature


async def test_a_commitment_whose_write_failed_is_signed_and_written_again_by_the_next_round(node_factory) -> None:
    node = await node_factory()
    market = node.app[NODE].market
    market.recognize(Identity.generate().id, "0.5")
    store = market._store_own

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    market._store_own = full_disk
    with pytest.raises(OSError):
        await market.republish()
    before = market.book.get(market.me)
    market._store_own = store
    assert await market.republish()  # not taken for published: signed again, and written
    stored = json.loads(market.db.get(keys.market_commitment(market.identity.public_key)))
    held = market.book.get(market.me)
    assert stored["signature"] == held.signature != before.signature and held.recognition == market.recognition()


async def test_a_forged_commitment_from_a_peer_is_ignored(node) -> None:
    market = node.app[NODE].market
    mine = market.book.get(market.me).to_json()
    forged = {**mine, "participant": Identity.generate().id}
    before = market.book.digest()
    assert market.receive([forged, {"junk": 1}]) == 0
    assert market.book.digest() == before


async def test_recognition_counters_are_written_once_a_round_not_by_every_paid_call(node_factory) -> None:
    node = await node_factory()
    market = node.app[NODE].market
    saved = lambda: json.loads(market.db.get(keys.MARKET_SELF))  # noqa: E731
    market.save_counters()
    before = saved()
    for _ in range(3):
        market.note_paid("peer-x", 5, by_them=True)
    market.note_paid("peer-y", 7, by_them=False)
    assert saved() == before  # nothing written per call
    market.save_counters()  # what each market round (and close) does
    assert saved()["paid_by"]["peer-x"] == 15 and saved()["delivered_by"]["peer-y"] == 7
    market.note_paid("peer-x", 1, by_them=True)
    await market.close()
    assert saved()["paid_by"]["peer-x"] == 16  # written at close


async def test_the_compute_ask_is_the_one_in_the_offer_whatever_the_use_the_config_or_the_state(node_factory) -> None:
    """Offer.ask("compute") prices the compute offer alone (a provider asks it for every paid call): it is
    the price of the current bucket's compute slot in own_asks, through fuel used, a changed pricing config,
    a node that offers no compute, and one that is leaving (which publishes no offer and refuses its peers' work)."""
    node = await node_factory(compute={"threads": 2}, market={"fuel_per_second": 1000, "compute_ask_floor": 10,
                                                              "compute_ask_ceiling": 5000})
    market = node.app[NODE].market

    def offered() -> int | None:
        b = market.offer.bucket()
        return next((a.price for a in market.offer.own_asks() if a.slot.id == f"compute-{b}"), None)

    seen = set()
    capacity = market.offer.compute_capacity()
    for used in (0, 1, capacity // 7, capacity // 2, capacity):
        market.offer.note_fuel(used)
        assert market.offer.ask("compute") == offered()
        seen.add(market.offer.ask("compute"))
    assert len(seen) >= 3 and None in seen  # it rose with the fuel used, and none is offered once it is all used
    market.offer.fuel_used.clear()
    market.config.compute_ask_floor, market.config.compute_ask_ceiling = 700, 900  # the policy is read again
    assert market.offer.ask("compute") == offered() == 700
    market.config.ask_exponent = 1
    market.offer.note_fuel(market.offer.compute_capacity() // 2)
    assert market.offer.ask("compute") == offered() == 800
    market.config.offer_compute = False
    assert market.offer.ask("compute") is None and offered() is None
    market.config.offer_compute = True
    market.leaving = True  # it publishes no offer, but its own work under way keeps it
    assert market.offer.ask("compute") == offered() == 800
    with pytest.raises(NodeStopping):  # work a peer still offers is refused (503): it goes elsewhere
        market.offer.honoured_ask("compute")
    assert market.publish(force=True) and not market.book.get(market.me).asks


async def test_the_offer_is_made_again_only_when_what_it_is_made_of_changed(node_factory) -> None:
    """Every market round and every quote ask for this node's offer: the same asks while nothing they are made of
    changed, new ones as soon as something did (the storage used, the config)."""
    node = await node_factory(storage={"segment_size": 4096, "capacity": 2_000_000})
    market = node.app[NODE].market
    first = market.offer.own_asks()
    again = market.offer.own_asks()
    assert again == first and all(a is b for a, b in zip(again, first))
    response = await node.post("/v1/store/files", data=os.urandom(150_000))
    assert response.status == 201, await response.text()
    free = {a.slot.quantity for a in market.offer.own_asks() if a.slot.kind == "storage"}
    assert free and max(free) < min(a.slot.quantity for a in first if a.slot.kind == "storage")
    market.config.offer_storage = False
    assert market.offer.own_asks() and not any(a.slot.kind == "storage" for a in market.offer.own_asks())


async def test_interests_are_made_once_per_change_and_only_wanted_peers_are_looked_for(node_factory,
                                                                                      monkeypatch) -> None:
    """The allocation asks for the interests twice a second and the market looks for missing commitments every
    second: made afresh from every peer's recognition in the book each time, and asked of every peer known, they
    would make an idle node's CPU grow with the network."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a, b = await pair(node_factory, **quiet)
    market, peers, b_id = a.app[NODE].market, a.app[NODE].peers, b.app[NODE].peers.identity.id
    made = []
    pure = market_service.interests
    monkeypatch.setattr(market_service, "interests", lambda *args: made.append(args) or pure(*args))
    first = market.interests()
    assert all(market.interests() == first for _ in range(100)) and len(made) <= 1
    before = len(made)
    market.set_recognition(b_id, Decimal(5))  # what this node publishes changed
    market.interests()
    b.app[NODE].market.publish(force=True)  # b's commitment, new in the book
    assert market.receive([b.app[NODE].market.book.get(b_id).to_json()]) == 1
    assert b_id in market.interests() and len(made) == before + 2

    fakes = [Identity.generate() for _ in range(MAX_NEW_PER_MESSAGE)]
    peers.accept(fake_descriptors(fakes), source="127.0.0.9")
    assert all(peers.known(key.id) for key in fakes)
    asked, up = [], peers.up
    monkeypatch.setattr(peers, "up", lambda node_id: asked.append(node_id) or up(node_id))
    assert market.replication._missing() == []  # b's commitment is held; the fakes are not wanted
    assert not set(asked) & {key.id for key in fakes}


async def test_an_offer_larger_than_a_json_reader_holds_exactly_is_offered_up_to_it(node_factory) -> None:
    """16 PiB of storage, 10^16 fuel a bucket: the node offers 2^53 - 1 of fuel, of storage no more than its data dir's
    disk can take (docs/market.md, "Offers"), and can still sign its offer."""
    import shutil

    node = await node_factory(storage={"capacity": 2**54}, compute={"threads": 2},
                              market={"fuel_per_second": 10**10, "bucket_seconds": 7 * 86400})
    market = node.app[NODE].market
    usage = market.offer.storage_usage()
    market.offer.storage_usage = lambda: usage  # the disk's free space as of now: other tests write to it meanwhile
    quantities = {a.slot.kind: a.slot.quantity for a in market.offer.own_asks()}
    assert quantities["compute"] == 2**53 - 1
    assert 0 < quantities["storage"] == usage[1] - usage[0] <= shutil.disk_usage(node.app[NODE].config.data_dir).total
    market.publish(force=True)
    assert {a.slot.quantity for a in market.book.get(market.me).asks} == set(quantities.values())


async def test_a_put_asks_the_book_for_offers_that_outlast_every_terms_round_its_matchings_wait(node_factory,
                                                                                               monkeypatch) -> None:
    """A put matches again after each round of asking providers their terms, up to TERMS_ROUNDS matchings, each round
    up to TERMS_TIMEOUT: an offer the book counted at the first matching but which lapses before the last is lost to
    it (its shares doubled up on the providers left), so the book counts as held only offers that last that long."""
    node = await node_factory(storage={"capacity": 2_000_000})
    market = node.app[NODE].market
    asked: list[float] = []
    fill_book = market.fill_book

    async def recorded(*args, **kwargs) -> None:
        asked.append(kwargs.get("needed", 0.0))
        await fill_book(*args, **kwargs)

    monkeypatch.setattr(market, "fill_book", recorded)
    response = await node.post("/v1/store/files", data=b"q" * 10_000)
    assert response.status == 201, await response.text()
    assert asked and min(asked) >= (quotes.TERMS_ROUNDS - 1) * strangers.TERMS_TIMEOUT


async def test_a_put_whose_only_other_seller_went_away_pays_its_own_nodes_ask_as_the_prices_show(node_factory) -> None:
    """Alice's offer bounds what Bob's puts pay while she is there; once she is gone Bob's node is the only seller
    of its own puts' shares: they pay its ask, not the midpoint of its ask and its own bid, and `market prices`
    shows the price they paid."""
    alice = await node_factory("alice", storage={"segment_size": 4096})
    bob = await node_factory("bob", storage={"segment_size": 4096})
    await peer_with_provider(bob, alice)
    alice_id = alice.app[NODE].market.me
    await close_node(alice)  # she tells Bob's node she leaves: her offer is of nothing

    async def gone() -> bool:
        return not [a for a in bob.app[NODE].market.book.asks() if a.slot.owner == alice_id]

    await eventually_async(gone, "Alice's offer gone from Bob's book", 10)
    ask = (await _offer(bob))["storage"]["ask"]
    response = await bob.post("/v1/store/files", data=os.urandom(10_000), params={"duration": "3600"})
    assert response.status == 201, await response.text()
    put = await response.json()
    assert put["prices"] == [ask] * 6, put
    shown = await (await bob.get("/v1/market/prices", params={"kind": "storage", "limit": "1"})).json()
    assert [p["price"] for p in shown["prices"]] == [ask], shown


async def test_the_clearing_the_book_shows_leaves_out_a_seller_that_is_down_as_a_put_does(node_factory) -> None:
    """Alice asks less than Bob and dies without a word: her offer stays in Bob's book, current, but she is probed
    down.  `market book` clears Bob's standing need among those a put would be matched with, so it shows the price
    Bob's next put pays (his own ask), not the one Alice's ask would make (between hers and his)."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    alice = await node_factory("alice", **quiet, market={"storage_ask_floor": 500})
    bob = await node_factory("bob", **quiet, storage={"segment_size": 4096})
    await peer_with_provider(bob, alice)
    alice_id, market = alice.app[NODE].market.me, bob.app[NODE].market
    response = await bob.post("/v1/allocation/needs", json={"kind": "storage", "quantity": 1_000_000, "seconds": 600})
    assert response.status in (200, 201), await response.text()
    market.publish()  # the standing need's bid in the book at once, not after the publish delay

    async def hang() -> None:  # she dies without a word, as a kill -9 would: her offer stays current
        return None

    alice.app[NODE].market.leave = hang
    await close_node(alice)

    async def down() -> bool:
        await bob.app[NODE].health.probe_round()
        return not bob.app[NODE].peers.up(alice_id)

    await eventually_async(down, "Bob's node to probe Alice down", 20)
    assert [a for a in market.book.asks() if a.slot.owner == alice_id]
    book = await (await bob.get("/v1/market/book", params={"kind": "storage"})).json()
    shown = [row["clearing"]["price"] for row in book["books"] if row["clearing"]["price"] is not None]
    ask = (await _offer(bob))["storage"]["ask"]
    assert shown == [ask], book
    listed = await (await bob.get("/v1/market/prices", params={"kind": "storage", "limit": "1"})).json()
    assert [p["price"] for p in listed["prices"]] == [ask], listed
    response = await bob.post("/v1/store/files", data=os.urandom(10_000), params={"duration": "3600"})
    assert response.status == 201, await response.text()
    assert (await response.json())["prices"] == shown * 6
