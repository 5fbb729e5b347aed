"""Every invoke is paid by the local user to this node, by receipt for the metered fuel."""

from __future__ import annotations

from compute_helpers import deploy, invoke

from xsc.ledger import price_compute
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.compute_routes import COMPUTE
from xsc.node.ledger_routes import LEDGER


def _balances(node) -> tuple[int, int]:
    store = node.app[LEDGER].store
    return (store.state(node.app[CLIENT_IDENTITY].public_key).balance,
            store.state(node.app[IDENTITY].public_key).balance)


async def test_an_invoke_pays_for_the_fuel_it_used(node_factory) -> None:
    node = await node_factory(ledger={"price_per_fuel_million": 1_000_000})
    module = await deploy(node, "fibonacci")
    status, body = await invoke(node, module, "fib", 20, fuel=5_000_000)
    assert status == 200, body
    assert body["price"] == price_compute(body["fuel_consumed"], 1_000_000) > 0
    assert _balances(node) == (-body["price"], body["price"])
    entry = await (await node.get(f"/v1/ledger/entries/{body['ledger_entry']}")).json()
    assert str(body["fuel_consumed"]) in str(entry) and body["provenance"] in str(entry)


async def test_a_trapped_invoke_is_paid_for_its_whole_budget(node_factory) -> None:
    node = await node_factory(ledger={"price_per_fuel_million": 1_000})
    module = await deploy(node, "loop")
    status, body = await invoke(node, module, "spin", fuel=2_000_000)
    assert status == 422 and body["kind"] == "out-of-fuel", body
    assert "ledger_entry" in body
    assert _balances(node) == (-2_000, 2_000)


async def test_an_underfunded_invoke_is_refused_before_it_runs(node_factory) -> None:
    node = await node_factory(ledger={"credit_limit": 10, "price_per_fuel_million": 1_000_000})
    module = await deploy(node, "add")
    status, body = await invoke(node, module, "add", 1, 2, fuel=1_000_000)
    assert status == 402 and body["code"] == "insufficient-credit", body
    assert node.app[COMPUTE].recent_provenance(10) == []
    assert _balances(node) == (0, 0)
