"""A web function on the market on a real 3-node devnet: the owner's node offers no compute; the function is served
from a provider's own web listener and the owner pays that provider by the tab's receipt; the provider killed
(kill -9), the function is served from the other provider within a minute, and `xsc compute functions` on the
owner shows the new URL; the owner killed (kill -9) and back, the function is placed again and every run paid.
And on two nodes: the provider killed (kill -9) and back, it serves the function again at the same URL on the same
tab, without the owner placing it again, and the owner pays every run of that tab."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.compute import WASM
from tests.support.nodes import kill_all
from tests.support.peers import FAST, api, http, known_ids, node_id, peer_health
from tests.support.waiting import eventually
from xsc.compute.provider_tabs import compile_price
from xsc.devnet import Devnet, free_ports

# Checks four times a second: a tab is renewed (and paid) after 3 s, a silent provider left after 1 s.
PLACING = {"XSC_NODE_PLACEMENT_INTERVAL": "0.25", "XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3"}
# The owner leaves a silent provider only after 4 checks: 40 s, longer than the provider's restart takes.
PATIENT = {"XSC_NODE_PLACEMENT_INTERVAL": "10", "XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3"}


def _listed(owner) -> dict:
    result = owner.xsc("compute", "functions", "--json")
    assert result.returncode == 0, result.stderr
    return {f["name"]: f for f in json.loads(result.stdout)["functions"]}.get("hello", {})


def _get(url: str) -> tuple[int, bytes]:
    base, _, path = url.partition("/fn/")
    return http(base, "GET", "/fn/" + path)


def _status(url: str) -> int | None:
    """The status a GET of `url` answers (None: nothing listens there now)."""
    try:
        return _get(url)[0]
    except OSError:
        return None


def _served_runs(provider, owner_id: str) -> list[dict]:
    records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
    return [r["record"] for r in records
            if r["record"].get("deal", {}).get("function") == "hello" and r["record"]["deal"]["gateway"] == owner_id]


def _compiled(runs: list[dict]) -> int:
    """What a provider that lacked the cgi module charged the owner for compiling it, pushed as the function was placed
    there, on the tab it was placed with: at the price its runs were made at."""
    return compile_price(len((WASM / "cgi.wasm").read_bytes()), runs[0]["fuel_price"])


def _balance(node, account: str) -> int:
    status, body = api(node, "GET", f"/v1/ledger/accounts/{account}")
    assert status == 200, body
    return body["balance"]


@pytest.mark.slow
def test_a_function_on_the_market_is_served_and_paid_by_a_provider_and_moves_when_it_is_killed(tmp_path: Path):
    webs = free_ports(3)
    envs = [{**PLACING, "XSC_MARKET_OFFER_COMPUTE": "false"}, *({**PLACING} for _ in range(2))]
    for env, port in zip(envs, webs):
        env["XSC_NODE_WEB_LISTEN"] = f"127.0.0.1:{port}"
    net = Devnet(tmp_path, 3, env=FAST, envs=envs, name="n{}")
    try:
        net.spawn().wait_listening(90)
        owner, providers = net.first, list(net)[1:]
        owner_id, ids = node_id(owner), [node_id(p) for p in providers]
        eventually(lambda: known_ids(owner) >= set(ids) and all((peer_health(owner, i) or {}).get("up") for i in ids),
                   "the owner to know both providers and see them up", timeout=90)
        eventually(lambda: api(owner, "GET", "/v1/market/status")[1]["participants"] == 3, "the market", timeout=90)
        assert api(owner, "GET", "/v1/market/offer")[1]["compute"]["offered"] is False
        book = api(owner, "GET", "/v1/market/book?kind=compute")[1]
        asks = {a["owner"] for row in book["books"] for a in row["asks"]}
        assert owner_id not in asks and asks >= set(ids), asks

        served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market")
        assert served.returncode == 0, served.stderr
        first = eventually(lambda: _listed(owner).get("url"), "the function placed on a provider", timeout=60)
        listed = _listed(owner)
        provider = providers[ids.index(listed["provider"])]
        assert first == f"http://127.0.0.1:{webs[1 + ids.index(listed['provider'])]}/fn/{owner_id}/hello/"
        text = owner.xsc("compute", "functions").stdout.decode()
        assert first in text
        # The tab it is placed on is in use, as `xsc ledger payments` lists it, not a payment waiting for a retry.
        status = owner.xsc("node", "status").stdout.decode()
        assert "payments: 1 open tab (" in " ".join(status.split()) and " pending (" not in status, status

        # A caller gets the function's answer from the provider's URL.
        status, answer = _get(first + "world?x=1")
        assert status == 200, answer
        lines = answer.decode().splitlines()
        assert "PATH_INFO=/world" in lines and "QUERY_STRING=x=1" in lines and "REQUEST_METHOD=GET" in lines
        for n in range(4):
            assert _get(first + f"more/{n}")[0] == 200

        # The provider is paid by the owner, to the micro-credit, once the tab is renewed and its receipt paid: the
        # runs, and compiling the module pushed to it.
        runs = eventually(lambda: len(r := _served_runs(provider, owner_id)) == 5 and r, "the five runs recorded")
        charged = sum(r["charge"] for r in runs) + _compiled(runs)
        assert charged > 0
        eventually(lambda: (_balance(provider, "node"), _balance(owner, "client")) == (charged, -charged),
                   "the provider paid by the tab's receipt (its receipt, then the owner's payment)", timeout=60)
        eventually(lambda: _listed(owner)["spend"] == charged, "the owner's count of what the function spent")

        # kill -9 of the provider: within a minute the function answers from the other one, at its new URL.
        provider.kill()
        killed = time.monotonic()
        other = providers[1 - providers.index(provider)]
        moved = eventually(lambda: (u := _listed(owner).get("url")) and u != first and u, "the function moved",
                           timeout=60)
        assert moved == f"http://127.0.0.1:{webs[1 + providers.index(other)]}/fn/{owner_id}/hello/"
        status, answer = _get(moved + "again")
        assert status == 200 and "PATH_INFO=/again" in answer.decode().splitlines()
        assert time.monotonic() - killed < 60
        assert moved in owner.xsc("compute", "functions").stdout.decode()

        # kill -9 of the owner: once it is back, the function is placed again and still answers, and the other
        # provider is paid every run it served, to the micro-credit (a tab left open by the kill is closed and paid
        # by the payment retry).
        owner.kill()
        owner.start()
        back = eventually(lambda: _listed(owner).get("url"), "the function placed again", timeout=60)
        status, answer = _get(back + "after")
        assert status == 200 and "PATH_INFO=/after" in answer.decode().splitlines()
        assert _listed(owner)["provider"] == ids[providers.index(other)]  # the killed provider is still down
        ran = eventually(lambda: len(r := _served_runs(other, owner_id)) == 2 and r, "both runs recorded")
        earned = sum(r["charge"] for r in ran) + _compiled(ran)  # (it lacked the module too)
        eventually(lambda: (_balance(other, "node"), _balance(owner, "client")) == (earned, -charged - earned),
                   "the other provider paid for both its runs", timeout=90)
        for node in (owner, other):
            status, report = api(node, "GET", "/v1/ledger/verify")
            assert status == 200 and report["ok"], report
    finally:
        kill_all(list(net))


@pytest.mark.slow
def test_a_placed_function_is_served_again_on_its_tab_after_its_provider_is_killed(tmp_path: Path):
    webs = free_ports(2)
    envs = [{**PATIENT, "XSC_MARKET_OFFER_COMPUTE": "false"}, {**PATIENT}]
    for env, port in zip(envs, webs):
        env["XSC_NODE_WEB_LISTEN"] = f"127.0.0.1:{port}"
    net = Devnet(tmp_path, 2, env=FAST, envs=envs, name="n{}")
    try:
        net.spawn().wait_listening(90)
        owner, provider = net.first, list(net)[1]
        owner_id, provider_id = node_id(owner), node_id(provider)
        eventually(lambda: provider_id in known_ids(owner) and (peer_health(owner, provider_id) or {}).get("up"),
                   "the owner to know the provider and see it up", timeout=90)
        eventually(lambda: api(owner, "GET", "/v1/market/status")[1]["participants"] == 2, "the market", timeout=90)
        served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market")
        assert served.returncode == 0, served.stderr
        url = eventually(lambda: _listed(owner).get("url"), "the function placed on the provider", timeout=60)
        assert url == f"http://127.0.0.1:{webs[1]}/fn/{owner_id}/hello/"
        for n in range(3):
            assert _get(url + f"before/{n}")[0] == 200
        before = eventually(lambda: len(r := _served_runs(provider, owner_id)) == 3 and r, "the three runs recorded")
        tab = before[0]["deal"]["authorization"]

        provider.kill()
        provider.start()
        eventually(lambda: _status(url + "after") == 200, "the function served again at the same URL", timeout=30)
        runs = eventually(lambda: len(r := _served_runs(provider, owner_id)) == 4 and r, "the run after the restart")
        assert {r["deal"]["authorization"] for r in runs} == {tab}  # on the same tab: not placed again
        assert _listed(owner)["url"] == url and _listed(owner)["provider"] == provider_id

        # Served again with changes: the owner renews its tab there, and pays the old one by its receipt: every run,
        # those before the kill and the one after it, to the micro-credit.
        served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market", "--env", "GREETING=hi")
        assert served.returncode == 0, served.stderr
        charged = sum(r["charge"] for r in runs) + _compiled(runs)  # (and the module's compile, on that tab too)
        eventually(lambda: (_balance(provider, "node"), _balance(owner, "client")) == (charged, -charged),
                   "the provider paid every run of its tab", timeout=60)
        status, answer = _get(url + "renewed")
        assert status == 200 and "GREETING=hi" in answer.decode().splitlines()
        for node in (owner, provider):
            status, report = api(node, "GET", "/v1/ledger/verify")
            assert status == 200 and report["ok"], report
    finally:
        kill_all(list(net))


@pytest.mark.slow
def test_a_devnet_places_a_function_only_where_a_web_listener_is_and_refuses_a_cap_that_never_places_it(
        tmp_path: Path):
    """Three node processes: the owner offers no compute, one provider has a web listener and one has none.  `serve
    --on-market` under a cap below one request's budget exits 2 in one line naming the least cap and the command;
    under that least cap it is served but not placed, the provider lacking its module and the cap no room for its
    compile (the owner names the cap that has); under that one, it is placed on the provider with the web listener
    only, and with it killed, never on the other one (the owner says why), which still runs the owner's invokes."""
    [web] = free_ports(1)
    envs = [{**PLACING, "XSC_MARKET_OFFER_COMPUTE": "false"}, {**PLACING, "XSC_NODE_WEB_LISTEN": f"127.0.0.1:{web}"},
            {**PLACING}]
    net = Devnet(tmp_path, 3, env=FAST, envs=envs, name="n{}")
    try:
        net.spawn().wait_listening(90)
        owner, listening, plain = net
        assert net.wait_peered(90) == [] and net.wait_offered(90) == []
        served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market", "--spend-cap", "1")
        lines = served.stderr.decode().splitlines()
        assert served.returncode == 2 and len(lines) == 1 and served.stdout == b"", served
        least = int(lines[0].rsplit("--spend-cap ", 1)[1].rstrip(")"))
        assert lines[0].startswith("xsc: error: a spend cap of 1 micro-credit an hour is below one request's budget")
        assert f"xsc compute serve hello " in lines[0] and least > 1, lines
        assert _listed(owner) == {}  # nothing served

        served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market", "--spend-cap",
                           str(least))
        assert served.returncode == 0, served.stderr
        # Served, but not placed: the provider lacks the module, and the cap has no room for compiling it there
        # beside a request; the owner's list names the cap that has.
        why = eventually(lambda: "lacks" in (f := _listed(owner)).get("not_placed", "") and f["not_placed"],
                         "the owner to say the cap has no room for the compile", timeout=60)
        placing = int(why.rsplit("--spend-cap ", 1)[1].rstrip(")"))
        assert placing > least, why
        served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market", "--spend-cap",
                           str(placing))
        assert served.returncode == 0, served.stderr
        url = eventually(lambda: _listed(owner).get("url"), "the function placed", timeout=60)
        assert url.startswith(f"http://127.0.0.1:{web}/") and _listed(owner)["provider"] == node_id(listening)
        listening.kill()
        why = eventually(lambda: "url" not in (f := _listed(owner)) and f.get("not_placed"), "the function unplaced",
                         timeout=60)
        assert "a provider with a web listener (node.web_listen)" in why and "refused" not in why, why
        hosted = plain.xsc("compute", "functions", "--hosted", "--json")
        assert hosted.returncode == 0 and json.loads(hosted.stdout)["functions"] == [], hosted
        invoked = owner.xsc("compute", "invoke", str(WASM / "arith.wasm"), "add_i64", "1", "2", "--json")
        assert invoked.returncode == 0 and json.loads(invoked.stdout)["provider"] == node_id(plain), invoked
    finally:
        kill_all(list(net))
