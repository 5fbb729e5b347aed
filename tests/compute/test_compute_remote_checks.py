"""Remote invokes held to their providers' signed records (compute/spot_checks.py), on two real nodes: an honest
run checked, kept and shown on the gateway; a provider that answers other results than its record signs struck; a
record shown to the node that paid for its run alone; the checks after the answers bounded in number."""

from __future__ import annotations

import asyncio
import copy

import pytest

from tests.support.compute import deploy, invoke, peer_with_provider, values
from tests.support.waiting import eventually_async

from xsc.compute import spot_checks
from xsc.errors import ProvenanceNotFound
from xsc.identity import Identity, sign_request
from xsc.net.compute import PROVENANCE_PATH
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

PRICE = 1_000_000  # micro-credits per million fuel
MARKET_TERMS = {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "compute_bid": PRICE}
FUEL = 250_000
QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def _pair(node_factory, check_rate: float):
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS)
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False},
                                 compute={"check_rate": check_rate})
    await peer_with_provider(gateway, provider)
    return gateway, provider, await deploy(gateway, "add")


async def _add(gateway, module: str, a: int, b: int, **options) -> tuple[int, dict]:
    return await invoke(gateway, module, "add", a, b, fuel=FUEL, **options)


def _checks(node) -> dict[str, int]:
    return node.app[NODE].paid.checks.status()


async def _peer_get(node, sender: Identity, path: str) -> tuple[int, dict]:
    headers = sign_request(sender, "GET", path, b"", receiver=node.app[IDENTITY].id)
    response = await node.request("GET", path, headers={**headers, "Authorization": ""})
    return response.status, await response.json()


async def test_an_honest_remote_run_is_checked_kept_and_shown_on_the_gateway(node_factory) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    status, body = await _add(gateway, module, 1, 2, verify=True)
    provider_id = provider.app[NODE].peers.identity.id
    assert status == 200 and body["provider"] == provider_id and body["verified"] is True, body
    assert _checks(gateway) | {"checked": 1, "held": 1, "struck": 0} == _checks(gateway)
    shown = await gateway.get(f"/v1/compute/provenance/{body['provenance']}")
    signed = await shown.json()
    assert shown.status == 200 and signed["record"]["node"] == provider_id, signed
    assert signed["record"]["results"] == body["results"]
    # A run not checked: its record fetched from its provider when asked for.
    status, body = await _add(gateway, module, 2, 3)
    assert status == 200 and values(body) == [5] and "verified" not in body, body
    assert _checks(gateway)["checked"] == 1
    shown = await gateway.get(f"/v1/compute/provenance/{body['provenance']}")
    signed = await shown.json()
    assert shown.status == 200 and signed["record"]["node"] == provider_id, signed
    assert signed["record"]["results"] == body["results"]


async def test_a_remote_wasi_run_and_a_trap_are_checked(node_factory) -> None:
    gateway, _, _ = await _pair(node_factory, check_rate=0)
    hello, traps = await deploy(gateway, "wasi_hello", wasi=True), await deploy(gateway, "traps")
    status, body = await invoke(gateway, hello, "args", "a", "b", wasi=True, fuel=FUEL, verify=True)
    assert status == 200 and body["stdout"] == f"{hello}\na\nb\n" and body["verified"] is True, body
    status, problem = await invoke(gateway, traps, "unreachable", fuel=FUEL, verify=True)
    assert status == 422 and problem["kind"] == "unreachable" and problem["verified"] is True, problem
    assert _checks(gateway) | {"checked": 2, "held": 2, "struck": 0} == _checks(gateway)


async def test_a_provider_answering_other_results_than_its_record_signs_is_struck(node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    paid = provider.app[NODE].paid
    run_on_tab = paid._run_on_tab

    async def lying(*args, **kwargs):
        answer = await run_on_tab(*args, **kwargs)
        answer["run"]["results"] = [{"type": "i32", "value": 4}]  # its record signs 3
        return answer

    monkeypatch.setattr(paid, "_run_on_tab", lying)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(why) or False)
    provider_id = provider.app[NODE].peers.identity.id
    status, body = await _add(gateway, module, 1, 2)  # sampled: answered, checked after
    assert status == 200 and values(body) == [4], body
    await eventually_async(lambda: _checks(gateway)["struck"] == 1, "the provider struck")
    assert len(struck) == 1 and provider_id in struck[0] and "other results" in struck[0], struck
    status, problem = await _add(gateway, module, 1, 2, verify=True)  # asked for: checked before the answer
    assert status == 502 and problem["code"] == "forged-result" and "other results" in problem["detail"], problem
    assert len(struck) == 2
    health = await (await gateway.get("/v1/node/status")).json()
    assert health["remote_compute"]["checks"]["struck"] == 2


@pytest.mark.parametrize("lie", ["altered", "withheld"])
async def test_a_provider_whose_record_is_altered_or_withheld_is_struck(node_factory, monkeypatch, lie) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    checks = provider.app[NODE].paid.checks
    served = checks.served

    def lying(peer: str, provenance_id: str) -> dict:
        if lie == "withheld":
            raise ProvenanceNotFound(f"no provenance record {provenance_id} on this node")
        signed = copy.deepcopy(served(peer, provenance_id))
        signed["record"]["fuel_consumed"] += 1
        return signed

    monkeypatch.setattr(checks, "served", lying)
    status, problem = await _add(gateway, module, 1, 2, verify=True)
    assert status == 502 and problem["code"] == "forged-result", problem
    assert ("does not serve" if lie == "withheld" else "is not signed by it") in problem["detail"], problem
    assert _checks(gateway)["struck"] == 1


async def test_a_record_is_shown_to_the_node_that_paid_for_its_run_alone(node_factory) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200, body
    path = PROVENANCE_PATH.format(id=body["provenance"])
    status, signed = await _peer_get(provider, gateway.app[IDENTITY], path)
    assert status == 200 and signed["record"]["id"] == body["provenance"], signed
    status, problem = await _peer_get(provider, Identity.generate(), path)
    assert status == 403 and problem["code"] == "forbidden", problem
    status, problem = await _peer_get(provider, gateway.app[IDENTITY], PROVENANCE_PATH.format(id="ab" * 16))
    assert status == 404 and problem["code"] == "provenance-not-found", problem


async def test_checks_after_the_answers_are_bounded_in_number(node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    release = asyncio.Event()
    fetch = spot_checks.fetch_record

    async def held_back(*args):
        await release.wait()
        return await fetch(*args)

    monkeypatch.setattr(spot_checks, "fetch_record", held_back)
    calls = spot_checks.CHECKING + 4
    answers = await asyncio.gather(*(_add(gateway, module, n, 1) for n in range(calls)))
    assert [status for status, _ in answers] == [200] * calls, answers  # none waited for its check
    assert _checks(gateway)["checking"] == spot_checks.CHECKING and _checks(gateway)["skipped"] == 4
    release.set()
    await eventually_async(lambda: _checks(gateway)["checking"] == 0, "the checks done")
    assert _checks(gateway) | {"held": spot_checks.CHECKING, "struck": 0} == _checks(gateway)
