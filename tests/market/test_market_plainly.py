"""The market speaks plainly: explanations with figures, rm ends deals, one price a second."""

from __future__ import annotations

import time

from tests.support.compute import wasm
from xsc.node.appkeys import NODE
from xsc.storage import Capability


async def test_explain_gives_the_figures_and_what_would_have_matched(node) -> None:
    response = await node.post("/v1/store/files", data=b"q" * 5000, params={"max_price": "1"})
    assert response.status == 409
    need = sorted((await response.json())["needs"])[0]
    found = await (await node.get(f"/v1/market/explain/{need}")).json()
    assert found["code"] in ("below_clearing_price", "no_trade")
    assert found["bid"] == 1 and found["kind"] == "storage" and found["quantity"] > 0
    assert found["best_ask"] == node.app[NODE].market.offer.ask("storage")
    assert "a bid of at least" in found["would_match"]


async def test_removing_a_file_ends_its_deals(node) -> None:
    response = await node.post("/v1/store/files", data=b"r" * 5000)
    cap = (await response.json())["capability"]
    si = Capability.parse(cap).storage_index.hex()
    before = await (await node.get("/v1/market/status", params={"file": si})).json()
    assert before["deals"] and not any(d["ended"] for d in before["deals"])
    assert (await node.delete(f"/v1/store/files/{cap}")).status == 200
    after = await (await node.get("/v1/market/status", params={"file": si})).json()
    assert after["deals"] and all(d["ended"] for d in after["deals"])
    status = await (await node.get("/v1/market/status")).json()
    assert status["converged"] is True and status["converged_reason"] is None  # a node on its own agrees


async def test_prices_show_one_clearing_per_market_and_second(node) -> None:
    for n in range(3):
        assert (await node.post("/v1/store/files", data=bytes([n]) * 7000)).status == 201
    rows = (await (await node.get("/v1/market/prices", params={"limit": "100"})).json())["prices"]
    seconds = [(r["kind"], r["bucket"], r["time_ms"] // 1000) for r in rows]
    assert rows and len(seconds) == len(set(seconds))


async def test_a_put_that_cannot_survive_a_node_loss_says_so(node_factory) -> None:
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a, b = await node_factory("a", **quiet), await node_factory("b", **quiet)

    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    answer = await (await a.post("/v1/store/files", data=b"s" * 9000, params={"spread": "1"})).json()
    assert answer["nodes"] == 2 and answer["node_failures_survived"] == 0
    assert answer["placement_note"] == ("the 6 shares are on 2 nodes (warning: the loss of any one of them loses the "
                                        "file; add nodes with `xsc peers add URL`, then put the file again to "
                                        "spread its shares, and `xsc store rm` this capability)")
    kept = await (await a.post("/v1/store/files", data=b"s" * 9000)).json()  # by default, four stay home
    assert kept["nodes"] == 2 and kept["peer_failures_survived"] == 1


async def test_avoiding_the_only_other_provider_keeps_the_file_home(node_factory) -> None:
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a, b = await node_factory("a", **quiet), await node_factory("b", **quiet)

    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    for spread in ("0", "1"):  # one provider left: all six here, never "no room"
        response = await a.post("/v1/store/files", data=b"s" * 9000,
                                params={"avoid": b.app[NODE].peers.identity.id, "spread": spread})
        assert response.status == 201, await response.text()
        assert (await response.json())["placement"] == [a.app[NODE].peers.identity.id] * 6


async def test_a_put_from_a_stream_kept_whole_here_says_why_when_other_providers_offer(node_factory) -> None:
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a, b = await node_factory("a", **quiet), await node_factory("b", **quiet)

    await a.app[NODE].peers.add(b.app[NODE].peers.url)

    async def body():
        yield b"s" * 9000

    response = await a.post("/v1/store/files", data=body())
    answer = await response.json()
    assert response.status == 201 and answer["placement"] == [a.app[NODE].peers.identity.id] * 6, answer
    assert "put it from a file" in answer["kept_home"], answer


async def test_a_call_no_provider_offers_is_explained_in_fuel_and_utc(node_factory) -> None:
    node = await node_factory(market={"offer_compute": False})  # alone, offering no compute
    deployed = await (await node.post("/v1/modules", data=wasm("add"))).json()
    response = await node.post("/v1/compute/invoke", json={"module": deployed["id"], "function": "add",
                                                           "args": [1, 2], "fuel": 1_000_000})
    body = await response.json()
    assert response.status == 409 and body["code"] == "no-deal", body
    assert " UTC) at a location and with filters that fit: no active provider offers it" in body["detail"], body
    need = next(iter(body["needs"]))
    found = await (await node.get(f"/v1/market/explain/{need}")).json()
    assert found["would_match"] == f"a provider offering at least {found['quantity']:,} fuel for the need's whole " \
        "window" and found["quantity"] >= 1_000_000, found


async def test_prices_are_newest_first_whatever_their_kind_and_bucket(node) -> None:
    from xsc.market.core.auction import Clearing

    bucket = int(time.time()) // 3600
    prices = node.app[NODE].market.prices
    # the keys order them by kind, then bucket: a compute price and the next hour's storage price come after
    for at, kind, b, price in ((1_000_000, "compute", bucket, 11), (2_000_000, "storage", bucket + 1, 1500),
                               (3_000_000, "storage", bucket, 1200), (4_000_000, "compute", bucket, 12)):
        prices.record({(kind, b): Clearing(kind, b, price, price, price, 5, ())}, at)
    rows = (await (await node.get("/v1/market/prices", params={"limit": "3"})).json())["prices"]
    assert [(r["time_ms"], r["kind"], r["price"]) for r in rows] == [
        (4_000_000, "compute", 12), (3_000_000, "storage", 1200), (2_000_000, "storage", 1500)], rows
