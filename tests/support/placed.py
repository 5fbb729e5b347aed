"""A web function "hello" its owner serves on the market, as the tests of what a placed function pays see it
(tests/compute/test_functions_compile_paid.py, tests/compute/test_functions_mount_paid.py): its URL fetched, its
owner's list read and waited on, its provider's runs and its owner's open tabs counted, at PRICE; and what a kill -9 of
its provider at a chosen write leaves of its tab there."""

from __future__ import annotations

import aiohttp

from tests.support.compile_paid import PRICE, line
from tests.support.jobs import balances, verified
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async
from xsc.compute.placed_functions import function_job
from xsc.compute.provider_tabs import PeerTab, ProviderTabs
from xsc.compute.service import InvokeCall
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE


async def get_page(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET of `url`, redirects not followed."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url, allow_redirects=False) as response:
            return response.status, await response.read()


async def serve_function(owner, function: dict) -> None:
    response = await owner.post("/v1/compute/functions", json=function)
    assert response.status < 300, await response.text()


async def listed_function(owner, name: str = "hello") -> dict:
    """The owner's list's entry of function `name` ({} if it has none)."""
    response = await owner.get("/v1/compute/functions")
    return {f["name"]: f for f in (await response.json())["functions"]}.get(name, {})


async def wait_placed(owner, other_than: str | None = None) -> dict:
    """The owner's entry of "hello" once it is placed on a provider (at a URL other than `other_than`)."""
    async def placed():
        found = await listed_function(owner)
        return found if found.get("url") and found["url"] != other_than else None

    return await eventually_async(placed, "the function placed on a provider", 30)


async def wait_unplaced(owner) -> str:
    """The owner's `not_placed` of "hello" once it says its spend cap keeps it unplaced."""
    async def said():
        why = (await listed_function(owner)).get("not_placed", "")
        return why if "spend cap" in why else None

    return await eventually_async(said, "the owner's list to say its spend cap keeps it unplaced", 30)


def charged_by(provider, owner) -> int:
    """What the requests `provider` served for `owner`'s function ran up."""
    return sum(r["record"]["charge"] for r in provider.app[NODE].compute.provenance_records.recent(1000)
               if r["record"].get("deal", {}).get("gateway") == owner.app[IDENTITY].id)


def unpaid_tabs(owner) -> list:
    """The owner's tabs of its function "hello" not paid yet."""
    return [a for a in owner.app[NODE].ledger.pending() if a.job == function_job(owner.app[IDENTITY].id, "hello")]


def tab_paid(owner, tab) -> bool:
    """Whether the owner's tab `tab` is paid (no longer pending)."""
    return tab.id not in {t.id for t in owner.app[NODE].ledger.pending()}


async def provider_killed(owner, providers: list, opened: int) -> tuple[dict, object, tuple[int, int]]:
    """Kills the one of `providers` serving the owner's placed "hello", whose only open tab has the cap `opened`:
    (the owner's entry of it before, the provider left, the owner's and that provider's balances before)."""
    listed = await wait_placed(owner)
    first = next(p for p in providers if p.app[IDENTITY].id == listed["provider"])
    second = next(p for p in providers if p is not first)
    assert [t.cap for t in unpaid_tabs(owner)] == [opened]
    before = balances(owner, second)
    await close_node(first)  # its tab left to the payment retry: it may still be paid up to its cap
    return listed, second, before


async def moved_and_withdrawn(owner, second, listed: dict, opened: int):
    """The owner's tab with `second`, once "hello" moved there from `listed`'s URL, served a request, was withdrawn
    and that tab was closed and paid."""
    moved = await wait_placed(owner, other_than=listed["url"])
    assert moved["provider"] == second.app[IDENTITY].id
    assert (await get_page(moved["url"] + "x"))[0] == 200
    [tab] = [t for t in unpaid_tabs(owner) if t.cap != opened]
    response = await owner.delete("/v1/compute/functions/hello")
    assert response.status == 200, await response.text()
    await eventually_async(lambda: tab_paid(owner, tab), "the second provider's tab paid", 30)
    return tab


def request_budget(owner, module: str) -> int:
    """One request's budget at PRICE (the function's default limits, no memory price)."""
    return owner.app[NODE].compute.budget(InvokeCall(module, "_start", [], None, None, None, True), PRICE)


async def paid_whole(owner, provider, before: tuple[int, int], owed: int, usage: str, amount: int) -> None:
    """All `provider` did for `owner`'s function, `owed`, is paid: on its line, in both balances (from `before`), in
    the owner's one payment (its usage `usage` is `amount`) and in the function's spend this hour; no receipt was
    refused and both chains verify."""
    assert line(owner, provider) == (owed, owed)
    assert before[0] - balances(owner, provider)[0] == balances(owner, provider)[1] - before[1] == owed
    history = await (await owner.get("/v1/ledger/accounts/client/history")).json()
    [payment] = [e for e in history["entries"] if e["kind"] == "payment"]
    assert payment["amount"] == owed and payment["usage"][usage] == amount, payment
    listed = await listed_function(owner)
    assert listed["spend"] == listed["spent_this_hour"] == owed, listed
    assert owner.app[NODE].paid.gateway_tabs.refused_receipts == 0
    for each in (owner, provider):
        await verified(each)


def left_by_a_kill_after(node, store, method: str, monkeypatch) -> list:
    """What a kill -9 of `node` just after each call of `store.method` (a synced write) would leave on its disk: its
    database as it is the moment that write returns, in the thread that made it (a snapshot: everything written is
    in the kernel's hands by then, and nothing later is), one per call in order.  The caller closes them."""
    left, write = [], getattr(store, method)

    def written(*args, **kwargs):
        outcome = write(*args, **kwargs)
        left.append(node.app[NODE].db.snapshot())
        return outcome

    monkeypatch.setattr(store, method, written)
    return left


async def tab_as_left(provider, left, auth) -> PeerTab:
    """The tab of `auth` as `provider`'s next start would read it from the disk `left` (`left_by_a_kill_after`): what
    its run, compile and reading records there add up to."""
    node = provider.app[NODE]
    return await ProviderTabs(db=left, ledger=node.ledger, node=provider.app[IDENTITY]).standing(auth)
