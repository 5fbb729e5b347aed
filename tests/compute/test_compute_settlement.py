"""Every invoke is paid by the local user to this node, by receipt for the metered fuel."""

from __future__ import annotations

from tests.support.compute import deploy, invoke

from xsc.ledger import price_compute
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE


async def _balances(node) -> tuple[int, int]:
    """Balances once every queued settlement is written (invokes settle after they answer)."""
    ledger = node.app[NODE].ledger
    await node.app[NODE].tabs.flush()
    while ledger._drainer is not None and not ledger._drainer.done():
        await ledger._drainer
    store = ledger.store
    return (store.state(node.app[CLIENT_IDENTITY].public_key).balance,
            store.state(node.app[IDENTITY].public_key).balance)


async def test_an_invoke_pays_for_the_fuel_it_used(node_factory) -> None:
    node = await node_factory(market={"compute_ask_floor": 1_000_000, "compute_ask_ceiling": 1_000_000, "compute_bid": 1_000_000})
    module = await deploy(node, "fibonacci")
    status, body = await invoke(node, module, "fib", 20, fuel=5_000_000)
    assert status == 200, body
    assert body["charge"] == price_compute(body["fuel_consumed"], 1_000_000) > 0
    assert await _balances(node) == (-body["charge"], body["charge"])
    history = await (await node.get("/v1/ledger/accounts/client/history")).json()
    [entry] = history["entries"] if "entries" in history else history
    assert entry["job"].startswith("compute:tab:1:") and entry["usage"] == {"fuel": body["fuel_consumed"], "invokes": 1}


async def test_a_trapped_invoke_is_paid_for_its_whole_budget(node_factory) -> None:
    node = await node_factory(market={"compute_ask_floor": 1_000, "compute_ask_ceiling": 1_000, "compute_bid": 1_000})
    module = await deploy(node, "loop")
    status, body = await invoke(node, module, "spin", fuel=2_000_000)
    assert status == 422 and body["kind"] == "out-of-fuel", body
    assert await _balances(node) == (-2_000, 2_000)


async def test_an_underfunded_invoke_is_refused_before_it_runs(node_factory) -> None:
    node = await node_factory(ledger={"credit_limit": 10}, market={"compute_ask_floor": 1_000_000, "compute_ask_ceiling": 1_000_000, "compute_bid": 1_000_000})
    module = await deploy(node, "add")
    status, body = await invoke(node, module, "add", 1, 2, fuel=1_000_000)
    assert status == 402 and body["code"] == "insufficient-credit", body
    # Said as what it is: the call's worst case is held, and asking for less is the fix (it would cost 4 fuel).
    assert body["detail"].startswith("insufficient credit: a call holds the most it may cost before it runs "
                                     "(1,000,000 fuel, 64.0 MiB of memory for 5 s: "), body
    assert body["hint"].startswith("ask for less with --fuel, --memory or --timeout"), body
    assert body["short"] == body["needed"] - body["available"] > 0, body
    assert node.app[NODE].compute.provenance_records.recent(10) == []
    assert await _balances(node) == (0, 0)


async def test_held_credit_stops_invokes_from_overspending(node_factory) -> None:
    # Each call holds its whole budget (1 credit; memory is free here) until its settlement is written.
    import asyncio

    node = await node_factory(ledger={"credit_limit": 3_000_000}, compute={"memory_price": 0}, market={"compute_ask_floor": 1_000_000, "compute_ask_ceiling": 1_000_000, "compute_bid": 1_000_000})
    module = await deploy(node, "add")
    ledger, payer = node.app[NODE].ledger, node.app[CLIENT_IDENTITY]
    for _ in range(3):  # three settlements in flight hold all the credit there is
        await ledger.hold(payer, 1_000_000)
    status, body = await invoke(node, module, "add", 1, 2, fuel=1_000_000)
    assert status == 402 and body["code"] == "insufficient-credit"
    status, body = await invoke(node, module, "add", "x", 2, fuel=1_000_000)
    assert status == 402  # the credit check comes before anything else is done
    ledger.release(payer, 3_000_000)
    status, _ = await invoke(node, module, "add", "x", 2, fuel=1_000_000)
    assert status == 400  # refused before it ran: its hold is given back
    results = await asyncio.gather(*(invoke(node, module, "add", 1, 2, fuel=1_000_000) for _ in range(3)))
    assert [s for s, _ in results] == [200, 200, 200]
    client, provider = await _balances(node)
    assert client == -provider and provider == sum(b["charge"] for _, b in results)
    assert ledger.holding() == {}


async def test_an_invoke_holds_no_more_than_the_balance_shows_available_with_what_puts_leases_promise_kept_aside(
        node_factory) -> None:
    price = 1_000_000  # a micro-credit per fuel, memory free: a call's budget is its fuel
    node = await node_factory(ledger={"credit_limit": 1_000_000}, compute={"memory_price": 0},
                              market={"compute_ask_floor": price, "compute_ask_ceiling": price, "compute_bid": price})
    module = await deploy(node, "add")
    response = await node.post(f"/v1/store/files?duration={3650 * 86400}", data=b"f" * 200_000)
    assert response.status == 201, await response.json()
    view = await (await node.get("/v1/ledger/accounts/client")).json()
    assert view["promised"] > 0, view
    # More than the balance shows available, though less than the credit left without what the put's leases promise.
    over = view["available"] + view["promised"] // 2
    status, body = await invoke(node, module, "add", 1, 2, fuel=over)
    assert (status, body["code"]) == (402, "insufficient-credit"), body
    assert (body["needed"], body["available"], body["promised"]) == (over, view["available"], view["promised"]), body
    status, body = await invoke(node, module, "add", 1, 2, fuel=view["available"])
    assert status == 200, body
