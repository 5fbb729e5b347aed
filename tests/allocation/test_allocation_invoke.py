"""Invokes served from the converged allocation, on two in-process nodes with real HTTP between them:
a gateway that offers no compute and a provider whose allocation gives the gateway's standing compute need units.
Each invoke runs on the provider that allocated to it, at the clearing price, and the standing need shrinks by
exactly the fuel the run used; once what is left of the allocation cannot hold a call's fuel budget, the call
market places the next call."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.support.allocation import FORK_WAIT, joining
from tests.support.waiting import eventually_async
from tests.support.compute import deploy, invoke
from xsc.errors import MarketNoDeal
from xsc.node.appkeys import NODE
from xsc.storage.strangers import PassingOver

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
FUEL = 100_000  # the calls' fuel limit: each reserves 2^17 = 131,072 units of the allocation
N = 15  # fib(15): a few tens of thousands of fuel, the same every time


async def _gateway_and_provider(node_factory):
    """A gateway a that offers no compute and a provider b, peers that recognise each other: (a, b's id)."""
    a, b = await _gateway_and_provider_node(node_factory)
    return a, b.app[NODE].peers.identity.id


async def _gateway_and_provider_node(node_factory):
    """`_gateway_and_provider`, with b itself: (a, b)."""
    market = {"allocation_delay": 0.05, "allocation_fork_wait": FORK_WAIT}
    a = await node_factory("a", **QUIET, market={**market, "offer_compute": False})
    b = await joining(node_factory, a, "b", **QUIET, market=market)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await a.app[NODE].market.fill_book()
    await b.app[NODE].market.fill_book()
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    a.app[NODE].market.set_recognition(b_id, Decimal(1))
    b.app[NODE].market.set_recognition(a_id, Decimal(1))
    return a, b


def _left(node, need: str) -> int | None:
    return next((n["quantity"] for n in node.app[NODE].allocation.status()["needs"] if n["id"] == need), None)


async def test_invokes_are_served_from_the_allocation_and_shrink_the_standing_need(node_factory) -> None:
    a, b_id = await _gateway_and_provider(node_factory)
    module = await deploy(a, "fibonacci")

    # No standing need yet: the call market places the call (on b, the only provider); b gets the module.
    status, first = await invoke(a, module, "fib", N, fuel=FUEL)
    assert status == 200 and first["provider"] == b_id and first["deal"]["allocated"] is False, first
    used = first["fuel_consumed"]
    reserved = 1 << FUEL.bit_length()
    assert 0 < used < reserved // 2

    # A standing compute need that holds two calls' budgets after one call, not after two.
    quantity = reserved + used + used // 2
    response = await a.post("/v1/allocation/needs", json={"kind": "compute", "quantity": quantity, "seconds": 600})
    assert response.status == 201
    need = (await response.json())["id"]
    allocation, market = a.app[NODE].allocation, a.app[NODE].market
    await eventually_async(lambda: allocation.allocated("compute").get(b_id) == quantity, "b to allocate a's whole need")

    left = quantity
    for call in range(2):
        status, body = await invoke(a, module, "fib", N, fuel=FUEL)
        assert status == 200 and body["results"][0]["value"] == 610, body
        # It ran on the provider that allocated to a, priced at the call market's clearing price ...
        assert body["provider"] == b_id and body["deal"]["allocated"] is True, (call, body["deal"])
        clearing = market.clearings()[("compute", market.offer.bucket())]
        assert body["deal"]["price"] == clearing.price, (body["deal"], clearing)
        # ... and the standing need shrank by exactly the fuel the run used.
        assert body["fuel_consumed"] == used
        assert _left(a, need) == left - used, (call, left, used, _left(a, need))
        left -= used
        # b's allocation follows the smaller need (received and served stay equal).
        await eventually_async(lambda: allocation.allocated("compute").get(b_id) == left, "b to follow the smaller need")
    assert a.app[NODE].dealing.status()["served_from_allocation"] == {"needs": 2, "units": 2 * used}

    # What is left (less than a call's budget) cannot hold the next call: the call market places it, and the
    # standing need no longer shrinks.
    assert left < reserved
    status, body = await invoke(a, module, "fib", N, fuel=FUEL)
    assert status == 200 and body["deal"]["allocated"] is False and body["provider"] == b_id, body["deal"]
    assert _left(a, need) == left
    assert a.app[NODE].dealing.status()["served_from_allocation"] == {"needs": 2, "units": 2 * used}


async def test_invokes_in_flight_at_once_are_not_each_placed_from_the_whole_allocation(node_factory,
                                                                                        monkeypatch) -> None:
    """A call placed from the allocation holds its reserved fuel of the provider's part until it ends: calls in flight
    at once are placed from what is left of it, else by the call market (each placed from the whole, three calls took
    three budgets of a part that holds one), and a call that ends without running gives its part back."""
    a, b_id = await _gateway_and_provider(node_factory)
    module = await deploy(a, "fibonacci")
    status, body = await invoke(a, module, "fib", N, fuel=FUEL)  # b gets the module
    assert status == 200 and body["provider"] == b_id, body
    reserved = 1 << FUEL.bit_length()
    quantity = reserved + reserved // 2  # one call's budget, not two
    response = await a.post("/v1/allocation/needs", json={"kind": "compute", "quantity": quantity, "seconds": 600})
    assert response.status == 201
    need = (await response.json())["id"]
    allocation, dealing = a.app[NODE].allocation, a.app[NODE].dealing
    await eventually_async(lambda: allocation.allocated("compute").get(b_id) == quantity, "b to allocate a's whole need")

    # Three calls, each placed while those before it are still in flight (held before they are sent to b).
    paid, sent, gate = a.app[NODE].paid, [], asyncio.Event()
    send = paid.invoke_remote

    async def held(provider, price, call, deal, verify, end=None):
        sent.append(deal)
        await gate.wait()
        return await send(provider, price, call, deal, verify, end)

    monkeypatch.setattr(paid, "invoke_remote", held)
    calls = []
    for n in range(1, 4):
        calls.append(asyncio.create_task(invoke(a, module, "fib", N, fuel=FUEL)))
        await eventually_async(lambda: len(sent) == n, f"call {n} to be placed")
    assert dealing.status()["held_from_allocation"] == {"compute": {b_id: reserved}}  # the first call's budget
    gate.set()
    answers = await asyncio.gather(*calls)
    assert [status for status, _ in answers] == [200] * 3, answers
    assert [body["deal"]["allocated"] for _, body in answers] == [True, False, False], [d for _, d in answers]
    used = answers[0][1]["fuel_consumed"]
    assert _left(a, need) == quantity - used

    # A call placed from the allocation that its provider refuses gives its part back: the next call runs on it.
    left = _left(a, need)
    status, refused = await invoke(a, module, "no_such_export", N, fuel=FUEL)
    assert status == 404 and refused["code"] == "export-not-found", refused
    assert sent[-1]["allocated"] is True and _left(a, need) == left
    assert dealing.status()["held_from_allocation"] == {}
    status, body = await invoke(a, module, "fib", N, fuel=FUEL)
    assert status == 200 and body["provider"] == b_id and body["deal"]["allocated"] is True, body["deal"]


async def _gated_deals(node_factory, monkeypatch, calls: int, deals: int):
    """A gateway whose standing compute need b allocates whole, holding `calls` calls' budgets, and whose deals each
    wait, once they hold the dealing's turn, for the test to set their gate: (dealing, b's id, a call's budget,
    the sizes of the deals run so far, their gates, a's default bid)."""
    a, b_id = await _gateway_and_provider(node_factory)
    reserved = 1 << FUEL.bit_length()
    quantity = calls * reserved + reserved // 2
    response = await a.post("/v1/allocation/needs", json={"kind": "compute", "quantity": quantity, "seconds": 600})
    assert response.status == 201
    allocation, dealing = a.app[NODE].allocation, a.app[NODE].dealing
    await eventually_async(lambda: allocation.allocated("compute").get(b_id) == quantity, "b to allocate a's whole need")
    dealt, gates = [], [asyncio.Event() for _ in range(deals)]
    run_deal = dealing._run_deal

    async def gated(bids, exclude, here):
        dealt.append(len(bids))
        await gates[len(dealt) - 1].wait()
        return await run_deal(bids, exclude, here)

    monkeypatch.setattr(dealing, "_run_deal", gated)
    return dealing, b_id, reserved, dealt, gates, a.app[NODE].paid.default_bid


async def test_a_caller_cancelled_while_its_deal_waits_holds_nothing_of_the_allocation(node_factory,
                                                                                      monkeypatch) -> None:
    """Calls whose callers are cancelled while their deal waits for another's hold nothing once that is over: one
    still waiting is left out of the next batch, one a batch is dealing has what it was placed from freed at once,
    so the provider's part serves only the calls that run."""
    # (each call its own price below: none is answered from another's kept deal)
    dealing, b_id, reserved, dealt, gates, bid = await _gated_deals(node_factory, monkeypatch, 4, 2)
    first = asyncio.create_task(dealing.compute_deal(FUEL, bid))
    await eventually_async(lambda: dealt == [1], "the first deal to hold the turn")
    kept, batched, gone = (asyncio.create_task(dealing.compute_deal(FUEL, bid + n)) for n in (1, 2, 3))
    await eventually_async(lambda: dealing.status()["deals_waiting"] == 3, "three deals to wait for their turn")
    gone.cancel()  # still waiting: left out of the batch dealt next
    await asyncio.wait([gone])
    gates[0].set()
    await eventually_async(lambda: len(dealt) == 2, "the two deals still waiting to be dealt as one batch")
    assert dealt == [1, 2]
    batched.cancel()  # its caller is gone while its batch is dealt
    await asyncio.wait([batched])
    gates[1].set()
    placed = [await first, await kept]
    assert all(a.provider == b_id and a.allocated for a in placed), placed
    assert dealing.status()["held_from_allocation"] == {"compute": {b_id: 2 * reserved}}
    for a in placed:
        dealing.ended(a)
    assert dealing.status()["held_from_allocation"] == {}
    assert batched.cancelled() and gone.cancelled() and dealing.status()["deals_waiting"] == 0


async def _two_dealt_as_one_batch(dealing, dealt: list, gates: list, bid: int) -> tuple[asyncio.Task, ...]:
    """A first deal holding the turn, then two deals that waited for it, dealt as one batch (held at its gate): the
    three calls' tasks."""
    first = asyncio.create_task(dealing.compute_deal(FUEL, bid))
    await eventually_async(lambda: dealt == [1], "the first deal to hold the turn")
    second, third = (asyncio.create_task(dealing.compute_deal(FUEL, bid + n)) for n in (1, 2))
    await eventually_async(lambda: dealing.status()["deals_waiting"] == 2, "two deals to wait for their turn")
    gates[0].set()
    await eventually_async(lambda: len(dealt) == 2, "the two waiting deals to be dealt as one batch")
    return first, second, third


async def test_a_caller_cancelled_before_its_batch_is_matched_takes_no_part_in_the_matching(node_factory,
                                                                                           monkeypatch) -> None:
    """A caller cancelled while its batch waits to be matched takes no part in that matching: the last call's budget
    the allocation holds, which its higher bid would have taken first, goes to the call still wanted (not to the
    call market), and nothing is held for the one gone."""
    dealing, b_id, reserved, dealt, gates, bid = await _gated_deals(node_factory, monkeypatch, 2, 2)
    first, kept, gone = await _two_dealt_as_one_batch(dealing, dealt, gates, bid)
    gone.cancel()  # before its batch is matched
    await asyncio.wait([gone])
    gates[1].set()
    placed = [await first, await kept]
    assert dealt == [1, 2] and all(a.provider == b_id and a.allocated for a in placed), (dealt, placed)
    assert dealing.status()["held_from_allocation"] == {"compute": {b_id: 2 * reserved}}
    for a in placed:
        dealing.ended(a)
    assert dealing.status()["held_from_allocation"] == {} and dealing.status()["deals_waiting"] == 0
    assert gone.cancelled()


async def test_deals_batched_with_a_dealer_cancelled_mid_deal_are_dealt_in_the_next_turn(node_factory,
                                                                                         monkeypatch) -> None:
    """The caller dealing a batch is cancelled mid-deal: the others of its batch are dealt in the next turn, as if
    they had waited for it, not cancelled with it; nothing is held once the calls placed end."""
    dealing, b_id, reserved, dealt, gates, bid = await _gated_deals(node_factory, monkeypatch, 3, 3)
    first, dealer, other = await _two_dealt_as_one_batch(dealing, dealt, gates, bid)
    dealer.cancel()
    await asyncio.wait([dealer])
    gates[2].set()
    placed = [await first, await other]
    assert dealt == [1, 2, 1] and all(a.provider == b_id and a.allocated for a in placed), (dealt, placed)
    assert dealer.cancelled()
    for a in placed:
        dealing.ended(a)
    assert dealing.status()["held_from_allocation"] == {} and dealing.status()["deals_waiting"] == 0


async def test_a_caller_gone_while_its_batch_is_dealt_is_left_out_when_the_batch_is_dealt_again_need_by_need(
        node_factory, monkeypatch) -> None:
    """A batch whose needs find no deal together is dealt again, each caller's alone: one cancelled while the batch was
    dealt is not matched again (nobody would take its answer; over a big book a matching holds a CPU for a tenth of a
    second), and the one still waiting is placed."""
    dealing, b_id, reserved, dealt, gates, bid = await _gated_deals(node_factory, monkeypatch, 4, 4)
    gated = dealing._run_deal

    async def none_together(bids, exclude, here):
        if len(bids) > 1:  # as a matching that finds no deal for the batch as a whole
            dealt.append(len(bids))
            await gates[len(dealt) - 1].wait()
            raise MarketNoDeal("the market found no provider for the batch together")
        return await gated(bids, exclude, here)

    monkeypatch.setattr(dealing, "_run_deal", none_together)
    first, kept, gone = await _two_dealt_as_one_batch(dealing, dealt, gates, bid)
    gone.cancel()  # its caller is gone while its batch is dealt
    await asyncio.wait([gone])
    for gate in gates[1:]:
        gate.set()
    placed = [await first, await kept]
    assert dealt == [1, 2, 1] and all(a.provider == b_id and a.allocated for a in placed), (dealt, placed)
    for a in placed:
        dealing.ended(a)
    assert dealing.status()["held_from_allocation"] == {} and dealing.status()["deals_waiting"] == 0


async def test_a_call_cancelled_while_its_providers_terms_are_asked_holds_nothing_of_the_allocation(
        node_factory, monkeypatch) -> None:
    """A call placed from the allocation whose caller is cancelled while the provider's terms are asked (a provider
    that wanted prepayment lately is asked again before it is passed over) gives back what it held of the provider's
    part: held until a restart, it would shrink what the allocation serves for good."""
    a, b_id = await _gateway_and_provider(node_factory)
    reserved = 1 << FUEL.bit_length()
    quantity = 2 * reserved + reserved // 2
    response = await a.post("/v1/allocation/needs", json={"kind": "compute", "quantity": quantity, "seconds": 600})
    assert response.status == 201
    dealing = a.app[NODE].dealing
    await eventually_async(lambda: a.app[NODE].allocation.allocated("compute").get(b_id) == quantity,
                           "b to allocate a's whole need")
    module = await deploy(a, "fibonacci")
    asked = asyncio.Event()

    async def never_answered(self, provider: str) -> bool:
        asked.set()
        await asyncio.Event().wait()  # the provider's terms never come: the caller is cancelled meanwhile
        return False

    monkeypatch.setattr(PassingOver, "passes", never_answered)
    call = asyncio.create_task(a.app[NODE].paid.invoke({"module": module, "function": "fib", "args": [N],
                                                        "fuel": FUEL}))
    await asyncio.wait_for(asked.wait(), 30)
    assert dealing.status()["held_from_allocation"] == {"compute": {b_id: reserved}}
    call.cancel()
    await asyncio.wait([call])
    assert dealing.status()["held_from_allocation"] == {}


async def test_a_call_whose_caller_goes_away_once_sent_holds_its_part_until_it_ran_and_spends_what_it_ran(
        node_factory, monkeypatch) -> None:
    """A call placed from the allocation whose caller is cancelled once the call was sent runs on at the provider:
    it holds its budget of the provider's part until its answer comes, and then the fuel it ran is spent of the part
    and of the standing need, as for a call whose caller waited."""
    a, b = await _gateway_and_provider_node(node_factory)
    b_id = b.app[NODE].peers.identity.id
    module = await deploy(a, "fibonacci")
    status, first = await invoke(a, module, "fib", N, fuel=FUEL)  # (b gets the module; the fuel a call of it runs)
    assert status == 200, first
    used, reserved = first["fuel_consumed"], 1 << FUEL.bit_length()
    quantity = 2 * reserved
    response = await a.post("/v1/allocation/needs", json={"kind": "compute", "quantity": quantity, "seconds": 600})
    assert response.status == 201
    need, dealing = (await response.json())["id"], a.app[NODE].dealing
    await eventually_async(lambda: a.app[NODE].allocation.allocated("compute").get(b_id) == quantity,
                           "b to allocate a's whole need")
    running, go = asyncio.Event(), asyncio.Event()
    provider = b.app[NODE]
    run_for_peer = provider.paid.run_for_peer

    async def held_up(*args, **kwargs):
        running.set()
        await go.wait()
        return await run_for_peer(*args, **kwargs)

    monkeypatch.setattr(provider.paid, "run_for_peer", held_up)
    call = asyncio.create_task(a.app[NODE].paid.invoke({"module": module, "function": "fib", "args": [N],
                                                        "fuel": FUEL}))
    await asyncio.wait_for(running.wait(), 30)
    call.cancel()
    await asyncio.wait([call])
    assert call.cancelled() and dealing.status()["held_from_allocation"] == {"compute": {b_id: reserved}}
    go.set()
    await eventually_async(lambda: dealing.status()["held_from_allocation"] == {}, "the answer of the call to come")
    assert dealing.status()["served_from_allocation"] == {"needs": 1, "units": used}
    assert _left(a, need) == quantity - used
