"""A web function placed on a provider that lacks its module pays that module's compile with the placement's own tab,
as a call's or a job's does (compute/placements.py, remote_tabs.py `track` and `compile_on`, pushes.py,
placed_functions.py), on real nodes: the provider's line for a stranger owner ends with the compile used and paid,
the compile counts in the function's spend and so against its spend cap (a placement, first or after its provider
died, is made only where the cap has room for it; past the cap callers get 402 and nothing more is charged), and
`xsc compute functions` shows that spend."""

from __future__ import annotations

import json

import pytest

from tests.support.compile_paid import GATEWAY, compiled, countersigning, line, pair, provider, strikes
from tests.support.compute import WASM, deploy, wasm
from tests.support.jobs import balances
from tests.support.nodes import free_port
from tests.support.placed import (charged_by, get_page, left_by_a_kill_after, listed_function, moved_and_withdrawn,
                                   paid_whole, provider_killed, request_budget, serve_function, tab_as_left, tab_paid,
                                   unpaid_tabs, wait_placed, wait_unplaced)
from tests.support.waiting import eventually, eventually_async
from xsc.compute.provider_tabs import compile_price
from xsc.errors import Conflict
from xsc.ledger.core.model import format_credits
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

FAST = {"placement_interval": 0.25}  # a silent provider left after 1 s
COMPILED = compiled("cgi")


async def test_a_placed_functions_pushed_modules_compile_is_paid_with_its_tab(node_factory) -> None:
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, node=FAST)
    before = balances(a, b)
    function = {"name": "hello", "module": module, "on_market": True}
    await serve_function(a, function)
    url = (await wait_placed(a))["url"]
    assert b.app[NODE].compute.registry.has_module(module)  # pushed: `b` lacked it
    [first] = unpaid_tabs(a)
    assert (await get_page(url + "x"))[0] == 200
    charge = await eventually_async(lambda: charged_by(b, a), "the request's run recorded (after its answer)")
    # `b`'s reports of the tab count the compile apart: one claiming more of it than the push allowed, or its total
    # less the compile more than its requests' budgets, is not taken (a peer's word).
    tabs = a.app[NODE].paid.gateway_tabs
    for total, count, compiles in ((charge + COMPILED + 1, 1, COMPILED + 1), (COMPILED, 1, -1), (COMPILED, 1, "1"),
                                   (charge + COMPILED, 0, COMPILED), (COMPILED - 1, 0, COMPILED)):
        assert not tabs.reported(first.id, total, count, compiles), (total, count, compiles)
    assert tabs.reported(first.id, charge + COMPILED, 1, COMPILED)
    # Served again with changes: placed on a next tab, the first one closed for its receipt and paid.
    await serve_function(a, {**function, "env": {"GREETING": "again"}})
    await eventually_async(lambda: tab_paid(a, first), "the first tab paid", 30)
    owed = charged_by(b, a) + COMPILED
    # What `b` did for `a` (the request, and compiling the module `a` pushed for it) is all paid, and is the
    # function's spend, in its hour too.
    await paid_whole(a, b, before, owed, "compiles", COMPILED)


async def test_a_kill_9_of_the_provider_as_it_writes_a_pushed_module_leaves_its_compile_on_the_tab(
        node_factory, monkeypatch) -> None:
    """The compile's record on the tab is written in the module's own synced batch: a kill -9 just after the module
    is written (its next placement then finds it there, and pushes nothing more) leaves the tab charged for
    compiling it, as the provider's next start reads the tab."""
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, node=FAST)
    left = left_by_a_kill_after(b, b.app[NODE].compute.store, "save_module", monkeypatch)
    try:
        await serve_function(a, {"name": "hello", "module": module, "on_market": True})
        await wait_placed(a)
        [tab] = unpaid_tabs(a)
        assert len(left) == 1, "the module pushed written once"
        restarted = await tab_as_left(b, left[0], tab)
        assert (restarted.compiles, restarted.total) == (COMPILED, COMPILED)
    finally:
        for snapshot in left:
            snapshot.close()


async def test_a_function_whose_spend_cap_leaves_no_room_for_its_compile_is_not_placed_and_charged_nothing(
        node_factory, monkeypatch) -> None:
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True,
                              node={**FAST, "web_listen": f"127.0.0.1:{free_port()}"})
    budget, before = request_budget(a, module), balances(a, b)
    function = {"name": "hello", "module": module, "on_market": True, "spend_cap": budget + COMPILED - 1}
    signed = []
    authorize = a.app[NODE].paid.payments.authorize
    monkeypatch.setattr(a.app[NODE].paid.payments, "authorize",
                        lambda *args, **kwargs: signed.append(args) or authorize(*args, **kwargs))
    response = await a.post("/v1/compute/functions", json=function)
    served = await response.json()
    # Taken, as it places the function on a provider that has its module already, and said so.
    assert response.status < 300 and served["not_placed"].startswith(
        "its spend cap places it only on a provider that has its module already") and served["not_placed"].endswith(
        f"--on-market --spend-cap {budget + COMPILED})"), served
    # Its cap holds a request's budget, not that and the compile the provider, lacking the module, would charge: the
    # module is not pushed and the function not placed; its callers are told 402 and the owner pays nothing.
    why = await wait_unplaced(a)
    assert f"less than one request's budget of {budget:,}" in why and f"lacks, {COMPILED:,}" in why, why
    assert why.endswith(f"xsc compute serve hello {module} ... --on-market --spend-cap {budget + COMPILED})"), why
    status, problem = await get_page(f"http://{a.app[NODE].config.node.web_listen}/fn/hello/")
    assert status == 402 and b"spend-cap-reached" in problem, (status, problem)
    assert not b.app[NODE].compute.registry.has_module(module) and line(a, b) == (0, 0) and balances(a, b) == before
    assert unpaid_tabs(a) == [] and a.app[NODE].ledger.holding() == {}
    # Once `b` said it lacks the module, no round signs a tab for it there again while the cap leaves no room.
    for _ in range(3):
        await a.app[NODE].placements.keep()
    assert len(signed) == 1 and "lacks" in (await listed_function(a))["not_placed"], signed

    # A cap with room for both: placed, and its tab pays the compile and the one request it has room for; past that
    # its callers get 402, and the owner is charged nothing more.
    await serve_function(a, {**function, "spend_cap": budget + COMPILED})
    url = (await wait_placed(a))["url"]
    [tab] = unpaid_tabs(a)
    assert tab.cap == budget + COMPILED
    assert (await get_page(url + "x"))[0] == 200
    await eventually_async(lambda: tab_paid(a, tab), "the spent tab ended and paid", 30)
    owed = charged_by(b, a) + COMPILED
    assert line(a, b) == (owed, owed) and before[0] - balances(a, b)[0] == owed
    listed = await listed_function(a)
    assert listed["spent_this_hour"] == owed <= budget + COMPILED, listed
    await wait_unplaced(a)
    status, problem = await get_page(f"http://{a.app[NODE].config.node.web_listen}/fn/hello/")
    assert status == 402 and b"spend-cap-reached" in problem, (status, problem)
    assert line(a, b) == (owed, owed) and before[0] - balances(a, b)[0] == owed


@pytest.mark.parametrize("room", [True, False], ids=["room-for-its-compile", "no-room-for-its-compile"])
async def test_a_function_whose_provider_died_moves_only_where_its_spend_cap_pays_the_compile(node_factory,
                                                                                                room: bool) -> None:
    a = await node_factory("a", **GATEWAY, node={**FAST, "web_listen": f"127.0.0.1:{free_port()}"})
    a.app[NODE].placements.renew = 3600  # its first tab stays the one open when its provider dies
    providers = [await provider(node_factory, name, a, web=True) for name in ("b", "c")]
    module = await deploy(a, "cgi", wasi=True)
    budget = request_budget(a, module)
    opened = 16 * budget + COMPILED  # the first tab's cap: 16 requests' budgets and compiling the module
    cap = opened + budget + COMPILED - (0 if room else 1)
    await serve_function(a, {"name": "hello", "module": module, "on_market": True, "spend_cap": cap})
    listed, second, before = await provider_killed(a, providers, opened)

    if room:
        tab = await moved_and_withdrawn(a, second, listed, opened)
        assert tab.cap == budget + COMPILED
        owed = charged_by(second, a) + COMPILED
        assert line(a, second) == (owed, owed) and before[0] - balances(a, second)[0] == owed
    else:
        why = await wait_unplaced(a)
        assert why.endswith(f"--on-market --spend-cap {cap + 1})"), why
        status, problem = await get_page(f"http://{a.app[NODE].config.node.web_listen}/fn/hello/")
        assert status == 402 and b"spend-cap-reached" in problem, (status, problem)
        assert not second.app[NODE].compute.registry.has_module(module) and line(a, second) == (0, 0)
        assert balances(a, second) == before and [t.cap for t in unpaid_tabs(a)] == [opened]


def test_the_owners_list_of_its_functions_counts_the_compile_in_their_spend(cli_node) -> None:
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    owner = cli_node("owner", **quiet, market={"offer_compute": False}, node=FAST)
    server = cli_node("provider", **quiet, node={"web_listen": f"127.0.0.1:{free_port()}"})
    assert owner.xsc("peers", "add", server.url).returncode == 0
    assert owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market").returncode == 0

    def listed() -> dict:
        [found] = json.loads(owner.xsc("compute", "functions", "--json").stdout)["functions"]
        return found

    url = eventually(lambda: listed().get("url"), "the function placed on the provider", 30)
    base, _, path = url.partition("/fn/")
    from tests.support.peers import http

    assert http(base, "GET", "/fn/" + path)[0] == 200
    records = eventually(lambda: [r["record"] for r in json.loads(server.xsc("compute", "provenance", "--list",
                                                                             "--json").stdout)
                                  if r["record"].get("deal", {}).get("function") == "hello"], "the request's run")
    [record] = records
    owed = record["charge"] + compile_price(len(wasm("cgi")), record["fuel_price"])  # the pushed module's compile
    found = eventually(lambda: (f := listed())["spend"] == owed and f, "the tab's receipt paid and counted", 30)
    assert found["spent_this_hour"] == owed
    table = owner.xsc("compute", "functions", env={"COLUMNS": "200"}).stdout.decode()
    [row] = [row for row in table.splitlines() if row.startswith("hello")]
    assert format_credits(owed) in row.split(), (table, format_credits(owed))


def _above(amount: int, usage: dict) -> tuple[int, dict]:
    """A receipt claiming a micro-credit more for the compile than its price."""
    return (amount + 1, {**usage, "compiles": usage["compiles"] + 1}) if "compiles" in usage else (amount, usage)


def _unnamed(amount: int, usage: dict) -> tuple[int, dict]:
    """A receipt claiming a compile on a tab no push named."""
    return (amount + COMPILED, {**usage, "compiles": COMPILED}) if "compiles" not in usage else (amount, usage)


@pytest.mark.parametrize("change", [_above, _unnamed], ids=["above-its-price", "on-a-tab-no-push-named"])
async def test_a_compile_a_placed_functions_tab_did_not_allow_is_not_paid_and_its_provider_struck(
        node_factory, monkeypatch, change) -> None:
    """`b` lies about the compile in a receipt (the first tab's, which paid for the push; or a later one's, which
    no push named): that tab is not paid, and `b` is struck."""
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, node=FAST)
    struck, before = strikes(a, monkeypatch), balances(a, b)
    if change is _above:
        countersigning(b, monkeypatch, change)
    function = {"name": "hello", "module": module, "on_market": True}
    await serve_function(a, function)
    url = (await wait_placed(a))["url"]
    [first] = unpaid_tabs(a)
    paid = 0
    if change is _unnamed:  # the first tab paid as it is, then a request on the next one
        await serve_function(a, {**function, "env": {"GREETING": "again"}})
        await eventually_async(lambda: tab_paid(a, first), "the first tab paid", 30)
        paid = COMPILED
        countersigning(b, monkeypatch, change)
        assert (await get_page(url + "x"))[0] == 200
        await eventually_async(lambda: charged_by(b, a), "the request's run recorded")
        response = await a.delete("/v1/compute/functions/hello")  # its tab closed for the receipt
        assert response.status == 200, await response.text()
    await eventually_async(lambda: struck, "the provider struck for its receipt", 30)
    assert struck == [b.app[IDENTITY].id] and a.app[NODE].paid.gateway_tabs.refused_receipts == 1
    assert before[0] - balances(a, b)[0] == paid


async def test_a_placement_its_provider_refuses_once_it_compiled_the_module_pays_that_compile(node_factory,
                                                                                             monkeypatch) -> None:
    """`b` compiles the module pushed for a placement, then refuses the placement: the owner closes the tab for a
    receipt of the compile alone and pays it, as a job given up before it ran does."""
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, node=FAST)
    before, hosted = balances(a, b), b.app[NODE].placed_functions
    place = hosted.place

    async def refused_once_compiled(owner: str, body):
        if b.app[NODE].compute.registry.has_module(module):
            raise Conflict("this provider takes no more functions", hint="place it on another provider")
        return await place(owner, body)

    monkeypatch.setattr(hosted, "place", refused_once_compiled)
    await serve_function(a, {"name": "hello", "module": module, "on_market": True})
    # b counts the receipt as it countersigns it, a its payment once the receipt is back: both are waited for
    await eventually_async(lambda: line(a, b) == (COMPILED, COMPILED) and before[0] - balances(a, b)[0] == COMPILED,
                           "the compile paid", 30)
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 0
    assert "refused it" in (await listed_function(a)).get("not_placed", "")
