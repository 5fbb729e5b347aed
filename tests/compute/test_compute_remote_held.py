"""Remote invokes paid through tabs hold what is in flight, not the tab's cap, and a gateway pays a
provider's tab no more than its own tally of the provider's signed answers (two nodes, real HTTP between them)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from types import SimpleNamespace

import pytest

from tests.support.attacks import invoke_body
from tests.support.compute import deploy, invoke, invoke_at_once, peer_with_provider
from tests.support.jobs import verified
from tests.support.ledger import HeldWrite
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async

from xsc import keys
from xsc.compute import remote_tabs
from xsc.compute.placed_functions import function_job
from xsc.compute.remote_tabs import JOB, TAB_CALLS
from xsc.errors import Conflict, DealRefused, InvalidArgument, PeerUnreachable
from xsc.market import dealing, lookup
from xsc.identity import Identity
from xsc.ledger.core.model import decode_authorization, encode_authorization, parse_job_tab
from xsc.net.compute import INVOKE_PATH, close_tab
from xsc.compute.service import InvokeCall
from xsc.db import open_database
from xsc.node import CLIENT_IDENTITY, CONFIG, IDENTITY
from xsc.node.appkeys import NODE
from xsc.node.datadir import DB_DIR

PRICE = 1_000_000  # micro-credits per million fuel
FUEL = 250_000
MARKET_TERMS = {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "compute_bid": PRICE}
QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def _pair(node_factory, credit_limit_budgets: int):
    """A gateway that offers no compute (every call runs on the provider), with a credit limit of that many
    call budgets, and the provider; the module is deployed on the gateway (pushed to the provider)."""
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS)
    probe = await node_factory("probe", **QUIET)
    module = await deploy(probe, "add")
    budget = probe.app[NODE].compute.budget(InvokeCall(module, "add", [1, 2], FUEL), PRICE)
    await probe.close()
    gateway = await _gateway(node_factory, credit_limit_budgets * budget)
    await peer_with_provider(gateway, provider)
    assert await deploy(gateway, "add") == module
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)  # the provider gets the module
    assert status == 200 and body["provider"] == provider.app[NODE].peers.identity.id, body
    await _settle(gateway)
    return gateway, provider, module, budget


async def _gateway(node_factory, credit_limit: int, strikes: int = 5):
    """The gateway of `_pair` (started again from its data dir, if it ran before), quarantining a peer at its
    `strikes`-th misbehaviour."""
    return await node_factory("gateway", **{**QUIET, "peers": {**QUIET["peers"], "quarantine_strikes": strikes}},
                              market={**MARKET_TERMS, "offer_compute": False}, ledger={"credit_limit": credit_limit})


async def _call_answer_lost(gateway, module: str, monkeypatch) -> None:
    """One more call that the provider runs and whose answer the gateway never hears (as one in flight at a kill)."""
    client = gateway.app[NODE].paid.batcher.client
    request = client.request

    async def ran_unheard(url, method, path, **kwargs):
        response = await request(url, method, path, **kwargs)
        if path == INVOKE_PATH:
            raise PeerUnreachable("connection reset by peer")
        return response

    monkeypatch.setattr(client, "request", ran_unheard)
    status, _ = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status >= 500


def _never_closed(gateway, monkeypatch) -> None:
    """The gateway's tab is never closed, nor retired for its age (INTERVAL): however long its calls take, they are
    all on the one tab it opened."""
    tabs = gateway.app[NODE].paid.gateway_tabs
    monkeypatch.setattr(tabs, "_spawn_close", lambda tab: None)
    monkeypatch.setattr(tabs, "interval", 3600.0)


async def _settle(gateway) -> None:
    """Close every open tab now (and open new ones from then on)."""
    tabs = gateway.app[NODE].paid.gateway_tabs
    await tabs.close()
    await gateway.app[NODE].paid.payments.retry_all()
    tabs.start()


def _balances(gateway, provider) -> tuple[int, int]:
    return (gateway.app[NODE].ledger.store.state(gateway.app[CLIENT_IDENTITY].public_key).balance,
            provider.app[NODE].ledger.store.state(provider.app[IDENTITY].public_key).balance)


async def _paid(gateway, provider, before: tuple[int, int]) -> tuple[int, int]:
    """Close every open tab; what the gateway's client and the provider's node were paid since `before`."""
    await _settle(gateway)
    after = _balances(gateway, provider)
    return after[0] - before[0], after[1] - before[1]


def test_a_jobs_tab_names_its_job_under_the_prefix_every_provider_takes_a_tab_by() -> None:
    job = os.urandom(32).hex()
    label = remote_tabs.job_tab(job)
    assert label.startswith(JOB) and parse_job_tab(label) == job  # (ProviderTabs.check: `startswith(JOB)`)
    assert parse_job_tab(JOB) is None and parse_job_tab(function_job("owner", "name")) is None
    assert remote_tabs.job_tab("x" * 300) == JOB  # too long to sign: the prefix alone


async def test_remote_calls_hold_only_what_is_in_flight_and_unpaid_never_the_tab_cap(node_factory) -> None:
    # Ten budgets of credit: a tab's cap (TAB_CALLS budgets) is more than the payer may spend, so a tab
    # that held its cap would refuse the very first call.
    assert TAB_CALLS > 10
    gateway, provider, module, budget = await _pair(node_factory, 10)
    ledger, payer = gateway.app[NODE].ledger, gateway.app[CLIENT_IDENTITY].public_key
    before = _balances(gateway, provider)
    statuses, prices, samples = await invoke_at_once(gateway, module, lambda: ledger.held(payer), each=25,
                                                     fuel=FUEL)
    assert statuses.count(402) == 0 and set(statuses) == {200}, sorted(set(statuses))
    metered = sum(prices)
    assert 0 < metered < budget
    worst = max(held - flying * budget for held, flying in samples)
    assert worst <= metered, f"held credit exceeded the in-flight budgets by {worst} (all metered: {metered})"
    assert await _paid(gateway, provider, before) == (-metered, metered)
    assert ledger.held(payer) == 0


async def test_a_remote_call_holds_no_more_than_the_balance_shows_available_with_what_puts_promise_kept_aside(
        node_factory) -> None:
    gateway, provider, module, budget = await _pair(node_factory, 3)
    response = await gateway.post(f"/v1/store/files?duration={3650 * 86400}", data=b"f" * 200_000)
    assert response.status == 201, await response.json()
    view = await (await gateway.get("/v1/ledger/accounts/client")).json()
    assert view["promised"] > 0, view
    # A budget above what the balance shows available, though below the credit left without what the put's leases
    # promise (at this price a fuel is a micro-credit: a budget is the call's fuel and its memory's worth).
    memory = budget - FUEL
    over = view["available"] + view["promised"] // 2 - memory
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=over)
    assert (status, body.get("code")) == (402, "insufficient-credit"), body
    assert (body["available"], body["promised"]) == (view["available"], view["promised"]), body
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=view["available"] - memory)
    assert status == 200 and body["provider"] == provider.app[IDENTITY].id, body


async def test_a_gateway_refuses_to_pay_a_provider_total_above_its_own_tally(node_factory, monkeypatch) -> None:
    gateway, provider, module, budget = await _pair(node_factory, 100)
    tabs = provider.app[NODE].paid.provider_tabs
    before = _balances(gateway, provider)
    honest = tabs.ran

    def inflating(tab, call_budget, run) -> None:  # answers say the true price, the tab's total says more
        honest(tab, call_budget, run)
        if run is not None:
            tab.total += 1_000

    tabs.ran = inflating
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    assert all(status == 200 for status, _ in answers), answers
    metered = sum(body["charge"] for _, body in answers)
    assert metered + 3_000 <= TAB_CALLS * budget  # within the cap the payer signed: only the tally catches it
    # Nothing of the inflated tab is paid: the provider's receipt stays on its own chain, with no payment.
    assert await _paid(gateway, provider, before) == (0, metered + 3_000)
    gateway_tabs = gateway.app[NODE].paid.gateway_tabs
    assert gateway_tabs.refused_receipts == 1
    assert struck == [provider.app[IDENTITY].id]  # it claimed more than its own answers said its calls cost
    assert gateway.app[NODE].ledger.pending() == [] and gateway.app[NODE].ledger.holding() == {}
    for node in (gateway, provider):
        await verified(node)


async def test_a_provider_that_drops_the_answer_to_the_close_is_still_paid_no_more_than_the_tally(
        node_factory, monkeypatch) -> None:
    # The provider countersigns an inflated total when asked to close the tab, and the answer never arrives (it
    # cut the connection): the gateway's payment retry then fetches the receipt the provider holds.  It is held to
    # the same tally as the close: nothing is paid.
    gateway, provider, module, budget = await _pair(node_factory, 100)
    tabs = provider.app[NODE].paid.provider_tabs
    before = _balances(gateway, provider)
    honest = tabs.ran

    def inflating(tab, call_budget, run) -> None:
        honest(tab, call_budget, run)
        if run is not None:
            tab.total += 1_000

    tabs.ran = inflating
    real_close = remote_tabs.close_tab
    lost = []

    async def answer_lost(*args, **kwargs):
        await real_close(*args, **kwargs)  # the provider countersigns its total...
        lost.append(1)
        raise PeerUnreachable("connection reset by peer")  # ...and the gateway never hears it

    monkeypatch.setattr(remote_tabs, "close_tab", answer_lost)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    assert all(status == 200 for status, _ in answers), answers
    metered = sum(body["charge"] for _, body in answers)
    assert metered + 3_000 <= TAB_CALLS * budget
    assert await _paid(gateway, provider, before) == (0, metered + 3_000)
    assert lost == [1]  # the retry found the receipt the provider held: it did not close the tab again
    assert gateway.app[NODE].paid.gateway_tabs.refused_receipts == 1
    assert gateway.app[NODE].ledger.pending() == [] and gateway.app[NODE].ledger.holding() == {}
    for node in (gateway, provider):
        await verified(node)


async def test_a_lost_answer_to_an_honest_close_is_paid_by_the_retry(node_factory, monkeypatch) -> None:
    gateway, provider, module, _ = await _pair(node_factory, 100)
    before = _balances(gateway, provider)
    real_close = remote_tabs.close_tab

    async def answer_lost(*args, **kwargs):
        await real_close(*args, **kwargs)
        raise PeerUnreachable("connection reset by peer")

    monkeypatch.setattr(remote_tabs, "close_tab", answer_lost)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    metered = sum(body["charge"] for _, body in answers)
    assert await _paid(gateway, provider, before) == (-metered, metered)
    assert gateway.app[NODE].paid.gateway_tabs.refused_receipts == 0
    assert gateway.app[NODE].ledger.pending() == [] and gateway.app[NODE].ledger.holding() == {}


async def test_a_call_its_provider_recorded_then_answered_with_a_server_error_is_paid_not_struck(
        node_factory, monkeypatch) -> None:
    # A fault after the run's record (here in the provider's bookkeeping after it): the answer is a 500, the call
    # ran and is on the provider's tab.  Counted as lost, its receipt is paid; counted as never run, it was refused.
    gateway, provider, module, _ = await _pair(node_factory, 100)
    before = _balances(gateway, provider)
    market = provider.app[NODE].paid.market
    note_fuel, faults = market.offer.note_fuel, []

    def fault_once(fuel: int) -> None:
        if not faults:
            faults.append(fuel)
            raise RuntimeError("the answer could not be made")
        note_fuel(fuel)

    monkeypatch.setattr(market.offer, "note_fuel", fault_once)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    status, problem = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 502 and problem["code"] == "peer-unreachable", problem
    status, answered = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 200 and faults, answered
    paid, owed = await _paid(gateway, provider, before)
    assert paid == -owed and owed > answered["charge"], (paid, owed)  # both calls ran under the one tab
    assert gateway.app[NODE].paid.gateway_tabs.refused_receipts == 0 and struck == []
    assert gateway.app[NODE].ledger.pending() == [] and gateway.app[NODE].ledger.holding() == {}


async def test_a_call_its_provider_refuses_busy_is_released_at_once_and_answered_as_the_providers_503(
        node_factory, monkeypatch) -> None:
    # A 503 from the provider (busy, its own credit exhausted) comes before anything ran: not lost, so its budget is
    # not held until the tab is paid, and its user reads a busy answer to retry, not a peer gone.
    gateway, provider, module, _ = await _pair(node_factory, 100)
    before = _balances(gateway, provider)
    compute = provider.app[NODE].compute
    monkeypatch.setattr(compute, "max_queued", 0)
    status, problem = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 503 and problem["code"] == "peer-refused", problem
    assert problem["peer_code"] == "compute-busy" and "the node is busy" in problem["detail"], problem
    assert gateway.app[NODE].ledger.holding() == {}  # given back at once, not held as a call that may have run
    monkeypatch.undo()
    status, answered = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 200, answered
    assert await _paid(gateway, provider, before) == (-answered["charge"], answered["charge"])


async def test_a_repeated_close_of_a_tab_raises_its_gateways_recognition_once(node_factory) -> None:
    # What a tab's receipt pays raises its gateway's recognition on the provider (the money exchanged with it).  A
    # close repeated after the receipt is made gets that receipt again, and counted each time it raised the
    # gateway's weight at will (and that of any node that replayed the close).
    gateway, provider, module, _ = await _pair(node_factory, 100)
    counters = provider.app[NODE].market.weights.counters
    gateway_id, provider_id = gateway.app[IDENTITY].id, provider.app[IDENTITY].id
    was = counters()["paid_by"].get(gateway_id, 0)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    metered = sum(body["charge"] for _, body in answers)
    await _settle(gateway)
    assert counters()["paid_by"][gateway_id] == was + metered
    receipt = provider.app[NODE].ledger.store.history(provider.app[IDENTITY].public_key, 1)[0]
    closed = encode_authorization(receipt.authorization).hex()
    url = gateway.app[NODE].peers.peer(provider_id).url
    for _ in range(10):
        again = await close_tab(gateway.app[NODE].client, url, provider_id, closed)
        assert again["receipt"] == receipt.encode().hex()
    assert counters()["paid_by"][gateway_id] == was + metered


async def test_a_tabs_close_cut_short_as_its_receipt_is_written_raises_its_gateways_recognition_all_the_same(
        node_factory, monkeypatch) -> None:
    # A stop that cuts the close short as its receipt is written waits for the write (the receipt and its count land
    # whole), and what the receipt pays is noted by the market as when the close is answered.
    gateway, provider, module, _ = await _pair(node_factory, 100)
    _never_closed(gateway, monkeypatch)
    status, answer = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 200, answer
    (tab,) = gateway.app[NODE].ledger.pending()
    node, gateway_id = provider.app[NODE], gateway.app[IDENTITY].id
    earned = node.market.weights.earned(gateway_id)
    held = HeldWrite(node.ledger.store, "countersign", monkeypatch)
    closing = asyncio.create_task(node.paid.close_tab(gateway_id, {"authorization": encode_authorization(tab).hex()}))
    await held.reached_writer()
    closing.cancel()
    held.released.set()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert held.written.is_set() and (await node.ledger.receipt_for(tab.id)).amount == answer["charge"]
    assert node.market.weights.earned(gateway_id) == earned + answer["charge"]


async def test_a_single_call_cut_short_as_its_receipt_is_written_raises_its_gateways_recognition_all_the_same(
        node_factory, monkeypatch) -> None:
    node = await node_factory("provider", **QUIET)
    services, gateway = node.app[NODE], Identity.generate()
    module = await deploy(node, "add")
    body = json.loads(invoke_body(gateway, node.app[IDENTITY].public_key, module))
    held = HeldWrite(services.ledger.store, "countersign", monkeypatch)
    running = asyncio.create_task(services.paid.run_for_peer(gateway.id, body))
    await held.reached_writer()
    running.cancel()
    held.released.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    receipt = await services.ledger.receipt_for(decode_authorization(bytes.fromhex(body["authorization"])).id)
    assert held.written.is_set() and receipt.amount > 0
    assert services.market.weights.earned(gateway.id) == receipt.amount
    assert services.trust.line(gateway.id)["paid"] == receipt.amount


async def test_an_honest_provider_total_is_paid_exactly(node_factory) -> None:
    gateway, provider, module, _ = await _pair(node_factory, 100)
    before = _balances(gateway, provider)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    metered = sum(body["charge"] for _, body in answers)
    assert await _paid(gateway, provider, before) == (-metered, metered)
    assert gateway.app[NODE].paid.gateway_tabs.refused_receipts == 0
    # Invokes share a tab: its job reference names no job, on either chain.
    for node, account in ((gateway, gateway.app[CLIENT_IDENTITY]), (provider, provider.app[IDENTITY])):
        (newest,) = node.app[NODE].ledger.store.history(account.public_key, 1)
        assert (newest.authorization.job, newest.receipt.amount) == (JOB, metered)


async def test_the_payment_retry_leaves_an_open_tab_to_its_gateway(node_factory) -> None:
    # The retry of pending payments finishes authorizations nobody is finishing; a tab still open is its
    # gateway's (closing it under the gateway's feet refused the next calls: 502 authorization-replayed).
    gateway, provider, module, _ = await _pair(node_factory, 100)
    before = _balances(gateway, provider)
    status, first = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 200
    assert await gateway.app[NODE].paid.payments.retry_all() == {}  # the open tab is not its to close
    status, second = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 200 and second["tab"] == first["tab"], second
    metered = first["charge"] + second["charge"]
    assert await _paid(gateway, provider, before) == (-metered, metered)
    assert await gateway.app[NODE].paid.payments.retry_all() == {}  # closed and paid: nothing left to retry


async def test_a_tab_nothing_ran_under_is_dropped_by_the_payment_retry_and_never_countersigned(node_factory) -> None:
    # A tab left pending with no call run under it (its gateway stopped by a kill -9 right after opening it): the
    # provider signs no receipt of 0 (an entry on its chain for good), and the retry drops it at once, so what it
    # held is given back now, not when it expires.
    gateway, provider, _, budget = await _pair(node_factory, 100)
    payments, payer = gateway.app[NODE].paid.payments, gateway.app[CLIENT_IDENTITY].public_key
    ledger, chain = gateway.app[NODE].ledger, provider.app[NODE].ledger.store
    seq = chain.state(provider.app[IDENTITY].public_key).seq
    auth = await payments.authorize(provider.app[NODE].peers.identity.id, TAB_CALLS * budget, JOB, ttl=3600)
    assert ledger.held(payer) == TAB_CALLS * budget
    assert await payments.retry_all() == {"abandoned": 1}
    assert ledger.held(payer) == 0 and ledger.pending() == [] and await ledger.payment_for(auth.id) is None
    assert chain.state(provider.app[IDENTITY].public_key).seq == seq


@pytest.mark.parametrize("placed", [False, True], ids=["calls", "a placed function"])
async def test_a_tab_opened_as_the_gateway_stopped_with_no_tally_yet_is_dropped_at_the_start_unshown(
        node_factory, monkeypatch, placed) -> None:
    # A kill -9 between a tab's authorization and its first tally: the tab was never shown to its provider, so
    # nothing is owed under it.  At the start it is dropped before the payment retry would send it to the provider
    # to close, where one that countersigns its whole cap would be paid it (no tally to hold it to).
    gateway, provider, _, budget = await _pair(node_factory, 100)
    credit_limit = gateway.app[NODE].config.ledger.credit_limit
    before = _balances(gateway, provider)
    payments = gateway.app[NODE].paid.payments
    job = function_job(gateway.app[NODE].peers.identity.id, "f") if placed else JOB
    auth = await payments.authorize(provider.app[NODE].peers.identity.id, TAB_CALLS * budget, job, ttl=3600, hold=0)
    payments.keep_off(auth.id)  # (as the tab being opened)
    await close_node(gateway)
    provider_tabs, shown = provider.app[NODE].paid.provider_tabs, []

    async def countersign_the_cap(auth, sender=None, closer=None, count=None, written=None):
        shown.append(auth.id)
        receipt = await provider.app[NODE].ledger.countersign(provider_tabs.node, auth, auth.cap,
                                                              {"fuel": 0, "invokes": 1}, verified=True,
                                                              count=count, written=written)
        return receipt, True

    monkeypatch.setattr(provider_tabs, "close_once", countersign_the_cap)
    gateway = await _gateway(node_factory, credit_limit)
    node = gateway.app[NODE]
    await eventually_async(lambda: auth.id not in {a.id for a in node.ledger.pending()}, "the tab dropped", 30)
    assert await node.paid.payments.retry_all() == {}
    assert shown == [] and _balances(gateway, provider) == before
    assert node.ledger.holding() == {}


async def test_a_placed_functions_tab_left_pending_by_a_node_that_kept_it_no_tally_is_paid_not_dropped(
        node_factory, monkeypatch) -> None:
    # Data a node wrote while it kept no tally of placed functions' tabs (no TABS_TALLIED mark): a function tab
    # pending with none was shown, its function served under it.  The start takes it as it was then (held to its
    # cap, on disk from now on), not as a tab opened as the node stopped: its provider is paid what it ran.
    gateway, provider, _, budget = await _pair(node_factory, 100)
    credit_limit = gateway.app[NODE].config.ledger.credit_limit
    before = _balances(gateway, provider)
    payments = gateway.app[NODE].paid.payments
    auth = await payments.authorize(provider.app[NODE].peers.identity.id, TAB_CALLS * budget,
                                     function_job(gateway.app[NODE].peers.identity.id, "f"), ttl=3600)
    payments.keep_off(auth.id)  # (as a placed function's tab in use)
    data_dir = gateway.app[CONFIG].data_dir
    await close_node(gateway)
    db = open_database(data_dir / DB_DIR)
    try:
        db.delete(keys.TABS_TALLIED, sync=True)
    finally:
        db.close()
    provider_tabs, ran = provider.app[NODE].paid.provider_tabs, 3 * budget // 4

    async def countersign_what_ran(auth, sender=None, closer=None, count=None, written=None):
        receipt = await provider.app[NODE].ledger.countersign(provider_tabs.node, auth, ran,
                                                              {"fuel": 0, "invokes": 1}, verified=True,
                                                              count=count, written=written)
        return receipt, True

    monkeypatch.setattr(provider_tabs, "close_once", countersign_what_ran)
    gateway = await _gateway(node_factory, credit_limit)
    node = gateway.app[NODE]
    await eventually_async(lambda: auth.id not in {a.id for a in node.ledger.pending()},
                           "the tab paid by the payment retry", 30)
    assert _balances(gateway, provider) == (before[0] - ran, before[1] + ran)
    assert node.ledger.holding() == {} and node.paid.gateway_tabs.tallies.on_disk() == 0
    for each in (gateway, provider):
        await verified(each)


@pytest.mark.parametrize("inflated, lost_answer", [(False, False), (True, False), (False, True)],
                         ids=["honest", "inflated", "a call ran whose answer never came"])
async def test_a_tab_a_gateway_left_open_when_killed_is_paid_no_more_than_its_tally_at_the_start(
        node_factory, monkeypatch, inflated, lost_answer) -> None:
    # What a kill -9 leaves: the tab open with three calls answered under it, never closed; the gateway starts
    # again from its data dir and its payment retry closes the tab.  A provider that countersigns the whole cap then
    # (knowing the gateway's memory of the tab died with it) is held to the tally the gateway wrote as it went.  A
    # call the provider ran whose answer the gateway never heard (as one in flight at the kill) is in that tally.
    gateway, provider, module, budget = await _pair(node_factory, 100)
    credit_limit = gateway.app[NODE].config.ledger.credit_limit
    before = _balances(gateway, provider)
    _never_closed(gateway, monkeypatch)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    assert all(status == 200 for status, _ in answers), answers
    metered = sum(body["charge"] for _, body in answers)
    if lost_answer:
        await _call_answer_lost(gateway, module, monkeypatch)
        metered += answers[0][1]["charge"]  # the same call: the same charge
    (tab,) = [a for a in gateway.app[NODE].ledger.pending() if a.job == JOB]
    assert gateway.app[NODE].paid.gateway_tabs.tallies.on_disk() == 1
    await close_node(gateway)
    if inflated:
        ledger = provider.app[NODE].ledger
        countersign = ledger.countersign
        monkeypatch.setattr(ledger, "countersign", lambda payee, auth, amount, usage, **kw:
                            countersign(payee, auth, auth.cap, usage, **kw))
    gateway = await _gateway(node_factory, credit_limit, strikes=1)
    node = gateway.app[NODE]
    await eventually_async(lambda: tab.id not in {a.id for a in node.ledger.pending()},
                           "the tab left open paid or dropped at the start", 30)
    paid = tuple(after - was for after, was in zip(_balances(gateway, provider), before))
    assert paid == ((0, tab.cap) if inflated else (-metered, metered))
    assert node.paid.gateway_tabs.refused_receipts == (1 if inflated else 0)
    # Struck (once is enough here), so passed over: no call goes to it while it is quarantined.
    assert (node.quarantine.active(provider.app[IDENTITY].id) is not None) == inflated
    if inflated:
        status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
        assert status != 200 and "provider" not in body, body
    assert node.ledger.holding() == {} and node.paid.gateway_tabs.tallies.on_disk() == 0
    for each in (gateway, provider):
        await verified(each)


async def test_a_tab_whose_tally_on_disk_is_unreadable_does_not_stop_the_start_and_is_held_to_its_cap(
        node_factory, monkeypatch) -> None:
    # A tally cut short on disk (a disk's fault): the gateway starts all the same, and the tab is held to the cap
    # its payer signed, at that start and the next (not taken then for a tab never shown, and dropped); the
    # provider's honest receipt is paid.
    gateway, provider, module, budget = await _pair(node_factory, 100)
    credit_limit = gateway.app[NODE].config.ledger.credit_limit
    before = _balances(gateway, provider)
    _never_closed(gateway, monkeypatch)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(2)]
    assert all(status == 200 for status, _ in answers), answers
    (tab,) = [a for a in gateway.app[NODE].ledger.pending() if a.job == JOB]
    data_dir = gateway.app[CONFIG].data_dir
    await close_node(gateway)
    db = open_database(data_dir / DB_DIR)
    try:
        db.put(keys.tab_tally(tab.id), b"\x00" * 5, sync=True)
    finally:
        db.close()
    provider_tabs, tried = provider.app[NODE].paid.provider_tabs, []
    close_once = provider_tabs.close_once

    async def busy(auth, sender=None, closer=None, count=None, written=None):
        tried.append(auth.id)
        raise Conflict("1 calls are still running under this tab", hint="close it in a moment")

    monkeypatch.setattr(provider_tabs, "close_once", busy)
    gateway = await _gateway(node_factory, credit_limit)
    await eventually_async(lambda: tried, "the start's payment retry to try closing the tab", 30)
    await close_node(gateway)
    monkeypatch.setattr(provider_tabs, "close_once", close_once)
    gateway = await _gateway(node_factory, credit_limit)
    node = gateway.app[NODE]
    await eventually_async(lambda: tab.id not in {a.id for a in node.ledger.pending()},
                           "the tab left open paid at the next start", 30)
    metered = sum(body["charge"] for _, body in answers)
    assert tuple(after - was for after, was in zip(_balances(gateway, provider), before)) == (-metered, metered)
    assert node.ledger.holding() == {} and node.paid.gateway_tabs.tallies.on_disk() == 0


async def test_a_tab_left_open_by_a_stop_holds_only_its_tally_at_once_after_the_start(node_factory,
                                                                                       monkeypatch) -> None:
    # Three calls answered and one whose answer was lost, the tab never closed, then the gateway stops with its
    # provider gone: the tab stays pending after the start, and the user may spend what it held before the stop
    # (what the answers owe, and the lost call's budget), not its signed cap less.
    gateway, provider, module, budget = await _pair(node_factory, 100)
    credit_limit = gateway.app[NODE].config.ledger.credit_limit
    _never_closed(gateway, monkeypatch)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    assert all(status == 200 for status, _ in answers), answers
    await _call_answer_lost(gateway, module, monkeypatch)
    owed = sum(body["charge"] for _, body in answers) + budget
    (tab,) = [a for a in gateway.app[NODE].ledger.pending() if a.job == JOB]
    assert owed < tab.cap
    before = await (await gateway.get("/v1/ledger/accounts/client")).json()
    assert before["held"] == owed, before
    await close_node(gateway)
    await close_node(provider)  # the start's payment retry cannot close the tab: it stays pending
    gateway = await _gateway(node_factory, credit_limit)
    assert tab.id in {a.id for a in gateway.app[NODE].ledger.pending()}
    after = await (await gateway.get("/v1/ledger/accounts/client")).json()
    assert (after["held"], after["available"]) == (owed, before["available"]), (before, after)
    assert gateway.app[NODE].ledger.held_for(tab.id) == owed


async def test_the_provider_prunes_the_run_records_of_every_settled_tab(node_factory) -> None:
    gateway, provider, module, _ = await _pair(node_factory, 100)
    tabs = provider.app[NODE].paid.provider_tabs
    assert tabs.records() == 0  # the first call's tab is settled already
    for _ in range(3):
        for _ in range(5):
            status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
            assert status == 200, body
        assert tabs.records() == 5  # the open tab's runs: what its total is summed from after a restart
        await _settle(gateway)
        assert tabs.records() == 0  # they do not pile up: each settled tab's records are gone
    assert tabs.pruned == 17  # and the record of the first call's tab: its run, and compiling the module pushed


async def test_a_stop_between_the_receipt_and_the_prune_loses_nothing_and_the_next_start_prunes(
        node_factory) -> None:
    gateway, provider, module, _ = await _pair(node_factory, 100)
    before = _balances(gateway, provider)
    tabs = provider.app[NODE].paid.provider_tabs
    tabs.prune = lambda authorization_id: 0  # as if killed right after the receipt's synced write
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(4)]
    metered = sum(body["charge"] for _, body in answers)
    assert await _paid(gateway, provider, before) == (-metered, metered)
    assert tabs.records() == 4
    provider_balance = _balances(gateway, provider)[1]
    await provider.close()
    again = await node_factory("provider", **QUIET, market=MARKET_TERMS)  # same data dir
    assert again.app[NODE].paid.provider_tabs.records() == 0
    assert again.app[NODE].ledger.store.state(again.app[IDENTITY].public_key).balance == provider_balance
    await verified(again)


async def test_a_tab_its_provider_restarted_under_is_closed_at_once_and_pays_every_call_that_ran(
        node_factory, monkeypatch) -> None:
    # A stop of the provider (as a kill -9: its tabs are kept in memory only) while a call's answer is on its way:
    # what it counted running died with it, so the close the gateway sends its next process is answered at once,
    # and the receipt pays every call that ran before, the one whose answer was lost included.
    gateway, provider, module, _ = await _pair(node_factory, 100)
    before = _balances(gateway, provider)
    answers = [await invoke(gateway, module, "add", 1, 2, fuel=FUEL) for _ in range(3)]
    assert all(status == 200 for status, _ in answers), answers
    client = gateway.app[NODE].paid.batcher.client
    request, ran, restarted = client.request, asyncio.Event(), asyncio.Event()

    async def answer_lost_at_the_restart(url, method, path, **kwargs):
        response = await request(url, method, path, **kwargs)
        if path != INVOKE_PATH:
            return response
        ran.set()
        await restarted.wait()
        raise PeerUnreachable("connection reset by peer")

    monkeypatch.setattr(client, "request", answer_lost_at_the_restart)
    call = asyncio.ensure_future(invoke(gateway, module, "add", 1, 2, fuel=FUEL))
    await asyncio.wait_for(ran.wait(), 60)
    listen = provider.app[CONFIG].node.listen
    await close_node(provider)
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS, node={"listen": listen})
    tabs, refused = provider.app[NODE].paid.provider_tabs, []
    close_once = tabs.close_once

    async def answered(auth, sender=None, closer=None, count=None, written=None):
        try:
            return await close_once(auth, sender=sender, closer=closer, count=count, written=written)
        except Conflict as err:
            refused.append(err)
            raise

    tabs.close_once = answered
    restarted.set()
    status, _ = await call
    assert status >= 500
    await eventually_async(lambda: not [a for a in gateway.app[NODE].ledger.pending() if a.job == JOB],
                           "the tab paid", 30)
    assert refused == []
    charged = sum(body["charge"] for _, body in answers) * 4 // 3  # the same call four times, each at one charge
    assert _balances(gateway, provider) == (before[0] - charged, before[1] + charged)
    await verified(provider)


async def test_a_provider_tab_keeps_only_the_charge_of_a_call_whose_record_is_queued(node_factory) -> None:
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS)
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False})
    await gateway.app[NODE].peers.add(provider.app[NODE].peers.url)
    budget, charge = 1_000, 10
    auth = await gateway.app[NODE].payments.authorize(provider.app[IDENTITY].id, 3 * budget, JOB, ttl=3600)
    tabs = provider.app[NODE].paid.provider_tabs
    tab = await tabs.reserve(auth, budget)
    await tabs.reserve(auth, budget)
    with pytest.raises(DealRefused):
        await tabs.reserve(auth, 2 * budget)
    tabs.replace_hold(tab, budget, charge)  # the first call answered, its record queued: its charge stays reserved
    assert (tab.reserved, tab.in_flight) == (budget + charge, 2)
    await tabs.reserve(auth, budget)  # room for one more budget now
    with pytest.raises(DealRefused):  # but not past the cap with the queued charge
        await tabs.reserve(auth, budget - charge + 1)
    with pytest.raises(InvalidArgument):  # a charge over what was held is not taken
        tabs.replace_hold(tab, budget, budget + 1)
    with pytest.raises(Conflict):  # the queued call is still in flight: no receipt leaves it out
        await tabs.close(auth)
    tabs.ran(tab, charge, None)  # its record was not written: nothing owed
    tabs.ran(tab, budget, None)
    tabs.ran(tab, budget, None)
    assert (tab.reserved, tab.in_flight, tab.total, tab.count) == (0, 0, 0, 0)


async def test_a_gateway_keeps_nothing_of_the_providers_it_opened_tabs_with_but_the_one_opening_now(tmp_path) -> None:
    """A tab is opened one at a time per provider; the providers called are whoever the matching or a stranger's
    provider records name, so what orders the opening is kept only while a tab is being opened or waited for."""
    authorized: list[str] = []
    slow_one = asyncio.Event()

    async def promised(account: bytes) -> int:
        return 0

    class Payments:
        ledger = SimpleNamespace(hold_for=lambda auth, budget, promised: None, promised=promised)
        payer = SimpleNamespace(public_key=b"p" * 32)

        def add_closer(self, *args, **kwargs) -> None:
            pass

        def keep_off(self, authorization_id: bytes) -> None:
            pass

        async def authorize(self, provider: str, cap: int, job: str, ttl: int, hold: int):
            authorized.append(provider)
            if provider == "slow":
                await slow_one.wait()
            return SimpleNamespace(id=os.urandom(32), cap=cap, expires_at=time.time() + ttl)

    db = open_database(tmp_path / "db")
    tabs = remote_tabs.GatewayTabs(db=db, payments=Payments(), client=None, peers=None)
    first = asyncio.create_task(tabs.reserve("slow", 1, 10))
    second = asyncio.create_task(tabs.reserve("slow", 1, 10))  # waits for the first's tab rather than open one
    await asyncio.sleep(0)
    for n in range(500):
        await tabs.reserve(f"provider{n}", 1, 10)
    assert tabs.opening == 1
    slow_one.set()
    assert (await first) is (await second) and authorized.count("slow") == 1
    assert tabs.opening == 0
    db.close()


async def test_a_call_that_honestly_costs_more_than_the_gateways_budget_is_refused_but_not_struck(
        node_factory, monkeypatch) -> None:
    # A call that leaves its fuel unset runs under each node's own ceiling: the provider's is above the gateway's, so
    # the run costs more than the budget the gateway made (its answer is taken as one lost, worth that budget).  The
    # provider's honest receipt is above the gateway's tally, so it is not paid; but it claims no call it did not
    # run, so it is not struck either.
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS, compute={"fuel": 10_000_000})
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False},
                                 compute={"fuel": 1_000_000}, ledger={"credit_limit": 100_000_000})
    await peer_with_provider(gateway, provider)
    module = await deploy(gateway, "fibonacci")
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    status, body = await invoke(gateway, module, "fib", 25)
    assert status >= 400 and "not 0 to" in body["detail"], body
    node = gateway.app[NODE]
    await eventually_async(lambda: not [a for a in node.ledger.pending() if a.job == JOB], "the tab closed", 30)
    assert node.paid.gateway_tabs.refused_receipts == 1 and struck == []
    runs = provider.app[NODE].compute.provenance_records.recent(10)
    assert [r["record"]["fuel_consumed"] > 1_000_000 for r in runs if r["record"]["function"] == "fib"] == [True]


async def test_a_call_whose_only_provider_is_gone_is_refused_without_waiting_on_a_lookup(node_factory,
                                                                                          monkeypatch) -> None:
    """The provider gone as a call is sent to it (killed: still in the book, not yet probed down): the gateway looks
    for another, and with no up peer its book lacks but that one, answers no-deal at once, not once a hash-table
    lookup has waited out its timeout on nodes that cannot answer."""
    monkeypatch.setattr(dealing, "LOOKUP_TIMEOUT", 600.0)  # such a lookup outlasts the deadline below
    monkeypatch.setattr(lookup, "CHECK_EVERY", 0.0)  # the book counted at the call, as a second after the last
    gateway, provider, module, _ = await _pair(node_factory, 100)

    async def unanswered(kind: str, wanted: int, found: dict) -> None:  # datagrams to nodes that cannot answer
        await asyncio.Event().wait()

    async def refused(*args, **kwargs):  # its port closed: nothing was sent
        raise PeerUnreachable("connection refused", sent=False)

    monkeypatch.setattr(gateway.app[NODE].dht, "find_providers", unanswered)
    monkeypatch.setattr(gateway.app[NODE].paid, "invoke_remote", refused)
    status, body = await asyncio.wait_for(invoke(gateway, module, "add", 1, 2, fuel=FUEL), 30)
    assert status == 409 and body["code"] == "no-deal", body


async def test_a_call_whose_caller_goes_away_is_paid_once_sent_and_holds_nothing_if_it_was_not(node_factory,
                                                                                              monkeypatch) -> None:
    """A remote call whose caller is cancelled (its client hung up) once it was sent runs on, and its tab owes what
    its answer charged, as if it had been waited for: once the answer comes the credit held for it is its charge, not
    its budget till the tab is paid.  One cancelled while it waited to be sent (queued behind a call in flight) is
    never sent: it holds nothing from then on, and nothing of it is paid."""
    gateway, provider, module, budget = await _pair(node_factory, 100)
    ledger, payer, paid = gateway.app[NODE].ledger, gateway.app[CLIENT_IDENTITY].public_key, gateway.app[NODE].paid
    paid.batcher.stall = 3600  # a call queued behind one in flight waits for it to return
    before = _balances(gateway, provider)
    running, go = asyncio.Event(), asyncio.Event()
    run_for_peer = provider.app[NODE].paid.run_for_peer

    async def held_up(*args, **kwargs):
        running.set()
        await go.wait()
        return await run_for_peer(*args, **kwargs)

    monkeypatch.setattr(provider.app[NODE].paid, "run_for_peer", held_up)
    body = {"module": module, "function": "add", "args": [1, 2], "fuel": FUEL}
    sent = asyncio.create_task(paid.invoke(dict(body)))
    await asyncio.wait_for(running.wait(), 30)
    queued = asyncio.create_task(paid.invoke(dict(body)))
    await eventually_async(lambda: ledger.held(payer) == 2 * budget, "the second call to reserve its budget")
    queued.cancel()
    await asyncio.wait([queued])
    assert ledger.held(payer) == budget
    sent.cancel()
    await asyncio.wait([sent])
    assert sent.cancelled() and ledger.held(payer) == budget  # it runs on
    go.set()
    await eventually_async(lambda: ledger.held(payer) < budget, "the answer of the call sent to be taken")
    charge = ledger.held(payer)
    assert charge > 0
    assert await _paid(gateway, provider, before) == (-charge, charge)
    assert ledger.held(payer) == 0
