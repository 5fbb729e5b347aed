"""A module a gateway pushes is compiled at a price paid with the tab whose call asked for it (compute/pushes.py,
provider_tabs.py, remote_tabs.py), on real nodes: a stranger's gateway that paid every tab owes its provider nothing
for the compile; a provider that claims a compile it was not allowed (more than its price, twice, on a tab no push
named, or a receipt whose `compiles` does not add up) is not paid that tab; a gateway that names a tab no call of
its asked for, or a tab twice for one module, is refused.  A push naming no tab (an older gateway's) and a receipt
without `compiles` (an older provider's) are still taken.  A compile's charge written as its push is cut short is on
its tab in memory as on disk."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

from tests.support.attacks import INVOKE_PRICE
from tests.support.compile_paid import GATEWAY, compiled, pair, refused_on_the_last
from tests.support.compute import invoke, module_id, wasm
from tests.support.jobs import balances, settled
from tests.support.ledger import HELD_FOR
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async

from xsc import keys
from xsc.compute.provider_tabs import JOB, compile_price
from xsc.identity import Identity, sign_request
from xsc.ledger.core.model import authorize, decode_entry, encode_authorization
from xsc.net.compute import INVOKE_PATH, MODULES_PATH, TAB_CLOSE_PATH
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE

COMPILED = compiled("add")


async def _add(a, b, module: str) -> dict:
    status, body = await invoke(a, module, "add", 1, 2)
    assert status == 200 and body["provider"] == b.app[IDENTITY].id, body
    return body


async def test_a_pushed_modules_compile_is_paid_with_the_tab_that_asked_for_it(node_factory) -> None:
    a, b, module = await pair(node_factory)
    before = balances(a, b)
    body = await _add(a, b, module)
    await settled(a)  # every tab of `a` closed and paid
    line = b.app[NODE].trust.line(a.app[IDENTITY].id)
    # What `b` did for `a` (the call, and compiling the module `a` pushed) is all paid: nothing of it stays owed.
    assert (line["used"], line["paid"]) == (body["charge"] + COMPILED,) * 2, line
    paid = before[0] - balances(a, b)[0]
    assert paid == body["charge"] + COMPILED and balances(a, b)[1] - before[1] == paid
    # `a`'s ledger says so: the tab's payment carries the compile in its amount and its usage.
    history = await (await a.get("/v1/ledger/accounts/client/history")).json()
    [payment] = [e for e in history["entries"] if e["kind"] == "payment"]
    assert (payment["amount"], payment["usage"]) == (paid, {"fuel": body["fuel_consumed"], "invokes": 1,
                                                            "compiles": COMPILED}), payment
    payments = await (await a.get("/v1/ledger/payments")).json()
    assert payments["pending"] == [] and payments["dropped"] == [], payments
    # A second tab's call finds the module there: nothing more is compiled, nor charged.
    body = await _add(a, b, module)
    await settled(a)
    assert b.app[NODE].trust.line(a.app[IDENTITY].id)["used"] == b.app[NODE].trust.line(a.app[IDENTITY].id)["paid"]


async def test_a_gateway_that_stops_before_paying_pays_the_compile_after_its_restart(node_factory) -> None:
    a, b, module = await pair(node_factory)
    a.app[NODE].paid.gateway_tabs.interval = 3600  # its tab stays open until the stop
    before = balances(a, b)
    body = await _add(a, b, module)
    # The open tab holds what its call owes and what the compile may cost (`xsc ledger payments`).
    [pending] = (await (await a.get("/v1/ledger/payments")).json())["pending"]
    assert pending["amount"] == body["charge"] + COMPILED, pending
    await close_node(a)  # the tab is left to the next start, its tally (with the compile it allowed) on disk
    a = await node_factory("a", **GATEWAY,
                           ledger={"settle_retry_interval": 0.3})
    await eventually_async(lambda: a.app[NODE].ledger.pending() == [], "the tab paid by the retry", 30)
    assert before[0] - balances(a, b)[0] == body["charge"] + COMPILED
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 0


async def test_a_receipt_without_compiles_is_an_older_providers_and_is_paid_as_it_says(node_factory,
                                                                                       monkeypatch) -> None:
    a, b, module = await pair(node_factory)
    pushes = b.app[NODE].paid.pushes
    receive = pushes.receive
    # An older provider does not know a push's tab: it charges the compile on the line alone.
    monkeypatch.setattr(pushes, "receive", lambda gateway, data, *, wasi, tab=None: receive(gateway, data, wasi=wasi))
    before = balances(a, b)
    body = await _add(a, b, module)
    await settled(a)
    assert before[0] - balances(a, b)[0] == body["charge"]
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 0
    assert a.app[NODE].ledger.held(a.app[CLIENT_IDENTITY].public_key) == 0  # the compile it held for is released


async def test_a_tab_opened_by_a_call_of_little_fuel_has_room_for_its_modules_compile(node_factory) -> None:
    a, b, module = await pair(node_factory)
    before = balances(a, b)
    # A call of so little fuel that 16 such budgets are less than the compile: its tab was opened with room for it.
    status, body = await invoke(a, module, "add", 1, 2, fuel=1000)
    assert status == 200 and body["provider"] == b.app[IDENTITY].id, body
    assert 16 * body["charge"] < COMPILED
    await settled(a)
    assert before[0] - balances(a, b)[0] == body["charge"] + COMPILED
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 0
    line = b.app[NODE].trust.line(a.app[IDENTITY].id)
    assert (line["used"], line["paid"]) == (body["charge"] + COMPILED,) * 2, line


async def _refused(node_factory, monkeypatch, change, *, tabs: int = 1) -> None:
    """`b` countersigns its receipts as `change` makes them: `a` pays the tab that asked for the push only if the
    lie is on a later tab (`tabs` of them, the last lied about), and never the one lied about; `b` is struck."""
    a, b, module = await pair(node_factory)

    async def call() -> int:
        return (await _add(a, b, module))["charge"]

    await refused_on_the_last(a, b, monkeypatch, change, call, tabs, COMPILED)


async def test_a_compile_claimed_above_its_price_is_not_paid(node_factory, monkeypatch) -> None:
    await _refused(node_factory, monkeypatch, lambda amount, usage: (
        (amount + 1, {**usage, "compiles": usage["compiles"] + 1}) if "compiles" in usage else (amount, usage)))


async def test_a_compile_charged_twice_on_one_tab_is_not_paid(node_factory, monkeypatch) -> None:
    await _refused(node_factory, monkeypatch, lambda amount, usage: (
        (amount + usage["compiles"], {**usage, "compiles": 2 * usage["compiles"]}) if "compiles" in usage
        else (amount, usage)))


async def test_a_compile_charged_again_on_a_later_tab_is_not_paid(node_factory, monkeypatch) -> None:
    await _refused(node_factory, monkeypatch, lambda amount, usage: (amount + COMPILED, {**usage, "compiles": COMPILED}),
                   tabs=2)


async def test_a_receipt_whose_compiles_do_not_add_up_is_not_paid(node_factory, monkeypatch) -> None:
    # The compile in its amount but not in its usage: more than the calls' answers owed.
    await _refused(node_factory, monkeypatch, lambda amount, usage: (
        amount, {k: v for k, v in usage.items() if k != "compiles"}))


async def test_a_receipt_claiming_more_compiles_than_its_amount_is_not_paid(node_factory, monkeypatch) -> None:
    await _refused(node_factory, monkeypatch, lambda amount, usage: (
        (amount - usage["compiles"] // 2, usage) if "compiles" in usage else (amount, usage)))


# --- a hostile gateway, on the provider ------------------------------------------------------------------------
async def _peer(node, gateway: Identity, method: str, path: str, body: bytes) -> tuple[int, dict]:
    headers = sign_request(gateway, method, path, body, receiver=node.app[IDENTITY].id)
    response = await node.request(method, path, data=body, headers={**headers, "Authorization": ""})
    return response.status, await response.json()


def _tab(node, gateway: Identity):
    return authorize(gateway, node.app[IDENTITY].public_key, 10**13, JOB, int(time.time()) + 600, os.urandom(16))


def _call(tab, module: str) -> bytes:
    return json.dumps({"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000},
                       "price": INVOKE_PRICE, "authorization": encode_authorization(tab).hex(), "deal": {},
                       "tab": True}).encode()


async def test_a_push_is_charged_only_on_a_tab_that_asked_for_it_and_once(node_factory) -> None:
    node = await node_factory()
    gateway, module = Identity.generate(), module_id("add")
    asked, other = _tab(node, gateway), _tab(node, gateway)
    price = compile_price(len(wasm("add")), INVOKE_PRICE)
    line = node.app[NODE].trust.line
    status, problem = await _peer(node, gateway, "POST", INVOKE_PATH, _call(asked, module))
    assert status == 404 and problem["code"] == "module-not-found", problem
    # A tab no call of the gateway's asked for the module under: refused, nothing compiled nor used.
    status, problem = await _peer(node, gateway, "PUT", f"{MODULES_PATH}?tab={other.id.hex()}", wasm("add"))
    assert status == 403 and "asked for module" in problem["detail"], problem
    assert node.app[NODE].compute.registry.modules() == [] and line(gateway.id)["used"] == 0
    status, problem = await _peer(node, gateway, "POST", INVOKE_PATH, _call(asked, module))
    assert status == 404, problem
    status, answer = await _peer(node, gateway, "PUT", f"{MODULES_PATH}?tab={asked.id.hex()}", wasm("add"))
    assert status == 201 and answer["charged"] == {"tab": asked.id.hex(), "amount": price}, answer
    status, ran = await _peer(node, gateway, "POST", INVOKE_PATH, _call(asked, module))
    assert status == 200, ran
    # The module removed and asked for again under the same tab: a second compile is not charged on it.
    assert await node.app[NODE].paid.pushes.sweep(time.time() + 2 * 3600) == [module]
    status, problem = await _peer(node, gateway, "POST", INVOKE_PATH, _call(asked, module))
    assert status == 404, problem
    status, problem = await _peer(node, gateway, "PUT", f"{MODULES_PATH}?tab={asked.id.hex()}", wasm("add"))
    assert status == 409 and "compiled on the tab" in problem["detail"], problem
    # The tab's receipt: its run, and the compile once.
    body = json.dumps({"authorization": encode_authorization(asked).hex()}).encode()
    status, closed = await _peer(node, gateway, "POST", TAB_CLOSE_PATH, body)
    assert status == 200, closed
    receipt = decode_entry(bytes.fromhex(closed["receipt"]))
    assert (receipt.amount, dict(receipt.usage)) == (ran["run"]["charge"] + price, {
        "fuel": ran["run"]["fuel_consumed"], "invokes": 1, "compiles": price})


async def test_a_compiles_charge_written_as_its_push_is_cut_short_is_on_the_tab_in_memory_as_on_disk(
        node_factory, monkeypatch) -> None:
    """A push cancelled (a stop, a request cut short) as the compile's record is written on its tab waits for that
    write: the tab then counts the compile, holds nothing more for it, and closes for a receipt that pays it."""
    node = await node_factory("provider", **GATEWAY)
    tabs, gateway = node.app[NODE].paid.provider_tabs, Identity.generate()
    auth = authorize(gateway, node.app[IDENTITY].public_key, COMPILED * 4, JOB, int(time.time()) + 600,
                     os.urandom(16))
    module = module_id("add")
    tab = await tabs.reserve_compile(auth, module, COMPILED, gateway.id)
    reached, released, put = threading.Event(), threading.Event(), tabs.db.put

    def held(key, value, **kwargs):  # the tab's record held in its thread until the push is cancelled
        if key.startswith(keys.TAB_RUNS):
            reached.set()
            released.wait(HELD_FOR)
        put(key, value, **kwargs)

    monkeypatch.setattr(tabs.db, "put", held)
    charging = asyncio.create_task(tabs.compiled(tab, module, COMPILED, gateway.id))
    assert await asyncio.to_thread(reached.wait, HELD_FOR)
    charging.cancel()
    released.set()
    with pytest.raises(asyncio.CancelledError):
        await charging
    assert (tab.compiles, tab.total, tab.reserved, tab.in_flight) == (COMPILED, COMPILED, 0, 0)
    assert tabs.records() == 1 and (await tabs.close(auth)).amount == COMPILED
