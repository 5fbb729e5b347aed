"""Web functions served on the market (compute/placements.py, compute/placed_functions.py): the owner's node offers
no compute, so the function is placed on a provider, which serves it at its own web listener under
/fn/OWNER_ID/NAME/ on the owner's tab; the owner pays it by the tab's receipt and moves the function when the
provider goes away.  And what a provider refuses of a stranger's placement."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import time

import aiohttp
import pytest
import yarl

from tests.support.compute import call_at_once, deploy, head_before_its_body, peer_with_provider, wasm
from tests.support.disks import tmpfs
from tests.support.jobs import QUIET, balances, verified
from tests.support.nodes import close_node, free_port
from tests.support.waiting import eventually_async
from xsc import keys
from xsc.compute import journal as journal_module, placements, provenance
from xsc.compute.paid import compile_room
from xsc.compute.placed_functions import PER_OWNER, function_job, mount_price
from xsc.compute.provider_tabs import compile_price
from xsc.compute.remote_tabs import TAB_METERS
from xsc.errors import Conflict, FunctionUnavailable, PeerRefused, PeerUnreachable
from xsc.compute.service import InvokeCall
from xsc.ledger import price_budget
from xsc.ledger.receipts import check_receipt
from xsc.ledger.core.model import encode_authorization
from xsc.net.compute import TAB_CLOSE_PATH, close_tab, push_module
from xsc.net import functions as wire
from xsc.net.functions import FUNCTION_ANSWER, FUNCTION_PATH, FUNCTIONS_PATH
from xsc.db import open_database
from xsc.identity import Identity, sign_request
from xsc.node import IDENTITY
from xsc.node.datadir import DB_DIR
from xsc.node.appkeys import METRICS, NODE

FAST = {"placement_interval": 0.25}  # a tab renewed every 3 s, a silent provider left after 1 s


async def _get(url: str, method: str = "GET", **kwargs) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            return response.status, dict(response.headers), await response.read()


async def _json(node, method: str, path: str, **kwargs) -> dict:
    response = await node.request(method, path, **kwargs)
    answer = await response.json()
    assert response.status < 300, answer
    return answer


async def _provider(node_factory, name: str, **sections):
    return await node_factory(name, **QUIET, **sections,
                              node={"web_listen": f"127.0.0.1:{free_port()}", "web_rate_limit": 1000})


async def _served_at(owner, name: str, other_than: str | None = None) -> dict:
    async def placed():
        listed = {f["name"]: f for f in (await _json(owner, "GET", "/v1/compute/functions"))["functions"]}
        found = listed.get(name, {})
        return found if found.get("url") and found["url"] != other_than else None

    return await eventually_async(placed, f"function {name} placed on a provider", 30)


def _runs(provider, owner_id: str) -> list[dict]:
    """The runs of requests a provider served for `owner_id`'s placed functions."""
    return [r["record"] for r in provider.app[NODE].compute.provenance_records.recent(1000)
            if r["record"].get("deal", {}).get("gateway") == owner_id and r["record"].get("deal", {}).get("function")]


def _compiled(runs: list[dict]) -> int:
    """What a provider that lacked the cgi module charged the owner's tab for compiling it, pushed as the function was
    placed there: at the price its runs were made at (tests/compute/test_functions_compile_paid.py)."""
    return compile_price(len(wasm("cgi")), runs[0]["fuel_price"])


async def test_a_function_on_the_market_is_served_and_paid_by_a_provider_and_moves_when_it_goes(node_factory):
    providers = [await _provider(node_factory, f"provider{i}") for i in range(2)]
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{free_port()}", **FAST})
    owner_id = owner.app[IDENTITY].id
    for provider in providers:
        await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    listed = await _served_at(owner, "hello")
    first = next(p for p in providers if p.app[IDENTITY].id == listed["provider"])
    assert listed["url"].endswith(f"/fn/{owner_id}/hello/")
    before = {p.app[IDENTITY].id: balances(owner, p) for p in providers}

    # The provider answers callers at its own listener; the owner's node only points there.
    body = b"posted body\n" * 1000
    status, headers, answer = await _get(listed["url"] + "world?x=1", "POST", data=body, headers={"X-Caller": "me"})
    assert status == 200 and headers["X-Hello"] == "yes", (status, answer[:300])
    lines = answer.decode().splitlines()
    for line in ("REQUEST_METHOD=POST", "PATH_INFO=/world", "QUERY_STRING=x=1", "HTTP_X_CALLER=me",
                 f"CONTENT_LENGTH={len(body)}", f"SCRIPT_NAME=/fn/{owner_id}/hello", "X_RAW_PATH_INFO=/world"):
        assert line in lines, lines[:40]
    assert answer.endswith(body)
    owner_web = owner.app[NODE].config.node.web_listen
    status, headers, _ = await _get(f"http://{owner_web}/fn/hello/world?x=1")
    assert status == 307 and headers["Location"] == listed["url"] + "world?x=1"
    status, headers, _ = await _get(f"http://{owner_web}/fn/hello/caf%C3%A9%20x?q=%26x%3D1")
    assert status == 307 and headers["Location"] == listed["url"] + "caf%C3%A9%20x?q=%26x%3D1"
    status, headers, _ = await _get(f"http://{owner_web}/fn/hello/a%FFb%25")  # as sent: no byte lost in decoding
    assert status == 307 and headers["Location"] == listed["url"] + "a%FFb%25"
    # The provider sends a GET of the function's path without its '/' there, as a static host does (no run); the
    # owner's node sends its own such path straight to the provider's.
    status, headers, _ = await _get(listed["url"].rstrip("/") + "?x=1")
    assert status == 301 and headers["Location"] == f"/fn/{owner_id}/hello/?x=1", headers
    status, headers, _ = await _get(f"http://{owner_web}/fn/hello?x=1")
    assert status == 307 and headers["Location"] == listed["url"] + "?x=1", headers
    assert not [r for r in owner.app[NODE].compute.provenance_records.recent(100) if r["record"].get("job")]

    # The owner closes the tab for the provider's receipt and pays it: exactly what the runs there cost, and
    # compiling the module pushed to it.
    runs = await eventually_async(lambda: _runs(first, owner_id), "the run's record written (after its answer)")
    assert len(runs) == 1 and runs[0]["deal"]["function"] == "hello"
    charged = sum(r["charge"] for r in runs) + _compiled(runs)
    was = before[first.app[IDENTITY].id]
    await eventually_async(lambda: balances(owner, first) == (was[0] - charged, was[1] + charged),
                           "the provider paid by the tab's receipt (its receipt, then the owner's payment)", 30)
    async def counted():
        found = {f["name"]: f for f in (await _json(owner, "GET", "/v1/compute/functions"))["functions"]}["hello"]
        return found["requests"] == 1 and found
    spent = await eventually_async(counted, "the provider's counters of the function, listed on the owner")
    assert spent["spend"] == charged and spent["errors"] == 0 and spent["p50_ms"] > 0

    # Served again with changes: the provider serves the new spec at the same URL.
    await _json(owner, "POST", "/v1/compute/functions",
                json={"name": "hello", "module": module, "on_market": True, "env": {"GREETING": "hi"}})

    async def changed():
        status, _, answer = await _get(listed["url"] + "changed")
        return status == 200 and "GREETING=hi" in answer.decode().splitlines()

    await eventually_async(changed, "the changed function served by its provider", 30)
    assert (await _served_at(owner, "hello"))["url"] == listed["url"]

    # The provider goes away: the function is placed on the other one, and the owner lists its new URL.
    await close_node(first)
    moved = await _served_at(owner, "hello", other_than=listed["url"])
    second = next(p for p in providers if p is not first)
    assert moved["provider"] == second.app[IDENTITY].id
    status, _, answer = await _get(moved["url"] + "again")
    assert status == 200 and "PATH_INFO=/again" in answer.decode().splitlines()
    assert len(await eventually_async(lambda: _runs(second, owner_id), "the run's record written")) == 1

    # Unserved: withdrawn from its provider (404 there), its tab paid.
    await _json(owner, "DELETE", "/v1/compute/functions/hello")
    async def gone():
        return (await _get(moved["url"] + "x"))[0] == 404

    await eventually_async(gone, "the function withdrawn from its provider", 30)


async def _place(owner, provider, body: dict) -> tuple[int, dict]:
    """A placement sent as the owner's node (signed), however hostile its body; (status, answer)."""
    url = provider.app[NODE].peers.url
    try:
        answer = await owner.app[NODE].client.request(url, "POST", FUNCTIONS_PATH, json=body,
                                                      to=provider.app[IDENTITY].id, max_size=FUNCTION_ANSWER)
        return answer.status, answer.json()
    except PeerRefused as err:
        return err.details["peer_status"], {"code": err.details["peer_code"], "detail": err.message}


async def _owner_and_provider(node_factory, *, deployed: bool = True, **provider_sections):
    """A provider serving web functions and an owner offering no compute, peered: (owner, provider, the owner's
    cgi module, on the provider too if `deployed`, and the provider's compute price)."""
    provider = await _provider(node_factory, "provider", **provider_sections)
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    if deployed:
        wasm_bytes = owner.app[NODE].compute.store.wasm(bytes.fromhex(module))
        await provider.app[NODE].compute.registry.deploy(wasm_bytes, wasi=True)
    return owner, provider, module, provider.app[NODE].market.offer.honoured_ask("compute")


def _budget(provider, module: str, price: int) -> int:
    """What one request of the module's `_start`, at the default limits, holds on the provider."""
    return provider.app[NODE].compute.budget(InvokeCall(module, "_start", [], None, None, None, True), price)


def _terms(provider, price: int, authorization) -> dict:
    """A placement's terms, but its function: the price, the provider's memory price, the authorization."""
    encoded = authorization if isinstance(authorization, bytes) else encode_authorization(authorization)
    return {"price": price, "deal": {}, "memory_price": provider.app[NODE].compute.memory_price,
            "authorization": encoded.hex()}


async def test_a_provider_refuses_placements_it_is_not_paid_for_or_cannot_serve(node_factory):
    owner, provider, module, price = await _owner_and_provider(node_factory, deployed=False)
    pid, owner_id, node = provider.app[IDENTITY].id, owner.app[IDENTITY].id, owner.app[NODE]
    budget = _budget(provider, module, price)

    async def auth(name: str, cap: int = 2 * budget):
        return await node.payments.authorize(pid, cap, function_job(owner_id, name), ttl=3600)

    def body(name: str, authorization) -> dict:
        return {"function": {"name": name, "module": module}, **_terms(provider, price, authorization)}

    # The module is not on the provider: refused (the owner may push it, within the pushed-module bounds), nothing
    # served.  Bytes other than the module it asked for are refused, and it is still not here.
    status, answer = await _place(owner, provider, body("hello", await auth("hello")))
    assert status == 404 and answer["code"] == "module-not-found"
    try:
        await push_module(node.client, provider.app[NODE].peers.url, pid, lambda: b"\0asm not a module", True)
        raise AssertionError("a push that is not a module was taken")
    except PeerRefused as err:
        assert (err.details["peer_status"], err.details["peer_code"]) == (403, "forbidden"), err.details
    status, answer = await _place(owner, provider, body("hello", await auth("hello")))
    assert status == 404 and answer["code"] == "module-not-found"
    await provider.app[NODE].compute.registry.deploy(node.compute.store.wasm(bytes.fromhex(module)), wasi=True)
    # A forged authorization (its signature altered), one for another function, one too small for a single
    # request: each refused.
    forged = bytearray(encode_authorization(await auth("a")))
    forged[-1] ^= 1
    status, answer = await _place(owner, provider, body("a", bytes(forged)))
    assert status == 403 and answer["code"] == "forbidden", answer
    status, answer = await _place(owner, provider, body("a", await auth("b")))
    assert status == 403 and answer["code"] == "deal-refused" and "this function" in answer["detail"]
    status, answer = await _place(owner, provider, body("a", await auth("a", cap=budget - 1)))
    assert status == 403 and answer["code"] == "deal-refused", answer
    # Placed and served; withdrawn: 404 to callers from then on.
    first = await auth("a")
    status, answer = await _place(owner, provider, body("a", first))
    assert status == 201, answer
    assert (await _get(answer["url"] + "x"))[0] == 200
    await node.client.request(provider.app[NODE].peers.url, "DELETE", FUNCTION_PATH.format(name="a"), to=pid,
                              max_size=FUNCTION_ANSWER)
    assert (await _get(answer["url"] + "x"))[0] == 404
    # A replayed authorization: its tab was closed (and paid) already.
    receipt = await close_tab(node.client, provider.app[NODE].peers.url, pid, encode_authorization(first).hex())
    assert receipt["receipt"]
    status, answer = await _place(owner, provider, body("a", first))
    assert status == 409 and answer["code"] == "authorization-replayed", answer
    # Past the per-owner quota.
    for i in range(PER_OWNER):
        status, answer = await _place(owner, provider, body(f"f{i}", await auth(f"f{i}")))
        assert status == 201, answer
    status, answer = await _place(owner, provider, body("one-more", await auth("one-more")))
    assert status == 429 and answer["code"] == "quota-exceeded"


async def test_placements_sent_at_once_are_held_to_the_per_owner_quota(node_factory):
    """An owner sending its placements at once, each with an authorization of its own: every one was checked against
    the quota before any was served (its files staged meanwhile), and all were served, past PER_OWNER and MAX_PLACED.
    Those being placed count: the quota holds, the rest are 429."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    pid, owner_id, node = provider.app[IDENTITY].id, owner.app[IDENTITY].id, owner.app[NODE]
    budget = _budget(provider, module, price)
    names = [f"f{i}" for i in range(PER_OWNER + 4)]
    auths = [await node.payments.authorize(pid, 2 * budget, function_job(owner_id, name), ttl=3600) for name in names]
    answers = await asyncio.gather(*(_place(owner, provider, {"function": {"name": name, "module": module},
                                                              **_terms(provider, price, auth)})
                                     for name, auth in zip(names, auths)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] * PER_OWNER + [429] * 4, answers
    assert provider.app[NODE].functions.placed_here.by(owner_id) == PER_OWNER
    # Placed again (its next tab) while the quota is full: still the owner's own, not one more.
    placed = next(name for name, (status, _) in zip(names, answers) if status == 201)
    renewed = await node.payments.authorize(pid, 2 * budget, function_job(owner_id, placed), ttl=3600)
    status, answer = await _place(owner, provider, {"function": {"name": placed, "module": module},
                                                    **_terms(provider, price, renewed)})
    assert status == 201, answer


async def test_a_placed_function_past_its_authorized_cap_answers_402(node_factory):
    owner, provider, module, price = await _owner_and_provider(node_factory)
    authorization = await owner.app[NODE].payments.authorize(
        provider.app[IDENTITY].id, _budget(provider, module, price), function_job(owner.app[IDENTITY].id, "once"),
        ttl=3600)
    status, answer = await _place(owner, provider, {"function": {"name": "once", "module": module},
                                                    **_terms(provider, price, authorization)})
    assert status == 201, answer
    assert (await _get(answer["url"]))[0] == 200  # its one request's budget: what it cost is used of the cap
    status, headers, problem = await _get(answer["url"])
    assert status == 402 and headers["Content-Type"].startswith("application/problem+json"), problem


async def test_a_provider_refuses_a_placement_from_a_node_it_extends_no_credit(node_factory):
    stranger, provider, module, price = await _owner_and_provider(node_factory, ledger={"stranger_credit": 0})
    stranger_id = stranger.app[IDENTITY].id
    authorization = await stranger.app[NODE].payments.authorize(
        provider.app[IDENTITY].id, 2 * _budget(provider, module, price), function_job(stranger_id, "a"), ttl=3600)
    status, answer = await _place(stranger, provider, {"function": {"name": "a", "module": module},
                                                       **_terms(provider, price, authorization)})
    assert status == 402 and answer["code"] == "prepayment-required", answer
    assert provider.app[NODE].functions.placed_here.get(stranger_id, "a") is None
    for _ in range(10):  # each with a fresh authorization (any key signs one): no tab of theirs is kept
        authorization = await stranger.app[NODE].payments.authorize(
            provider.app[IDENTITY].id, 2 * _budget(provider, module, price), function_job(stranger_id, "a"), ttl=3600)
        status, answer = await _place(stranger, provider, {"function": {"name": "a", "module": module},
                                                           **_terms(provider, price, authorization)})
        assert status == 402 and answer["code"] == "prepayment-required", answer
    assert provider.app[NODE].paid.provider_tabs.kept == 0


@pytest.mark.parametrize("hostile, said", [
    ("http://{web}/fn/{owner}/hello/\r\nSet-Cookie: xsc_session=theirs\r\n", "without the URL"),
    ("https://elsewhere.example/phish/", "not its /fn/"),
    ("http://{web}/fn/{provider}/hello/", "not its /fn/"),
    ("http://elsewhere.example/?/fn/{owner}/hello/", "not its /fn/"),
], ids=["header splitter", "another site", "another owner's", "in its query"])
async def test_a_provider_answering_a_url_that_would_split_the_owners_redirect_is_not_used(
        node_factory, monkeypatch, hostile, said):
    """The URL a provider answers a placement with is the Location of the owner's redirects: with a CR LF in it, the
    owner's listener could not write the redirect (500 and a traceback to every caller) or, written, it would set
    what the provider liked on the owner's origin; with a path other than /fn/OWNER_ID/NAME/, the owner's callers
    would be sent to whatever page the provider chose.  The placement is refused as one without a URL."""
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{free_port()}", **FAST})
    await peer_with_provider(owner, provider)
    hosted = provider.app[NODE].placed_functions
    place = hosted.place
    url = hostile.format(web=provider.app[NODE].config.node.web_listen, owner=owner.app[IDENTITY].id,
                         provider=provider.app[IDENTITY].id)

    async def answered(owner_id: str, body) -> dict:
        return {**await place(owner_id, body), "url": url}

    monkeypatch.setattr(hosted, "place", answered)
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})

    async def refused():
        found = (await _json(owner, "GET", "/v1/compute/functions"))["functions"][0]
        return found if said in found.get("not_placed", "") else None

    listed = await eventually_async(refused, "the placement refused for its URL", 30)
    assert "url" not in listed or listed["url"] is None, listed
    status, headers, answer = await _get(f"http://{owner.app[NODE].config.node.web_listen}/fn/hello/")
    assert status == 503 and "Set-Cookie" not in headers, (status, headers, answer)


async def test_a_function_on_the_market_with_no_provider_is_unavailable_on_the_owner(node_factory):
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{free_port()}", **FAST})
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    status, headers, answer = await _get(f"http://{owner.app[NODE].config.node.web_listen}/fn/hello/")
    assert status == 503 and headers["Content-Type"].startswith("application/problem+json"), (status, answer)
    listed = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
    assert "url" not in listed[0] and listed[0]["spend"] == 0
    response = await owner.post("/v1/compute/functions", json={"name": "x", "module": module, "on_market": "yes"})
    assert response.status == 400 and "on_market" in (await response.json())["detail"]


async def test_reading_a_placed_functions_files_is_paid_on_its_owners_line_before_it_is_done(node_factory):
    stingy = await _provider(node_factory, "stingy", ledger={"stranger_credit": 100})
    generous = await _provider(node_factory, "generous")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    for provider in (stingy, generous):
        await peer_with_provider(owner, provider)
    owner_id, node = owner.app[IDENTITY].id, owner.app[NODE]
    module = await deploy(owner, "cgi", wasi=True)
    page = b"<p>a page big enough that reading it costs more than one small request</p>\n" * 60_000
    cap = (await _json(owner, "POST", "/v1/store/files", data=page))["capability"]
    limits = {"fuel": 1_000_000, "memory": 1 << 20, "timeout": 0.5}  # a small request's budget
    for provider in (stingy, generous):
        await provider.app[NODE].compute.registry.deploy(node.compute.store.wasm(bytes.fromhex(module)), wasi=True)
    price = stingy.app[NODE].market.offer.honoured_ask("compute")
    budget = stingy.app[NODE].compute.budget(InvokeCall(module, "files", [], 1_000_000, 1 << 20, 0.5, True), price)
    reading = mount_price(len(page), price)
    assert budget <= 100 < reading  # one request fits the stingy provider's line; reading the page does not

    async def place(provider, limits: dict) -> tuple[int, dict]:
        authorization = await node.payments.authorize(provider.app[IDENTITY].id, 10**6,
                                                      function_job(owner_id, "site"), ttl=3600)
        return await _place(owner, provider, {
            "function": {"name": "site", "module": module, "entrypoint": "files", "limits": limits,
                         "inputs": [f"{cap}:/in/index.html"]}, **_terms(provider, price, authorization)})

    status, answer = await place(stingy, limits)
    assert status == 402 and answer["code"] == "prepayment-required", answer
    assert stingy.app[NODE].functions.placed_here.get(owner_id, "site") is None
    used = generous.app[NODE].trust.line(owner_id)["used"]
    roomy = {"fuel": 100_000_000}  # enough to answer the page
    status, answer = await place(generous, roomy)
    assert status == 201, answer
    assert generous.app[NODE].trust.line(owner_id)["used"] == used + reading
    status, again = await place(generous, roomy)  # its next tab, the same spec: its files are not read again
    assert status == 201 and again["url"] == answer["url"]
    assert generous.app[NODE].trust.line(owner_id)["used"] == used + reading
    status, _, served = await _get(answer["url"] + "index.html")  # read from the network, served from there
    assert status == 200 and served == page


async def test_a_provider_refuses_a_malformed_placement_with_a_problem(node_factory):
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id = owner.app[IDENTITY].id
    authorization = await owner.app[NODE].payments.authorize(provider.app[IDENTITY].id, 10**6,
                                                             function_job(owner_id, "a"), ttl=3600)
    terms = _terms(provider, price, authorization)
    for function, said in (({"name": "a", "module": module, "inputs": ["s3://bucket/key:/in/x"]}, "capabilities"),
                           ({"name": "a", "module": module, "inputs": ["nothing"]}, "CAP:/in/NAME"),
                           ({"name": "a", "module": module, "inputs": [f"xsc:{i}:/in/{i}" for i in range(65)]},
                            "at most 64"),
                           ({"name": "a", "module": module, "spend_cap": 5}, "a placed function is"),
                           ({"name": "a", "module": module, "limits": {"fuel": "lots"}}, "fuel"),
                           ({"name": "A!", "module": module}, "does not pay for this function"),
                           # past what this provider takes of a placed function (compute.placed_max_body, ...)
                           ({"name": "a", "module": module, "max_body": 1 << 30}, "max_body"),
                           ({"name": "a", "module": module, "concurrency": 256}, "concurrency"),
                           # looked up as hex: a 500 once
                           *(({"name": "a", "module": text}, "module") for text in ("x", "\u0663", module.upper()))):
        status, answer = await _place(owner, provider, {**terms, "function": function})
        assert 400 <= status < 500 and said in answer["detail"], (function, status, answer)
    status, answer = await _place(owner, provider, {**terms, "function": {"name": "a", "module": module},
                                                    "extra": 1})
    assert status == 400, answer
    assert provider.app[NODE].functions.placed_here.get(owner_id, "a") is None


async def test_two_owners_placing_one_name_on_a_provider_each_reach_only_their_own(node_factory):
    """Two owners' functions of one name on one provider are two functions: each served with its own environment,
    withdrawn by its own owner only, and no path under one owner's reaches the other's.  A function of the
    provider's own user may not be named as a node is: /fn/NODE_ID/ is where that node's placed functions are."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    other = await node_factory("other", **QUIET, market={"offer_compute": False})
    await peer_with_provider(other, provider)
    pid, web = provider.app[IDENTITY].id, f"http://{provider.app[NODE].config.node.web_listen}"
    ids = [node.app[IDENTITY].id for node in (owner, other)]
    for node, node_id in zip((owner, other), ids):
        auth = await node.app[NODE].payments.authorize(pid, 10 * _budget(provider, module, price),
                                                       function_job(node_id, "site"), ttl=3600)
        status, answer = await _place(node, provider, {"function": {"name": "site", "module": module,
                                                                    "env": {"WHO": node_id}},
                                                       **_terms(provider, price, auth)})
        assert status == 201 and answer["url"] == f"{web}/fn/{node_id}/site/", answer
    for node_id in ids:
        status, _, answer = await _get(f"{web}/fn/{node_id}/site/x")
        assert status == 200 and f"WHO={node_id}".encode() in answer.splitlines(), answer[:300]
        assert f"SCRIPT_NAME=/fn/{node_id}/site".encode() in answer.splitlines()
    mine, theirs = ids
    for trick in (f"/fn/{mine}/site/../../{theirs}/site/", f"/fn/{mine}/site/%2e%2e/%2e%2e/{theirs}/site/",
                  f"/fn/{mine}/site%2f..%2f..%2f{theirs}%2fsite/", f"/fn/{mine}/..%2f{theirs}/site/"):
        status, _, answer = await _get(yarl.URL(web + trick, encoded=True))
        assert status == 400 and b"WHO=" not in answer, (trick, status, answer[:300])
    # The other owner's withdrawal takes its own function only, and a name it has none under is refused.
    path = FUNCTION_PATH.format(name="site")
    await other.app[NODE].client.request(provider.app[NODE].peers.url, "DELETE", path, to=pid,
                                         max_size=FUNCTION_ANSWER)
    with pytest.raises(PeerRefused) as refused:
        await other.app[NODE].client.request(provider.app[NODE].peers.url, "DELETE", path, to=pid,
                                             max_size=FUNCTION_ANSWER)
    assert refused.value.details["peer_status"] == 404
    assert (await _get(f"{web}/fn/{theirs}/site/x"))[0] == 404
    assert (await _get(f"{web}/fn/{mine}/site/x"))[0] == 200
    # The provider's user cannot take the owner's URLs with a function of its own named as the owner's node.
    response = await provider.post("/v1/compute/functions", json={"name": mine, "module": module})
    assert response.status == 400 and "node" in (await response.json())["detail"], await response.text()
    status, _, answer = await _get(f"{web}/fn/{mine}/site/x")
    assert status == 200 and f"WHO={mine}".encode() in answer.splitlines()


async def test_a_providers_own_function_kept_under_a_node_id_never_takes_that_nodes_urls(node_factory, caplog):
    """A function the provider's user served under a node's id before such names were refused is still on disk: at
    start it is not served (a log line says so and how to serve it again), /fn/NODE_ID/... reaches that node's placed
    functions only, and the user may remove it."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id, pid = owner.app[IDENTITY].id, provider.app[IDENTITY].id
    provider.app[NODE].compute.store.save_function({
        "name": owner_id, "module": module, "entrypoint": "_start", "inputs": [], "env": {"WHO": "provider"},
        "limits": {}, "max_body": 1 << 20, "concurrency": 8, "spend_cap": None, "on_market": False,
        "created": provenance.timestamp(time.time_ns())})
    web_listen = provider.app[NODE].config.node.web_listen
    await provider.close()
    with caplog.at_level(logging.WARNING, logger="xsc.compute.functions"):
        provider = await node_factory("provider", **QUIET, node={"web_listen": web_listen, "web_rate_limit": 1000})
    status, _, answer = await _get(f"http://{web_listen}/fn/{owner_id}/site/x")
    assert status == 404 and b"WHO=" not in answer, answer[:300]
    auth = await owner.app[NODE].payments.authorize(pid, 10 * _budget(provider, module, price),
                                                    function_job(owner_id, "site"), ttl=3600)
    status, answer = await _place(owner, provider, {"function": {"name": "site", "module": module,
                                                                "env": {"WHO": owner_id}},
                                                   **_terms(provider, price, auth)})
    assert status == 201, answer
    status, _, answer = await _get(f"http://{web_listen}/fn/{owner_id}/site/x")
    assert status == 200 and f"WHO={owner_id}".encode() in answer.splitlines(), answer[:300]
    assert any(f"function {owner_id} is not served" in r.getMessage() for r in caplog.records), caplog.text
    assert owner_id not in {f["name"] for f in (await _json(provider, "GET", "/v1/compute/functions"))["functions"]}
    await _json(provider, "DELETE", f"/v1/compute/functions/{owner_id}")
    assert [r["name"] for r in provider.app[NODE].compute.store.functions()] == []


async def test_callers_of_a_placed_function_answered_before_their_records_are_written_hold_only_what_runs_cost(
        node_factory):
    # Ten budgets on the owner's line and on the tab, eight callers at a time: were each answered run's whole budget
    # held until its record is written (after the answer), a backlog of them would refuse callers (402).
    fuel, memory, timeout, price = 2_000_000, 16 * 2**20, 2, 40
    budget = price_budget(fuel, price, memory, timeout * 1_000_000, 10)
    owner, provider, module, _ = await _owner_and_provider(
        node_factory, market={"compute_ask_floor": price, "compute_ask_ceiling": price},
        ledger={"stranger_credit": 10 * budget, "peer_credit": 10 * budget})
    owner_id, pid, node = owner.app[IDENTITY].id, provider.app[IDENTITY].id, owner.app[NODE]
    assert provider.app[NODE].market.offer.honoured_ask("compute") == price
    limits = {"fuel": fuel, "memory": memory, "timeout": timeout}
    assert provider.app[NODE].compute.budget(InvokeCall(module, "_start", [], fuel, memory, timeout, True),
                                             price) == budget
    authorization = await node.payments.authorize(pid, 10 * budget, function_job(owner_id, "hello"), ttl=3600)
    status, placed = await _place(owner, provider, {"function": {"name": "hello", "module": module,
                                                                 "limits": limits, "concurrency": 8},
                                                    **_terms(provider, price, authorization)})
    assert status == 201, placed
    trust = provider.app[NODE].trust
    used = trust.line(owner_id)["used"]
    statuses, samples = await call_at_once(lambda n: f"{placed['url']}{n}", lambda: trust.line(owner_id)["reserved"])
    assert statuses.count(200) == len(statuses) == 320, {s: statuses.count(s) for s in set(statuses)}
    runs = await eventually_async(lambda: len(r := _runs(provider, owner_id)) == len(statuses) and r,
                                  "every run to be recorded")
    metered = sum(r["charge"] for r in runs)
    assert metered < budget  # far below the limit: only holds could have refused a caller
    worst = max(held - flying * budget for held, flying in samples)
    assert worst <= metered, f"held credit exceeded the budgets in flight by {worst} (all metered: {metered})"
    # Each run is owed on the tab and used on the owner's line once written, and nothing stays held.
    tab = (await wire.status(node.client, provider.app[NODE].peers.url, pid, owner_id, "hello"))["tab"]
    assert (tab["total"], tab["count"]) == (metered, 320), tab
    line = trust.line(owner_id)
    assert (line["used"] - used, line["reserved"]) == (metered, 0), line


async def test_placements_are_served_again_after_a_restart_unless_expired_withdrawn_or_without_their_module(
        node_factory):
    owner, provider, module, price = await _owner_and_provider(node_factory)
    node, pid, owner_id = owner.app[NODE], provider.app[IDENTITY].id, owner.app[IDENTITY].id
    other = await deploy(owner, "wasi_hello", wasi=True)
    await provider.app[NODE].compute.registry.deploy(node.compute.store.wasm(bytes.fromhex(other)), wasi=True)
    budget = _budget(provider, module, price)

    async def place(name: str, module: str = module, ttl: int = 3600):
        authorization = await node.payments.authorize(pid, 4 * budget, function_job(owner_id, name), ttl=ttl)
        status, answer = await _place(owner, provider, {"function": {"name": name, "module": module},
                                                        **_terms(provider, price, authorization)})
        assert status == 201, answer
        assert (await _get(answer["url"] + "before"))[0] != 404  # served (a program that is no CGI: 502)
        return answer["url"], authorization

    kept, authorization = await place("kept")
    brief, brief_authorization = await place("brief", ttl=2)
    withdrawn, _ = await place("withdrawn")
    await node.client.request(provider.app[NODE].peers.url, "DELETE", FUNCTION_PATH.format(name="withdrawn"), to=pid,
                              max_size=FUNCTION_ANSWER)
    orphaned, _ = await place("orphaned", other)
    provider.app[NODE].compute.registry.remove(other)
    web_listen = provider.app[NODE].config.node.web_listen
    await eventually_async(lambda: len(_runs(provider, owner_id)) == 4, "the runs before the stop recorded")

    def counted(node) -> tuple:
        return next((f["requests"], f["errors"], f["earned"]) for f in node.app[NODE].placed_functions.hosted()
                    if f["name"] == "kept")

    before = await eventually_async(lambda: (c := counted(provider))[0] == 1 and c, "the request before counted")
    assert before[2] > 0, before
    await provider.app[NODE].placed_functions.keep_counts()  # its loop's pass: written as it serves, not only at a stop
    kept_counts = provider.app[NODE].compute.store.placed_counts()
    assert kept_counts[(owner_id, "kept")] == dict(zip(("requests", "errors", "earned"), before)), kept_counts
    stray = provider.app[NODE].config.data_dir / "functions" / ".placed" / owner_id / "cut-short" / ("0" * 32) / "in"
    stray.mkdir(parents=True)
    await provider.close()
    await eventually_async(lambda: time.time() > brief_authorization.expires_at,
                           "the brief placement's authorization to expire while its provider is down", 10)

    again = await node_factory("provider", **QUIET, node={"web_listen": web_listen, "web_rate_limit": 1000})
    tab = (await wire.status(node.client, again.app[NODE].peers.url, pid, owner_id, "kept"))["tab"]
    assert (tab["authorization"], tab["count"]) == (authorization.id.hex(), 1), tab  # its run before the stop
    assert counted(again) == before  # `xsc compute functions --hosted` goes on from what it counted before the stop
    assert set(again.app[NODE].compute.store.placed_counts()) == {(owner_id, "kept")}  # none of those dropped
    status, _, answer = await _get(kept + "after")  # the same URL, not placed again
    assert status == 200 and "PATH_INFO=/after" in answer.decode().splitlines(), (status, answer[:300])
    for url in (brief, withdrawn, orphaned):
        status, headers, problem = await _get(url + "after")
        assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), (url, problem)
    assert [key for key, _ in again.app[NODE].compute.store.placements()] == [(owner_id, "kept")]
    assert not stray.exists()  # files staged for a placement whose record a kill cut short are removed
    # On the tab it was placed with: the runs before and after the restart, owed on it, and its receipt is for both.
    runs = await eventually_async(lambda: len(r := [x for x in _runs(again, owner_id)
                                                    if x["deal"]["function"] == "kept"]) == 2 and r,
                                  "the run after the restart recorded")
    assert {r["deal"]["authorization"] for r in runs} == {authorization.id.hex()}
    tab = (await wire.status(node.client, again.app[NODE].peers.url, pid, owner_id, "kept"))["tab"]
    assert (tab["authorization"], tab["count"]) == (authorization.id.hex(), 2), tab
    answer = await close_tab(node.client, again.app[NODE].peers.url, pid, encode_authorization(authorization).hex())
    receipt = check_receipt(pid, answer, authorization, meters=TAB_METERS)
    assert receipt.amount == sum(r["charge"] for r in runs) > 0


async def test_a_placement_or_counters_unreadable_on_disk_are_dropped_and_the_provider_starts(node_factory):
    owner, provider, module, price = await _owner_and_provider(node_factory)
    node, pid, owner_id = owner.app[NODE], provider.app[IDENTITY].id, owner.app[IDENTITY].id
    authorization = await node.payments.authorize(pid, 4 * _budget(provider, module, price),
                                                  function_job(owner_id, "kept"), ttl=3600)
    status, answer = await _place(owner, provider, {"function": {"name": "kept", "module": module},
                                                    **_terms(provider, price, authorization)})
    assert status == 201, answer
    web_listen, data_dir = provider.app[NODE].config.node.web_listen, provider.app[NODE].config.data_dir
    await provider.close()
    db = open_database(data_dir / DB_DIR)
    try:  # a disk's fault: rows cut short, and a name that is not UTF-8
        unreadable = [keys.placed(owner_id, "cut"), keys.PLACED + owner_id.encode() + b"\0\xff\xfe",
                      keys.placed_counts(owner_id, "kept"), keys.PLACED_COUNTS + b"\xff\0x"]
        for key in unreadable:
            db.put(key, b'{"function": {"na', sync=True)
    finally:
        db.close()
    again = await node_factory("provider", **QUIET, node={"web_listen": web_listen, "web_rate_limit": 1000})
    store, db = again.app[NODE].compute.store, again.app[NODE].db
    assert [key for key, _ in store.placements()] == [(owner_id, "kept")] and store.placed_counts() == {}
    assert all(db.get(key) is None for key in unreadable)  # dropped, not read again at each start
    status, _, body = await _get(answer["url"] + "after")
    assert status == 200 and "PATH_INFO=/after" in body.decode().splitlines(), (status, body[:300])


async def test_a_placed_function_whose_owner_closed_its_tab_without_placing_the_next_is_withdrawn(node_factory):
    owner, provider, module, price = await _owner_and_provider(node_factory)
    node, pid, owner_id = owner.app[NODE], provider.app[IDENTITY].id, owner.app[IDENTITY].id
    budget, peer_url = _budget(provider, module, price), provider.app[NODE].peers.url

    async def place(name: str):
        authorization = await node.payments.authorize(pid, 4 * budget, function_job(owner_id, name), ttl=3600)
        status, answer = await _place(owner, provider, {"function": {"name": name, "module": module},
                                                        **_terms(provider, price, authorization)})
        assert status == 201, answer
        return answer["url"], authorization

    # Its tab closed, and no next one placed (the owner placed it elsewhere, or gave it up): withdrawn, on disk too.
    url, first = await place("left")
    assert (await _get(url))[0] == 200
    await eventually_async(lambda: _runs(provider, owner_id), "its run recorded (a tab closes with none in flight)")
    assert (await close_tab(node.client, peer_url, pid, encode_authorization(first).hex()))["receipt"]
    status, headers, problem = await _get(url)
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), problem
    assert provider.app[NODE].functions.placed_here.get(owner_id, "left") is None
    assert provider.app[NODE].compute.store.placements() == []
    # Placed with its next tab, then the old one closed: a request that took the old tab is told to retry, and the
    # function is still served on the new one.
    url, first = await place("moving")
    old = provider.app[NODE].functions.placed_here.get(owner_id, "moving").bill
    await place("moving")
    with pytest.raises(PeerRefused) as refused:  # no request ran under it: closed, with no receipt
        await close_tab(node.client, peer_url, pid, encode_authorization(first).hex())
    assert refused.value.details["peer_code"] == "nothing-owed"
    with pytest.raises(FunctionUnavailable):
        await old.hold(budget)
    assert provider.app[NODE].trust.line(owner_id)["reserved"] == 0  # what it held on the owner's line given back
    assert (await _get(url))[0] == 200
    # Its tab expired with no next one placed (its owner went away): no receipt can pay what it runs from then on,
    # so it is withdrawn, its files with it, at the first request past the expiry.
    authorization = await node.payments.authorize(pid, 4 * budget, function_job(owner_id, "gone"), ttl=2)
    status, answer = await _place(owner, provider, {"function": {"name": "gone", "module": module},
                                                    **_terms(provider, price, authorization)})
    assert status == 201 and (await _get(answer["url"]))[0] == 200, answer
    await eventually_async(lambda: time.time() > authorization.expires_at, "the tab's authorization to expire")
    status, headers, problem = await _get(answer["url"])
    assert status == 404 and b"expired" in problem, problem
    assert provider.app[NODE].functions.placed_here.get(owner_id, "gone") is None
    assert [key for key, _ in provider.app[NODE].compute.store.placements()] == [(owner_id, "moving")]


async def test_a_placed_functions_tab_closed_before_its_answered_runs_are_written_counts_them(node_factory,
                                                                                              monkeypatch):
    """A request is answered before its record is written: the tab's close has the journal write it first, so the
    receipt covers it.  Only its owner's close does: another node's close of the tab is refused before that."""
    monkeypatch.setattr(journal_module, "LAZY_AFTER", 60.0)  # an answered run's record waits for more runs
    owner, provider, module, price = await _owner_and_provider(node_factory)
    node, pid, owner_id = owner.app[NODE], provider.app[IDENTITY].id, owner.app[IDENTITY].id
    peer_url, journal = provider.app[NODE].peers.url, provider.app[NODE].compute.journal
    flushes: list[None] = []
    flush = journal.flush
    monkeypatch.setattr(journal, "flush", lambda: (flushes.append(None), flush())[1])
    authorization = await node.payments.authorize(pid, 4 * _budget(provider, module, price),
                                                  function_job(owner_id, "lazy"), ttl=3600)
    status, answer = await _place(owner, provider, {"function": {"name": "lazy", "module": module},
                                                    **_terms(provider, price, authorization)})
    assert status == 201, answer
    assert (await _get(answer["url"]))[0] == 200
    assert (await wire.status(node.client, peer_url, pid, owner_id, "lazy"))["tab"]["count"] == 0  # not written yet
    closing = json.dumps({"authorization": encode_authorization(authorization).hex()}).encode()
    stranger = Identity.generate()
    headers = sign_request(stranger, "POST", TAB_CLOSE_PATH, closing, receiver=pid)
    response = await provider.request("POST", TAB_CLOSE_PATH, data=closing, headers={**headers, "Authorization": ""})
    assert response.status == 403 and flushes == [], await response.text()
    receipt = check_receipt(pid, await close_tab(node.client, peer_url, pid, encode_authorization(authorization).hex()),
                            authorization, meters=TAB_METERS)
    (run,) = _runs(provider, owner_id)
    assert (receipt.amount, dict(receipt.usage)["invokes"]) == (run["charge"], 1) and flushes == [None]


async def test_a_placed_function_whose_tab_ended_with_no_request_is_withdrawn_by_the_sweep(node_factory):
    owner, provider, module, price = await _owner_and_provider(node_factory)
    node, pid, owner_id = owner.app[NODE], provider.app[IDENTITY].id, owner.app[IDENTITY].id
    placed, budget, peer_url = provider.app[NODE].placed_functions, _budget(provider, module, price), \
        provider.app[NODE].peers.url
    files = provider.app[NODE].config.data_dir / "functions" / ".placed" / owner_id

    async def place(name: str, ttl: int = 3600):
        authorization = await node.payments.authorize(pid, 4 * budget, function_job(owner_id, name), ttl=ttl)
        status, answer = await _place(owner, provider, {"function": {"name": name, "module": module},
                                                        **_terms(provider, price, authorization)})
        assert status == 201 and (await _get(answer["url"]))[0] == 200, answer
        return answer["url"], authorization

    kept, _ = await place("kept")
    gone_url, gone = await place("gone", ttl=2)  # its owner goes away: no next tab, and no request comes
    closed_url, closed = await place("closed")  # its owner closes its tab and places it nowhere here again
    await eventually_async(lambda: len(_runs(provider, owner_id)) == 3, "the runs recorded (a tab closes with none "
                           "in flight)")
    assert (await close_tab(node.client, peer_url, pid, encode_authorization(closed).hex()))["receipt"]
    assert "placed-functions-sweep" in placed.loops()  # run every 5 minutes by the node's supervisor
    assert await placed.sweep(now=gone.expires_at - 1) == [(owner_id, "closed")]
    assert sorted(await placed.sweep(now=gone.expires_at + 1)) == [(owner_id, "gone")]  # (a fake clock: past it)
    assert [key for key, _ in provider.app[NODE].compute.store.placements()] == [(owner_id, "kept")]
    assert sorted(p.name for p in files.iterdir()) == ["kept"]  # its files went with its record
    for url in (gone_url, closed_url):
        status, headers, problem = await _get(url)
        assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), problem
    assert (await _get(kept))[0] == 200 and await placed.sweep() == []


async def test_what_the_payment_retry_pays_for_a_placed_function_counts_in_its_spend(node_factory, monkeypatch):
    # The answers to the owner's closes of its function's tabs are lost (the provider countersigned each): the payment
    # retry finds each receipt on the provider and pays it.  What it pays is the function's spend too; uncounted,
    # the function's hourly spend cap would let it spend as much again.
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{free_port()}", **FAST},
                               ledger={"settle_retry_interval": 0.2})
    owner_id = owner.app[IDENTITY].id
    await peer_with_provider(owner, provider)
    real_close, lost = placements.close_tab, []

    async def answer_lost(*args, **kwargs):
        await real_close(*args, **kwargs)
        lost.append(1)
        raise PeerUnreachable("connection reset by peer")

    monkeypatch.setattr(placements, "close_tab", answer_lost)
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    listed = await _served_at(owner, "hello")
    before = balances(owner, provider)
    assert (await _get(listed["url"] + "x"))[0] == 200
    runs = await eventually_async(lambda: _runs(provider, owner_id), "the run's record written (after its answer)")
    charged = sum(r["charge"] for r in runs) + _compiled(runs)  # (the module pushed to it: its compile paid too)
    await eventually_async(lambda: balances(owner, provider) == (before[0] - charged, before[1] + charged),
                           "the provider paid by the payment retry", 30)
    assert lost

    async def spent():
        found = {f["name"]: f for f in (await _json(owner, "GET", "/v1/compute/functions"))["functions"]}["hello"]
        return found["spend"] == charged

    await eventually_async(spent, "what the retry paid counted in the function's spend", 10)


async def test_a_function_on_the_market_passes_over_a_provider_that_wanted_prepayment_as_a_call_does(node_factory):
    # The cheapest provider extends the owner no credit: it refuses the first placement, and is not asked again.
    stingy = await _provider(node_factory, "stingy", ledger={"stranger_credit": 0},
                             market={"compute_ask_floor": 1, "compute_ask_ceiling": 2})
    generous = await _provider(node_factory, "generous", market={"compute_ask_floor": 20, "compute_ask_ceiling": 30})
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{free_port()}", **FAST})
    for provider in (stingy, generous):
        await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    for name in ("one", "two"):
        await _json(owner, "POST", "/v1/compute/functions", json={"name": name, "module": module, "on_market": True})
        assert (await _served_at(owner, name))["provider"] == generous.app[IDENTITY].id
    refusals = [line for line in stingy.app[METRICS].render().decode().splitlines()
                if line.startswith('xsc_peer_refusals_total{code="prepayment-required"}')]
    assert refusals == ['xsc_peer_refusals_total{code="prepayment-required"} 1.0'], refusals


async def test_a_spend_cap_set_on_a_placed_function_ends_the_tab_that_could_spend_past_it(node_factory):
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False}, node=FAST)
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    function = {"name": "hello", "module": module, "on_market": True}
    await _json(owner, "POST", "/v1/compute/functions", json=function)
    listed = await _served_at(owner, "hello")
    assert (await _get(listed["url"]))[0] == 200
    (first,) = [a for a in owner.app[NODE].ledger.pending() if a.job == function_job(owner.app[IDENTITY].id, "hello")]

    # Served again with a cap that holds two requests' budgets but not the open tab's 16: that tab is ended and
    # paid, and the function placed again on a tab the cap bounds.
    budget = _budget(provider, module, provider.app[NODE].market.offer.honoured_ask("compute"))
    await _json(owner, "POST", "/v1/compute/functions", json={**function, "spend_cap": 2 * budget})

    async def placed_again():
        [found] = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
        tabs = [a for a in owner.app[NODE].ledger.pending() if a.job == first.job]
        return found if found["spend"] > 0 and tabs and all(a.cap <= 2 * budget for a in tabs) else None

    found = await eventually_async(placed_again, "the first tab paid and the function on a tab the cap bounds", 30)
    assert first.id not in {a.id for a in owner.app[NODE].ledger.pending()}, found


async def test_a_function_on_the_market_under_a_cap_below_one_requests_budget_is_refused(node_factory):
    """A cap that can never place the function is refused when it is served, naming the least cap that places it at
    the market's price now; the function as served before goes on as it was."""
    owner, provider, module, _ = await _owner_and_provider(node_factory)
    function = {"name": "hello", "module": module, "on_market": True}
    await _json(owner, "POST", "/v1/compute/functions", json=function)
    listed = await _served_at(owner, "hello")
    (tab,) = [a for a in owner.app[NODE].ledger.pending() if a.job == function_job(owner.app[IDENTITY].id, "hello")]
    assert (await _get(listed["url"]))[0] == 200
    price = (await eventually_async(lambda: _runs(provider, owner.app[IDENTITY].id), "the run"))[0]["fuel_price"]
    # one request's budget at the price the market placed it at (its tab's cap: 16 of them, and room to compile it)
    budget = (tab.cap - compile_room(owner.app[NODE].compute, module, price)) // placements.TAB_REQUESTS
    assert budget == _budget(provider, module, price)
    for cap in (1, budget - 1):
        response = await owner.post("/v1/compute/functions", json={**function, "spend_cap": cap})
        refused = await response.json()
        assert response.status == 400 and refused["code"] == "invalid-argument", refused
        assert refused["least"] == budget and f"below one request's budget at the market's price now, {budget:,}" \
            in refused["detail"], refused
        assert refused["hint"].endswith(f"xsc compute serve hello {module} ... --on-market --spend-cap {budget}")
        [kept] = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
        assert kept["spend_cap"] is None and kept["url"] == listed["url"], kept  # as it was
    response = await owner.post("/v1/compute/functions", json={"name": "new", "module": module, "on_market": True,
                                                                "spend_cap": 1})
    assert response.status == 400 and [f["name"] for f in (await _json(owner, "GET", "/v1/compute/functions"))[
        "functions"]] == ["hello"]  # nothing kept of one refused
    # A cap of one request's budget places it.
    await _json(owner, "POST", "/v1/compute/functions", json={**function, "name": "capped", "spend_cap": budget})
    await _served_at(owner, "capped")


async def test_a_function_is_placed_only_on_a_provider_with_a_web_listener(node_factory):
    """A provider with no node.web_listen sells compute to jobs and invokes but cannot serve a function: its
    compute ask carries no web tag, and a placement, which requires it, never asks that provider."""
    plain = await node_factory("plain", **QUIET)
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False}, node=FAST)
    await peer_with_provider(owner, plain)
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})

    async def why():
        [found] = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
        return found.get("not_placed")

    reason = await eventually_async(why, "the owner to say why it is not placed", 30)
    assert "a provider with a web listener (node.web_listen)" in reason and "refused" not in reason, reason
    assert plain.app[NODE].placed_functions.hosted() == [], "the provider without a web listener was asked"
    # An invoke still runs on it: it sells compute all the same.
    answer = await _json(owner, "POST", "/v1/compute/invoke",
                         json={"module": await deploy(owner, "arith"), "function": "add_i64", "args": [1, 2]})
    assert answer["provider"] == plain.app[IDENTITY].id, answer

    web = await _provider(node_factory, "web")
    await peer_with_provider(owner, web)
    listed = await _served_at(owner, "hello")
    assert listed["provider"] == web.app[IDENTITY].id, listed


async def test_a_caller_of_a_placed_function_not_here_is_told_its_name_beside_those_placed_here(node_factory):
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{free_port()}", **FAST})
    owner_id = owner.app[IDENTITY].id
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    listed = await _served_at(owner, "hello")
    owner_url = listed["url"].removesuffix("hello/")
    for path in ("gone", "gone/", "gone/a/b"):
        status, _, problem = await _get(owner_url + path)
        assert status == 404 and f"no function named 'gone' placed here by node {owner_id}".encode() in problem, \
            (path, problem)

async def test_a_placed_function_whose_spend_cap_one_tab_holds_is_paid_once_that_tab_is_spent(node_factory):
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{free_port()}", **FAST})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    # So little fuel that a request's budget is its memory for its time, whatever price the market sets.
    # The provider has the module: nothing is compiled there (a cap that has room for that: test_functions_compile_paid).
    await provider.app[NODE].compute.registry.deploy(wasm("cgi"), wasi=True)
    call = InvokeCall(module, "_start", [], 25_000, None, None, True)
    budget = owner.app[NODE].compute.budget(call, provider.app[NODE].market.offer.honoured_ask("compute"))
    assert owner.app[NODE].compute.budget(call, 40) == budget
    # A cap of one request's budget: the tab it is placed on holds all of it, so no next tab fits beside it.
    await _json(owner, "POST", "/v1/compute/functions",
                json={"name": "hello", "module": module, "on_market": True, "limits": {"fuel": 25_000},
                      "spend_cap": budget})
    listed = await _served_at(owner, "hello")
    answers = [await _get(listed["url"]) for _ in range(3)]
    statuses = [status for status, _, _ in answers]
    assert statuses[0] == 200 and 402 in statuses, statuses  # its one request's budget held, the tab is spent
    refused = json.loads(next(problem for status, _, problem in answers if status == 402))
    assert "spend cap for the hour" in refused["hint"], refused  # not "in a moment": the hour may have to turn

    # The spent tab is ended and paid, so what it ran counts in the hour; the cap then leaves less than a
    # request's budget, and the owner's list says so with the command that raises it.
    async def paid():
        [found] = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
        return found if found["spend"] > 0 and "spend cap" in found.get("not_placed", "") else None

    found = await eventually_async(paid, "the spent tab paid and the function left unplaced", 30)
    assert found["spent_this_hour"] == found["spend"], found
    assert f"budget of {budget:,}" in found["not_placed"], found
    assert f"xsc compute serve hello {module} ... --on-market --spend-cap {found['spend'] + budget}" \
        in found["not_placed"], found
    status, _, problem = await _get(listed["url"])
    assert status == 404 and b"no function named 'hello' placed here by node " in problem, problem  # withdrawn from the provider
    status, _, problem = await _get(f"http://{owner.app[NODE].config.node.web_listen}/fn/hello/")
    assert status == 402 and b"spend-cap-reached" in problem, (status, problem)  # not "retry in a moment"
    assert (await _json(owner, "GET", "/v1/ledger/accounts/client"))["held"] == 0  # nothing held for a tab


async def test_a_placed_function_whose_spend_cap_one_tab_holds_is_served_again_with_its_changes(node_factory):
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False}, node=FAST)
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    call = InvokeCall(module, "_start", [], 25_000, None, None, True)
    budget = owner.app[NODE].compute.budget(call, provider.app[NODE].market.offer.honoured_ask("compute"))
    function = {"name": "hello", "module": module, "on_market": True, "limits": {"fuel": 25_000},
                "spend_cap": 2 * budget - 1}  # no next tab fits beside the one it is placed on
    await _json(owner, "POST", "/v1/compute/functions", json=function)
    listed = await _served_at(owner, "hello")
    await _json(owner, "POST", "/v1/compute/functions", json={**function, "env": {"GREETING": "again"}})

    async def changed():
        status, _, body = await _get(listed["url"])
        return status == 200 and b"GREETING=again" in body

    await eventually_async(changed, "the provider to serve the function as it was served again", 30)


async def test_a_placed_functions_next_tab_after_a_restart_of_its_owner_leaves_room_for_the_one_still_open(
        node_factory, monkeypatch):
    # The owner stops with its capped function's tab open; its provider will not close that tab yet.  Started again,
    # the owner places the function on a next tab: what that one and the open one may be paid stay within the cap.
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    call = InvokeCall(module, "_start", [], 25_000, None, None, True)
    budget = owner.app[NODE].compute.budget(call, provider.app[NODE].market.offer.honoured_ask("compute"))
    await _json(owner, "POST", "/v1/compute/functions",
                json={"name": "hello", "module": module, "on_market": True, "limits": {"fuel": 25_000},
                      "spend_cap": 20 * budget})
    first = await _served_at(owner, "hello")
    assert (await _get(first["url"]))[0] == 200
    runs = await eventually_async(lambda: _runs(provider, owner.app[IDENTITY].id), "the run recorded")
    compiling = _compiled(runs)
    job = function_job(owner.app[IDENTITY].id, "hello")
    (old,) = [a for a in owner.app[NODE].ledger.pending() if a.job == job]
    assert old.cap == 16 * budget + compiling  # and room to compile the module (pushed to the provider)
    await close_node(owner)

    async def busy(auth, sender=None, closer=None, count=None, written=None):
        raise Conflict("1 calls are still running under this tab", hint="close it in a moment")

    monkeypatch.setattr(provider.app[NODE].paid.provider_tabs, "close_once", busy)
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)
    node = owner.app[NODE]
    await _served_at(owner, "hello")
    tabs = [a for a in node.ledger.pending() if a.job == job]
    [found] = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
    assert found["spent_this_hour"] == 0 and old.id in {a.id for a in tabs}, (found, tabs)
    assert sorted(a.cap for a in tabs) == [4 * budget - compiling, old.cap], tabs  # the cap's rest, not 16 budgets more


async def test_a_receipt_paid_for_a_placed_function_counts_in_its_hour_after_a_stop_right_after_the_payment(
        node_factory, monkeypatch):
    # The owner's node stops the moment a tab's receipt is paid, before anything else is written: started again,
    # the function's hour holds what that receipt paid (else its cap would let it spend that much again).
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    function = {"name": "hello", "module": module, "on_market": True, "spend_cap": 10**12}
    await _json(owner, "POST", "/v1/compute/functions", json=function)
    assert (await _get((await _served_at(owner, "hello"))["url"]))[0] == 200
    await eventually_async(lambda: _runs(provider, owner.app[IDENTITY].id), "the request's run recorded")
    node, paid = owner.app[NODE], []

    async def stopped_here(*args):
        paid.append(args[-1])  # (the receipt's amount) and nothing after the payment is done

    monkeypatch.setattr(node.functions, "paid_for", stopped_here)
    await _json(owner, "POST", "/v1/compute/functions", json={**function, "env": {"GREETING": "again"}})
    await node.placements.keep()  # served again with changes: placed on a next tab, the first one paid
    await eventually_async(lambda: paid, "the first tab paid")
    await close_node(owner)
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    [found] = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
    assert found["spent_this_hour"] == sum(paid) > 0, (found, paid)


async def test_a_function_served_on_the_market_while_the_placements_sleep_is_placed(node_factory):
    """With no function on the market nor placed, the placements' loop sleeps rather than reading the functions every
    interval; one served on the market then wakes it, and is placed and answers."""
    provider = await _provider(node_factory, "provider")
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)
    placing = owner.app[NODE].placements
    await eventually_async(lambda: placing.asleep, "the placements' loop asleep, nothing on the market")
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    url = (await _served_at(owner, "hello"))["url"]
    assert (await _get(url + "x"))[0] == 200
    assert not placing.asleep  # a function placed: checked every interval


async def test_a_function_no_provider_takes_logs_each_reason_once_and_its_list_says_the_latest(node_factory, caplog,
                                                                                          monkeypatch):
    caplog.set_level(logging.INFO, logger=placements.__name__)
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions",
                json={"name": "hello", "module": module, "on_market": True, "spend_cap": 1})
    kept = owner.app[NODE].placements

    async def rounds_say(words: str) -> dict:
        for _ in range(3):  # each round tries again, and fails for the same reason
            await kept.keep()
        [found] = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
        assert words in found.get("not_placed", ""), found
        return found

    def said(words: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if "hello" in r.getMessage() and words in r.getMessage()]

    await rounds_say("no provider")
    assert len(said("no provider")) == 1, said("")
    # A provider comes, and the cap keeps the function off it: the new reason is logged once, as info.
    await peer_with_provider(owner, await _provider(node_factory, "provider"))
    await rounds_say("spend cap")
    assert len(said("spend cap")) == 1 and len(said("no provider")) == 1, said("")
    assert all(r.levelno == logging.INFO for r in caplog.records if "hello" in r.getMessage())
    monkeypatch.setattr(placements, "SAID_AGAIN", 0.0)  # as once its time has passed: said again
    await rounds_say("spend cap")
    assert len(said("spend cap")) >= 2, said("")


async def _owner_placing(node_factory, provider):
    """An owner offering no compute whose function "hello" is placed on `provider` (its rounds at the default
    interval: a test takes its provider's reports with `Placements.keep`); (owner, the URL callers reach)."""
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    return owner, (await _served_at(owner, "hello"))["url"]


def _countersigning(provider, monkeypatch, inflate) -> None:
    """The provider countersigns what `inflate` makes of a tab's honest total (the owner never sees the requests)."""
    ledger = provider.app[NODE].ledger
    countersign = ledger.countersign
    monkeypatch.setattr(ledger, "countersign", lambda payee, auth, amount, usage, **kw:
                        countersign(payee, auth, inflate(auth, amount), usage, **kw))


async def _two_requests_reported(node_factory):
    """A provider serving the owner's function, two requests served and its report of them taken by the owner: the
    provider, the owner, the function's URL, both balances before, the two runs and the tab they ran under."""
    provider = await _provider(node_factory, "provider")
    owner, url = await _owner_placing(node_factory, provider)
    owner_id, node = owner.app[IDENTITY].id, owner.app[NODE]
    before = balances(owner, provider)
    for n in range(2):
        assert (await _get(url + f"x{n}"))[0] == 200
    runs = await eventually_async(lambda: len(r := _runs(provider, owner_id)) == 2 and r, "both runs recorded")
    await node.placements.keep()  # the provider's report of both taken
    (tab,) = [a for a in node.ledger.pending() if a.job == function_job(owner_id, "hello")]
    return provider, owner, url, before, runs, tab


@pytest.mark.parametrize("inflate", [lambda auth, total: auth.cap, lambda auth, total: total + 1],
                         ids=["the cap", "a micro-credit more than it reported"])
async def test_a_provider_countersigning_more_than_it_reported_for_a_placed_function_is_not_paid(
        node_factory, monkeypatch, inflate):
    # The owner's node never sees a placed function's requests: it is told what they cost by its provider's reports.
    # A receipt above them (each request the receipt counts past them at most its budget) is not paid at all.
    provider, owner, url, before, runs, tab = await _two_requests_reported(node_factory)
    owner_id, node = owner.app[IDENTITY].id, owner.app[NODE]
    _countersigning(provider, monkeypatch, inflate)
    struck: list[str] = []
    monkeypatch.setattr(node.quarantine, "strike", lambda peer, why, **kw: struck.append(peer) or False)
    await _json(owner, "DELETE", "/v1/compute/functions/hello")  # withdrawn, and its tab closed for the receipt
    await eventually_async(lambda: tab.id not in {a.id for a in node.ledger.pending()}, "the tab closed", 30)
    countersigned = inflate(tab, sum(r["charge"] for r in runs) + _compiled(runs))  # (the module pushed to it)
    assert balances(owner, provider) == (before[0], before[1] + countersigned)  # on the provider's chain alone
    assert node.paid.gateway_tabs.refused_receipts == 1 and node.paid.gateway_tabs.tallies.on_disk() == 0
    assert struck == [provider.app[IDENTITY].id]  # it counts the requests it reported, and claims more for them
    assert node.ledger.holding() == {}
    for each in (owner, provider):
        await verified(each)


@pytest.mark.parametrize("inflated", [False, True], ids=["honest", "the cap"])
async def test_a_placed_functions_tab_left_open_by_a_stop_of_its_owner_is_paid_no_more_than_was_reported(
        node_factory, monkeypatch, inflated):
    # The owner stops with its function's tab open, and its provider serves one request more meanwhile (past the
    # last report the owner took).  Started again, the owner's payment retry closes the tab: the honest receipt is
    # paid, that request at most its budget; one for the tab's whole cap is not paid at all.
    provider, owner, url, before, _, tab = await _two_requests_reported(node_factory)
    owner_id = owner.app[IDENTITY].id
    await close_node(owner)
    assert (await _get(url + "while-away"))[0] == 200
    runs = await eventually_async(lambda: len(r := _runs(provider, owner_id)) == 3 and r, "the third run recorded")
    charged = sum(r["charge"] for r in runs) + _compiled(runs)  # (the module pushed to it: its compile paid too)
    if inflated:
        _countersigning(provider, monkeypatch, lambda auth, total: auth.cap)
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    node = owner.app[NODE]
    await eventually_async(lambda: tab.id not in {a.id for a in node.ledger.pending()},
                           "the tab left open closed by the payment retry", 30)
    assert balances(owner, provider) == ((before[0], before[1] + tab.cap) if inflated else
                                         (before[0] - charged, before[1] + charged))
    assert node.paid.gateway_tabs.refused_receipts == (1 if inflated else 0)
    for each in (owner, provider):
        await verified(each)


async def test_placements_mounting_files_at_once_are_promised_no_more_disk_than_there_is_between_them(
        node_factory, monkeypatch):
    """Each placement's files fit the free disk, both together do not: the one that comes while the other's files
    are read is refused (507), not let fill the disk under the provider's own database."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id, node = owner.app[IDENTITY].id, owner.app[NODE]
    functions = provider.app[NODE].functions
    monkeypatch.setattr(functions.room, "margin", 1 << 20)
    stage, reading, go_on = functions._stage, asyncio.Event(), asyncio.Event()

    async def held(item, path, *counted):  # the first placement's file is being read while the second comes
        if not reading.is_set():
            reading.set()
            await go_on.wait()
        return await stage(item, path, *counted)

    monkeypatch.setattr(functions, "_stage", held)
    key = base64.b32encode(bytes(32)).decode().lower().rstrip("=")
    cap = f"xsc:chk:{key}:{key}:4:2:{5 << 20}"  # read only as far as its size: never stored

    async def place(name: str) -> tuple[int, dict]:
        authorization = await node.payments.authorize(provider.app[IDENTITY].id, 10**6, function_job(owner_id, name),
                                                      ttl=3600)
        return await _place(owner, provider, {"function": {"name": name, "module": module,
                                                           "inputs": [f"{cap}:/in/data"]},
                                              **_terms(provider, price, authorization)})

    shutil.rmtree(functions.work_dir, ignore_errors=True)
    with tmpfs(functions.work_dir, "8m"):
        first = asyncio.ensure_future(place("first"))
        try:
            await asyncio.wait_for(reading.wait(), 30)
            status, answer = await place("second")
        finally:
            go_on.set()
        assert (status, answer["code"]) == (507, "storage-full"), answer
        status, answer = await first
        assert status >= 400 and answer["code"] != "storage-full", answer  # its file is nowhere: not read


async def test_a_placed_functions_bodies_and_answers_are_written_only_while_the_providers_disk_has_room(
        node_factory, monkeypatch):
    """A stranger's placed function may take bodies and answers of up to its max_body and 1 GiB, as many at once as
    its concurrency: each is written to the provider's disk only while it keeps its margin free (507 else), so no
    placement fills the disk under the provider's own database."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id, node, functions = owner.app[IDENTITY].id, owner.app[NODE], provider.app[NODE].functions
    monkeypatch.setattr(functions.room, "margin", 1 << 20)
    authorization = await node.payments.authorize(provider.app[IDENTITY].id, 10 * _budget(provider, module, price),
                                                  function_job(owner_id, "raw"), ttl=3600)
    web_listen = provider.app[NODE].config.node.web_listen
    shutil.rmtree(functions.work_dir, ignore_errors=True)
    with tmpfs(functions.work_dir, "8m"):
        status, answer = await _place(owner, provider, {"function": {"name": "raw", "module": module,
                                                                     "entrypoint": "raw"},
                                                        **_terms(provider, price, authorization)})
        assert status == 201, answer
        # A body declared larger than the room: refused before a byte of it is read.
        head = await head_before_its_body(web_listen, f"/fn/{owner_id}/raw/", 10 << 20)
        assert head.startswith(b"HTTP/1.1 507 ") and b"application/problem+json" in head, head
        # A body that fits (5 MiB), answered as it is: its answer has room for a MiB or two, then none (a range
        # waits for the whole answer, so it is refused whole).
        body = b"Content-Type: application/octet-stream\n\n" + b"x" * (5 << 20)
        status, headers, problem = await _get(answer["url"], "POST", data=body, headers={"Range": "bytes=0-"})
        assert status == 507 and headers["Content-Type"].startswith("application/problem+json"), problem[:300]
        assert json.loads(problem)["code"] == "storage-full" and "answer" in json.loads(problem)["detail"], problem
        await eventually_async(lambda: shutil.disk_usage(functions.work_dir).free > 7 << 20, "its files removed")
        small = b"Content-Type: text/plain\n\nfits"
        assert (await _get(answer["url"], "POST", data=small))[::2] == (200, b"fits")


async def test_a_placed_functions_tab_is_live_and_an_idle_one_a_restart_drops_is_no_warning(node_factory, caplog):
    """The tab a function is placed on is in use, not a payment waiting for its node: `GET /v1/ledger/payments` says
    it is live.  The owner stopped and started again, the tab no request ran under goes to the payment retry and is
    dropped (its provider owes nothing): nothing is lost, so it is logged as info, not as a warning."""
    caplog.set_level(logging.INFO)
    owner, provider, module, _ = await _owner_and_provider(node_factory)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    await _served_at(owner, "hello")
    job = function_job(owner.app[IDENTITY].id, "hello")
    [tab] = [p for p in (await _json(owner, "GET", "/v1/ledger/payments"))["pending"] if p["job"] == job]
    assert tab["live"] is True, tab
    await close_node(owner)

    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)

    async def dropped():
        pending = (await _json(owner, "GET", "/v1/ledger/payments"))["pending"]
        return tab["authorization"] not in {p["authorization"] for p in pending}

    await eventually_async(dropped, "the idle tab left by the stop dropped by the payment retry", 30)
    said = [r for r in caplog.records if tab["authorization"] in r.getMessage() and "dropped" in r.getMessage()]
    assert said and all(r.levelno == logging.INFO for r in said), [(r.levelname, r.getMessage()) for r in said]
