"""Every put is paid: the local user's account pays this node for the lease, before or not at all."""

from __future__ import annotations

import os

from xsc import keys
from xsc.ledger import byte_hours, price_storage
from xsc.node import CLIENT_IDENTITY, DB, IDENTITY
from xsc.node.ledger_routes import LEDGER
from xsc.node.storage_routes import GATEWAY


async def test_a_put_settles_its_lease_with_the_node(node_factory) -> None:
    node = await node_factory(storage={"segment_size": 4096})
    resp = await node.post("/v1/store/files", data=os.urandom(10_000))
    assert resp.status == 201
    result = await resp.json()
    expected = price_storage(result["stored_bytes"], 30 * 86400, 1_000)
    assert result["price"] == expected > 0
    ledger = node.app[LEDGER]
    assert ledger.store.state(node.app[CLIENT_IDENTITY].public_key).balance == -expected
    assert ledger.store.state(node.app[IDENTITY].public_key).balance == expected
    entry = (await (await node.get(f"/v1/ledger/entries/{result['ledger_entry']}")).json())
    assert str(byte_hours(result["stored_bytes"], 30 * 86400)) in str(entry)
    assert node.app[GATEWAY].store.used == result["stored_bytes"]


async def test_an_underfunded_put_is_refused_before_anything_is_stored(node_factory) -> None:
    node = await node_factory(storage={"segment_size": 4096},
                              ledger={"credit_limit": 1000, "price_per_gib_hour": 10**9})
    resp = await node.post("/v1/store/files", data=os.urandom(10_000))
    assert resp.status == 402
    body = await resp.json()
    assert body["code"] == "insufficient-credit"
    store = node.app[GATEWAY].store
    assert store.used == 0 and store.reserved == 0
    assert list(node.app[DB].iterator(prefix=b"s/", include_value=False)) == []
    ledger = node.app[LEDGER]
    assert ledger.store.state(node.app[CLIENT_IDENTITY].public_key).balance == 0


async def test_an_underfunded_chunked_put_is_rolled_back(node_factory) -> None:
    # A chunked put has no size up front: the credit check fails at settlement and nothing is kept.
    node = await node_factory(storage={"segment_size": 4096},
                              ledger={"credit_limit": 1000, "price_per_gib_hour": 10**9})

    async def body():
        for _ in range(3):
            yield os.urandom(4096)

    resp = await node.post("/v1/store/files", data=body())
    assert resp.status == 402
    store = node.app[GATEWAY].store
    assert store.used == 0 and store.shares_held == 0
    kept = [k for k in node.app[DB].iterator(prefix=b"s/", include_value=False) if k != keys.STORAGE_USED]
    assert kept == []
