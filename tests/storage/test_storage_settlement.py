"""Every put is a priced deal: credit for the whole lease is checked before anything is stored, and the
holders are paid in arrears for the byte-hours they held."""

from __future__ import annotations

import os

from xsc import keys
from xsc.ledger import byte_hours, price_storage
from xsc.node import CLIENT_IDENTITY, DB, IDENTITY
from xsc.node.appkeys import NODE


async def test_a_put_is_matched_and_its_holder_paid_for_what_it_held(node_factory) -> None:
    node = await node_factory(storage={"segment_size": 4096})
    resp = await node.post("/v1/store/files", data=os.urandom(10_000), params={"duration": "3600"})
    assert resp.status == 201
    result = await resp.json()
    share_bytes = result["stored_bytes"] // 6
    # One node offering storage at its floor (1,000), bids at the default 4,000: every share is placed there at
    # its own ask (a node that alone buys and sells in its market shares no surplus with anyone).
    assert result["prices"] == [1_000] * 6
    assert result["cost"] == 6 * price_storage(share_bytes, 3600, 1_000)
    assert [d["node"] for d in result["deals"]] == [node.app[IDENTITY].id] * 6
    ledger = node.app[NODE].ledger
    client = node.app[CLIENT_IDENTITY].public_key
    assert ledger.store.state(client).balance == 0  # nothing held yet, nothing paid
    # Ten minutes after the placement the holder is paid for ten minutes of each share (from the deals' own start:
    # a put that crosses a second boundary made `int(time.time()) + 600` 601 seconds after some of them).
    starts = {d.paid_until for d in node.app[NODE].deals.all()}
    later = min(starts) + 600
    paid = await node.app[NODE].deals.pay_due(later)
    assert paid["payments"] == 6
    one = price_storage(share_bytes, 600, 1_000)
    assert ledger.store.state(client).balance <= -6 * one + 6  # each period rounds up at most once
    assert ledger.store.state(node.app[IDENTITY].public_key).balance == -ledger.store.state(client).balance
    history = await ledger.history.entries(client, 10)
    assert any(str(byte_hours(share_bytes, later - start)) in str(history[0]) for start in starts)
    # Nothing is paid twice for the same time.
    again = await node.app[NODE].deals.pay_due(later)
    assert again["payments"] == 0
    assert node.app[NODE].gateway.store.used == result["stored_bytes"]


async def test_a_period_paid_0_is_known_paid_to_a_node_that_stopped_as_it_paid_it(node_factory) -> None:
    """A small file's share earns under a micro-credit a period, which is paid 0 (its receipt keeps the share from
    being collected unpaid).  A node killed between paying a period and noting it asks the ledger whether it was paid:
    a payment of 0 is one, or the period would be paid again, two receipts for one second held."""
    node = await node_factory()
    resp = await node.post("/v1/store/files", data=b"small", params={"duration": "3600"})
    assert resp.status == 201, await resp.text()
    deals = node.app[NODE].deals
    later = min(d.paid_until for d in deals.all()) + 60
    assert (await deals.pay_due(later))["payments"] == 6
    client = node.app[CLIENT_IDENTITY].public_key
    paid = [e for e in node.app[NODE].ledger.store.history(client, 10) if e.authorization.job.startswith("store:")]
    assert len(paid) == 6 and {e.receipt.amount for e in paid} == {0}, paid
    for entry in paid:
        assert node.app[NODE].payments.paid_for(entry.authorization.job) == ("paid", 0)


async def test_an_underfunded_put_is_refused_before_anything_is_stored(node_factory) -> None:
    node = await node_factory(storage={"segment_size": 4096}, ledger={"credit_limit": 1000},
                              market={"storage_ask_floor": 10**9, "storage_ask_ceiling": 10**9,
                                      "storage_bid": 10**9})
    resp = await node.post("/v1/store/files", data=os.urandom(10_000))
    assert resp.status == 402
    body = await resp.json()
    assert body["code"] == "insufficient-credit"
    store = node.app[NODE].gateway.store
    assert store.used == 0 and store.reserved == 0
    assert list(node.app[DB].iterator(prefix=b"s/", include_value=False)) == []
    assert list(node.app[DB].iterator(prefix=keys.STORAGE_DEALS, include_value=False)) == []
    ledger = node.app[NODE].ledger
    assert ledger.store.state(node.app[CLIENT_IDENTITY].public_key).balance == 0


async def test_a_bid_under_every_ask_stores_nothing_and_says_why(node_factory) -> None:
    node = await node_factory(storage={"segment_size": 4096})
    resp = await node.post("/v1/store/files", data=os.urandom(10_000), params={"max_price": "10"})
    assert resp.status == 409
    body = await resp.json()
    assert body["code"] == "no-deal" and set(body["needs"]) and "explain" in body["hint"]
    need = sorted(body["needs"])[0]
    explained = await (await node.get(f"/v1/market/explain/{need}")).json()
    assert explained["code"] in ("below_clearing_price", "no_trade"), explained  # a price reason
    assert node.app[NODE].gateway.store.used == 0


async def test_an_underfunded_chunked_put_is_rolled_back(node_factory) -> None:
    # A chunked put has no size up front: its cost is checked once it is stored, and unpaid it is not kept.
    node = await node_factory(storage={"segment_size": 4096}, ledger={"credit_limit": 1000},
                              market={"storage_ask_floor": 10**9, "storage_ask_ceiling": 10**9,
                                      "storage_bid": 10**9})

    async def body():
        for _ in range(3):
            yield os.urandom(4096)

    resp = await node.post("/v1/store/files", data=body())
    assert resp.status == 402
    store = node.app[NODE].gateway.store
    assert store.used == 0 and store.shares_held == 0
    kept = [k for k in node.app[DB].iterator(prefix=b"s/", include_value=False) if k != keys.STORAGE_USED]
    assert kept == []


async def test_a_put_can_avoid_providers_and_ask_for_availability(node_factory) -> None:
    node = await node_factory(storage={"segment_size": 4096})
    me = node.app[IDENTITY].id
    # The only provider avoided: nothing is stored, and the need says it was filtered out.
    resp = await node.post("/v1/store/files", data=os.urandom(10_000), params={"avoid": me})
    assert resp.status == 409
    refused = await resp.json()
    need = sorted(refused["needs"])[0]
    # the way out is the user's own filter: no price or wait would place it
    assert refused["hint"] == (f"see why with `xsc market explain {need}`; its filters leave out every provider with "
                               "room: drop an --avoid"), refused
    resp = await node.post("/v1/store/files", data=os.urandom(10_000), params={"max_price": "1"})
    assert resp.status == 409 and (await resp.json())["hint"].endswith("; raise --max-price, or wait for providers "
                                                                       "(xsc market book)")
    explained = await (await node.get(f"/v1/market/explain/{need}")).json()
    assert explained["code"] == "filtered_out", explained
    # This node counts as always up: a put asking for 0.99 availability lands, preferring it.
    resp = await node.post("/v1/store/files", data=os.urandom(10_000),
                           params={"min_availability": "0.99", "prefer": me})
    assert resp.status == 201, await resp.text()
    for params in ({"avoid": "not-a-node"}, {"min_availability": "1.5"}, {"min_availability": "x"}):
        resp = await node.post("/v1/store/files", data=b"x" * 10, params=params)
        assert resp.status == 400, params
