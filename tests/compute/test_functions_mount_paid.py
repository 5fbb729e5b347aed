"""Reading the stored files a web function placed on the market mounts is paid with the placement's own tab, as its
module's compile is (compute/placements.py, remote_tabs.py `mount_on`, placed_functions.py, provider_tabs.py
`mounted`), on real nodes: the provider's line for a stranger owner and the owner's balance move by the reading's
price once the tab is paid, the reading counts in the function's spend and so against its spend cap (a placement,
first or after its provider died, is made only where the cap has room for it; else callers get 402 and nothing is
read), and a provider claiming more for it than the owner priced it at is not paid for it."""

from __future__ import annotations

import pytest

from tests.support.compile_paid import GATEWAY, PRICE, compiled, countersigning, line, pair, provider, strikes
from tests.support.compute import deploy
from tests.support.jobs import balances, verified
from tests.support.nodes import close_node, free_port
from tests.support.placed import (charged_by, get_page, left_by_a_kill_after, listed_function, moved_and_withdrawn,
                                   paid_whole, provider_killed, request_budget, serve_function, tab_as_left, tab_paid,
                                   unpaid_tabs, wait_placed, wait_unplaced)
from tests.support.waiting import eventually_async
from xsc.compute.placed_functions import function_job, mount_price
from xsc.errors import PeerRefused
from xsc.ledger.core.model import encode_authorization
from xsc.net.functions import FUNCTION_ANSWER, FUNCTIONS_PATH
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

FAST = {"placement_interval": 0.25}  # a silent provider left after 1 s
COMPILED = compiled("cgi")
PAGE = b"<p>a page its provider reads from the network when the function is placed there</p>\n" * 8_000
MOUNTED = mount_price(len(PAGE), PRICE)  # what reading it costs at the only price on the market


async def _stored(owner) -> str:
    """PAGE stored by `owner` (on itself: its providers hold none of it), its capability mounted at /in/index.html."""
    response = await owner.post("/v1/store/files", data=PAGE)
    assert response.status < 300, await response.text()
    return f"{(await response.json())['capability']}:/in/index.html"


async def test_reading_a_placed_functions_files_is_paid_with_its_tab_and_counted_in_its_spend(node_factory) -> None:
    assert MOUNTED > 0
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, storage=False, node=FAST)
    function = {"name": "hello", "module": module, "on_market": True, "inputs": [await _stored(a)]}
    before = balances(a, b)
    await serve_function(a, function)
    url = (await wait_placed(a))["url"]
    [first] = unpaid_tabs(a)
    assert first.cap == 16 * request_budget(a, module) + COMPILED + MOUNTED  # room for the push and the reading
    assert b.app[NODE].trust.line(a.app[IDENTITY].id)["used"] == COMPILED + MOUNTED  # both done, neither paid yet
    assert (await get_page(url + "x"))[0] == 200
    charge = await eventually_async(lambda: charged_by(b, a), "the request's run recorded (after its answer)")
    # `b`'s reports of the tab count the reading apart: one claiming more of it than the owner priced it at, or
    # taking it out of what its requests cost, is not taken (a peer's word).
    tabs, total = a.app[NODE].paid.gateway_tabs, charge + COMPILED + MOUNTED
    for mounts in (MOUNTED + 1, -1, "1", total):
        assert not tabs.reported(first.id, total, 1, COMPILED, mounts), mounts
    assert not tabs.reported(first.id, total + 1, 1, COMPILED, MOUNTED + 1)
    assert tabs.reported(first.id, total, 1, COMPILED, MOUNTED)
    # Served again with changes, not of its files: placed on a next tab, with no room for a push or a reading, and
    # the first one closed for its receipt and paid.
    await serve_function(a, {**function, "env": {"GREETING": "again"}})
    await eventually_async(lambda: tab_paid(a, first), "the first tab paid", 30)
    [second] = unpaid_tabs(a)
    assert second.cap == 16 * request_budget(a, module)
    owed = charge + COMPILED + MOUNTED
    # What `b` did for `a` (the request, compiling the module `a` pushed and reading its file) is all paid.
    await paid_whole(a, b, before, owed, "mounts", MOUNTED)


async def test_a_kill_9_of_the_provider_as_it_writes_a_placement_leaves_the_reading_of_its_files_on_its_tab(
        node_factory, monkeypatch) -> None:
    """The reading's record is written in the placement's own synced batch: a kill -9 just after that write leaves
    the tab charged for it, as the provider's next start reads the tab (the function served again, its reading paid)."""
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, storage=False, node=FAST)
    left = left_by_a_kill_after(b, b.app[NODE].compute.store, "save_placement", monkeypatch)
    try:
        await serve_function(a, {"name": "hello", "module": module, "on_market": True, "inputs": [await _stored(a)]})
        await wait_placed(a)
        [tab] = unpaid_tabs(a)
        assert left, "the placement written"
        restarted = await tab_as_left(b, left[0], tab)
        assert (restarted.mounts, restarted.compiles, restarted.total) == (MOUNTED, COMPILED, MOUNTED + COMPILED)
    finally:
        for snapshot in left:
            snapshot.close()


async def test_a_spend_cap_with_no_room_for_reading_the_files_is_refused_and_the_least_that_has_pays_it(
        node_factory) -> None:
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, storage=False,
                              node={**FAST, "web_listen": f"127.0.0.1:{free_port()}"})
    budget = request_budget(a, module)
    function = {"name": "hello", "module": module, "on_market": True, "inputs": [await _stored(a)],
                "spend_cap": budget + MOUNTED - 1}
    before = balances(a, b)
    # Every provider reads the files as it places the function: a cap without room for that beside one request's
    # budget could never place it, and is refused as it is served.
    response = await a.post("/v1/compute/functions", json=function)
    refused = await response.json()
    assert response.status == 400 and refused["least"] == budget + MOUNTED, refused
    assert f"reading the files it mounts there, {MOUNTED:,}" in refused["detail"], refused
    assert refused["hint"].endswith(f"--on-market --spend-cap {budget + MOUNTED}"), refused
    assert unpaid_tabs(a) == [] and b.app[NODE].functions.placed_here.get(a.app[IDENTITY].id, "hello") is None
    # The least cap that places it on `b`, which lacks the module: its one tab pays the push, the reading and the
    # one request it has room for.
    least = budget + COMPILED + MOUNTED
    await serve_function(a, {**function, "spend_cap": least})
    url = (await wait_placed(a))["url"]
    [tab] = unpaid_tabs(a)
    assert tab.cap == least
    assert (await get_page(url + "x"))[0] == 200
    await eventually_async(lambda: tab_paid(a, tab), "the spent tab ended and paid", 30)
    owed = charged_by(b, a) + COMPILED + MOUNTED
    assert line(a, b) == (owed, owed) and before[0] - balances(a, b)[0] == owed
    listed = await listed_function(a)
    assert listed["spent_this_hour"] == owed <= least, listed
    await wait_unplaced(a)
    status, problem = await get_page(f"http://{a.app[NODE].config.node.web_listen}/fn/hello/")
    assert status == 402 and b"spend-cap-reached" in problem, (status, problem)


@pytest.mark.parametrize("room", [True, False], ids=["room-for-reading-its-files", "no-room-for-reading-its-files"])
async def test_a_function_whose_provider_died_moves_only_where_its_spend_cap_pays_reading_its_files(
        node_factory, room: bool) -> None:
    a = await node_factory("a", **GATEWAY, node={**FAST, "web_listen": f"127.0.0.1:{free_port()}"})
    a.app[NODE].placements.renew = 3600  # its first tab stays the one open when its provider dies
    providers = [await provider(node_factory, name, a, web=True, storage=False) for name in ("b", "c")]
    module = await deploy(a, "cgi", wasi=True)
    budget = request_budget(a, module)
    opened = 16 * budget + COMPILED + MOUNTED  # the first tab's cap
    # no room: the cap leaves a request's budget after the first tab, not the reading beside it
    cap = opened + budget + COMPILED + MOUNTED if room else opened + budget + MOUNTED - 1
    await serve_function(a, {"name": "hello", "module": module, "on_market": True, "inputs": [await _stored(a)],
                              "spend_cap": cap})
    listed, second, before = await provider_killed(a, providers, opened)

    if room:
        tab = await moved_and_withdrawn(a, second, listed, opened)
        assert tab.cap == budget + COMPILED + MOUNTED
        owed = charged_by(second, a) + COMPILED + MOUNTED
        assert line(a, second) == (owed, owed) and before[0] - balances(a, second)[0] == owed
    else:
        why = await wait_unplaced(a)
        assert f"reading the files it mounts there, {MOUNTED:,}" in why, why
        assert why.endswith(f"--on-market --spend-cap {cap + 1})"), why
        status, problem = await get_page(f"http://{a.app[NODE].config.node.web_listen}/fn/hello/")
        assert status == 402 and b"spend-cap-reached" in problem, (status, problem)
        # nothing signed for it, sent or read
        assert [t.cap for t in unpaid_tabs(a)] == [opened]
        assert second.app[NODE].functions.placed_here.get(a.app[IDENTITY].id, "hello") is None
        assert not second.app[NODE].compute.registry.has_module(module) and line(a, second) == (0, 0)
        assert second.app[NODE].trust.line(a.app[IDENTITY].id)["reserved"] == 0
        assert balances(a, second) == before


def _mounts_above(amount: int, usage: dict) -> tuple[int, dict]:
    """A receipt claiming a micro-credit more for reading the function's files than the owner priced it at."""
    return (amount + 1, {**usage, "mounts": usage["mounts"] + 1}) if "mounts" in usage else (amount, usage)


async def test_a_reading_claimed_above_what_the_owner_priced_is_not_paid_and_its_provider_struck(
        node_factory, monkeypatch) -> None:
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, storage=False, node=FAST)
    function = {"name": "hello", "module": module, "on_market": True, "inputs": [await _stored(a)]}
    struck, before = strikes(a, monkeypatch), balances(a, b)
    countersigning(b, monkeypatch, _mounts_above)
    # ... and reporting the same in its tab's status: not taken, so the tally holds to what the owner priced.
    hosted = b.app[NODE].placed_functions
    status = hosted.status

    async def inflated(owner: str, name: str) -> dict:
        answer = await status(owner, name)
        tab = answer["tab"]
        return {**answer, "tab": {**tab, "total": tab["total"] + 1, "mounts": tab["mounts"] + 1}}

    monkeypatch.setattr(hosted, "status", inflated)
    await serve_function(a, function)
    await wait_placed(a)
    [first] = unpaid_tabs(a)
    response = await a.delete("/v1/compute/functions/hello")  # its tab closed for the receipt
    assert response.status == 200, await response.text()
    # (its provider is struck before its tab is dropped: both are waited for)
    await eventually_async(lambda: struck and tab_paid(a, first), "the provider struck and its tab dropped", 30)
    assert struck == [b.app[IDENTITY].id] and a.app[NODE].paid.gateway_tabs.refused_receipts == 1
    assert before[0] - balances(a, b)[0] == 0


async def _place(owner, provider, body: dict) -> tuple[int, dict]:
    """A placement sent as the owner's node (signed); (status, answer)."""
    try:
        answer = await owner.app[NODE].client.request(provider.app[NODE].peers.url, "POST", FUNCTIONS_PATH,
                                                      json=body, to=provider.app[IDENTITY].id,
                                                      max_size=FUNCTION_ANSWER)
        return answer.status, answer.json()
    except PeerRefused as err:
        return err.details["peer_status"], {"code": err.details["peer_code"], "detail": err.message}


async def test_a_provider_reads_no_file_its_placements_tab_does_not_pay_for(node_factory) -> None:
    """The owner says what its tab pays for reading the function's files: a placement saying less than they cost,
    or saying it as no whole number, is refused before any is read, and one whose tab has no room for them too."""
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, storage=False)
    await b.app[NODE].compute.registry.deploy(a.app[NODE].compute.store.wasm(bytes.fromhex(module)), wasi=True)
    owner_id, budget = a.app[IDENTITY].id, request_budget(a, module)
    function = {"name": "hello", "module": module, "inputs": [await _stored(a)]}

    async def place(cap: int, mounting) -> tuple[int, dict]:
        auth = await a.app[NODE].payments.authorize(b.app[IDENTITY].id, cap, function_job(owner_id, "hello"),
                                                    ttl=3600)
        return await _place(a, b, {"function": function, "price": PRICE, "memory_price": 0, "deal": {},
                                   "authorization": encode_authorization(auth).hex(), "mounting": mounting})

    for mounting in (-1, "1", 1.5, True):
        status, answer = await place(budget + MOUNTED, mounting)
        assert (status, answer["code"]) == (400, "invalid-argument") and "mounting" in answer["detail"], answer
    status, answer = await place(budget + MOUNTED, MOUNTED - 1)
    assert (status, answer["code"]) == (402, "spend-cap-reached") and f"{MOUNTED:,}" in answer["detail"], answer
    status, answer = await place(budget + MOUNTED - 1, MOUNTED)  # its cap: room for a request, not the reading too
    assert status == 403 and answer["code"] == "deal-refused", answer
    assert b.app[NODE].functions.placed_here.get(owner_id, "hello") is None
    assert b.app[NODE].trust.line(owner_id)["used"] == 0 and b.app[NODE].trust.line(owner_id)["reserved"] == 0
    status, answer = await place(budget + MOUNTED, MOUNTED)
    assert status == 201, answer
    assert b.app[NODE].trust.line(owner_id)["used"] == MOUNTED
    tab = await b.app[NODE].paid.provider_tabs.standing(
        next(x for x in a.app[NODE].ledger.pending() if x.id.hex() == answer["authorization"]))
    assert (tab.total, tab.mounts, tab.count) == (MOUNTED, MOUNTED, 0)


@pytest.mark.parametrize("inflated", [False, True], ids=["honest", "claiming-more-reading"])
async def test_the_reading_a_tab_allowed_before_a_stop_of_its_owner_is_paid_after_it_and_no_more(
        node_factory, monkeypatch, inflated: bool) -> None:
    """The owner stops with its function's first tab open (the push and the reading charged on it, no request run);
    started again, its payment retry closes that tab: the honest receipt is paid to the micro-credit, from the tally
    the owner kept on disk; one claiming more reading than the owner priced is not paid at all."""
    a, b, module = await pair(node_factory, module="cgi", wasi=True, web=True, storage=False, node=FAST)
    function = {"name": "hello", "module": module, "on_market": True, "inputs": [await _stored(a)]}
    before = balances(a, b)
    await serve_function(a, function)
    await wait_placed(a)
    [tab] = unpaid_tabs(a)
    await close_node(a)
    if inflated:
        countersigning(b, monkeypatch, _mounts_above)
    a = await node_factory("a", **GATEWAY, node=FAST)
    await eventually_async(lambda: tab_paid(a, tab), "the tab left open closed by the payment retry", 30)
    owed = COMPILED + MOUNTED
    # (the receipt `b` countersigned is on its own chain, paid or not: both chains verify)
    assert balances(a, b) == ((before[0], before[1] + owed + 1) if inflated else (before[0] - owed, before[1] + owed))
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == (1 if inflated else 0)
    if not inflated:
        assert line(a, b) == (owed, owed)
    for each in (a, b):
        await verified(each)
