"""Remote invokes held to their providers' signed records (compute/spot_checks.py), on two real nodes: an honest
run checked, kept and shown on the gateway; a provider that answers other results than its record signs struck and
not paid; one that never shows a record not paid; a record shown to the node that paid for its run alone; the checks
after the answers bounded in number, and for one provider, those of verified calls that could not be made at once
included (past a bound in memory they wait on disk, and hold up no other provider's); a checked answer given once its
check is owed on disk, or given and counted when that write fails; a late answer (its caller gone) checked as any; a
check under way at a stop or a kill -9 of the gateway made at its next start (within the same bounds; one of a
provider gone for good not paid; its record asked for so many times in all, however many restarts), and the latest
remote runs known after it."""

from __future__ import annotations

import asyncio
import copy
import threading
import time

import pytest
import pytest_asyncio

from tests.support.compute import answering, deploy, invoke, module_id, peer_with_provider, values, wasm
from tests.support.nodes import close_node
from tests.support.peers import api, http
from tests.support.waiting import eventually, eventually_async

from xsc import keys
from xsc.compute import owed_checks, provenance, remote_tabs, spot_checks
from xsc.compute.provider_tabs import compile_price
from xsc.compute.service import InvokeCall
from xsc.errors import PeerUnreachable, ProvenanceNotFound, QuotaExceeded
from xsc.identity import Identity, sign_request
from xsc.ledger.core.pricing import price_compute
from xsc.net.compute import PROVENANCE_PATH
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE
from xsc.peers.admission import Quarantine

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


# The tests that change neither node and count the checks their own calls made share one pair, checking no call
# unasked (tests/compute/conftest.py).
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unchecked_pair(file_nodes):
    return await _pair(file_nodes, check_rate=0)


def _checks_since(gateway, before: dict[str, int]) -> dict[str, int]:
    """How much each of the gateway's check counts grew since it counted `before`."""
    return {name: count - before.get(name, 0) for name, count in _checks(gateway).items()}


async def _add(gateway, module: str, a: int, b: int, **options) -> tuple[int, dict]:
    return await invoke(gateway, module, "add", a, b, fuel=FUEL, **options)


def _checks(node) -> dict[str, int]:
    return node.app[NODE].paid.checks.status()


def _delivered_by(gateway, provider) -> int:
    """What the gateway counts it paid the provider, toward its recognition."""
    return gateway.app[NODE].market.weights.counters()["delivered_by"].get(provider.app[NODE].peers.identity.id, 0)


def _balances(gateway, provider) -> tuple[int, int]:
    return (gateway.app[NODE].ledger.store.state(gateway.app[CLIENT_IDENTITY].public_key).balance,
            provider.app[NODE].ledger.store.state(provider.app[IDENTITY].public_key).balance)


async def _settled(gateway) -> None:
    """Every tab of the gateway closed and its receipt paid or refused."""
    await eventually_async(lambda: _checks(gateway)["checking"] == 0, "the checks done")
    tabs = gateway.app[NODE].paid.gateway_tabs
    await tabs.close()
    await gateway.app[NODE].paid.payments.retry_all()
    tabs.start()
    await eventually_async(lambda: gateway.app[NODE].ledger.pending() == [], "every tab paid or refused")


def _resigned(provider, signed: dict, **changes) -> dict:
    """`signed`'s record with `changes`, signed by the provider on its own (a hostile one signs what it likes)."""
    return provenance.decode(provenance.sign(provider.app[IDENTITY], {**signed["record"], **changes}))


def _naming_runs(provider, monkeypatch, named: str) -> None:
    """The provider answers each run under the id `named` and shows its record under it, signed again."""
    checks = provider.app[NODE].paid.checks
    served = checks.served
    last: list[str] = []

    def renamed(answer: dict) -> dict:
        last.append(answer["run"]["provenance"])
        answer["run"]["provenance"] = named
        return answer

    answering(provider, monkeypatch, renamed)
    monkeypatch.setattr(checks, "served", lambda peer, pid: _resigned(provider, served(peer, last[-1]), id=named))


def _records_held_back(monkeypatch) -> asyncio.Event:
    """The gateway's fetches of records wait until the event answered is set."""
    release = asyncio.Event()
    fetch = spot_checks.fetch_record

    async def held_back(*args):
        await release.wait()
        return await fetch(*args)

    monkeypatch.setattr(spot_checks, "fetch_record", held_back)
    return release


async def _peer_get(node, sender: Identity, path: str) -> tuple[int, dict]:
    headers = sign_request(sender, "GET", path, b"", receiver=node.app[IDENTITY].id)
    response = await node.request("GET", path, headers={**headers, "Authorization": ""})
    return response.status, await response.json()


async def test_an_honest_remote_run_is_checked_kept_and_shown_on_the_gateway(unchecked_pair) -> None:
    gateway, provider, module = unchecked_pair
    before = _checks(gateway)
    status, body = await _add(gateway, module, 1, 2, verify=True)
    provider_id = provider.app[NODE].peers.identity.id
    assert status == 200 and body["provider"] == provider_id and body["verified"] is True, body
    grown = _checks_since(gateway, before)
    assert grown | {"checked": 1, "held": 1, "struck": 0} == grown
    shown = await gateway.get(f"/v1/compute/provenance/{body['provenance']}")
    signed = await shown.json()
    assert shown.status == 200 and signed["record"]["node"] == provider_id, signed
    assert signed["record"]["results"] == body["results"]
    # A run not checked: its record fetched from its provider when asked for.
    status, body = await _add(gateway, module, 2, 3)
    assert status == 200 and values(body) == [5] and "verified" not in body, body
    assert _checks_since(gateway, before)["checked"] == 1
    shown = await gateway.get(f"/v1/compute/provenance/{body['provenance']}")
    signed = await shown.json()
    assert shown.status == 200 and signed["record"]["node"] == provider_id, signed
    assert signed["record"]["results"] == body["results"]


async def test_a_remote_wasi_run_and_a_trap_are_checked(unchecked_pair) -> None:
    gateway, _, _ = unchecked_pair
    before = _checks(gateway)
    hello, traps = await deploy(gateway, "wasi_hello", wasi=True), await deploy(gateway, "traps")
    status, body = await invoke(gateway, hello, "args", "a", "b", wasi=True, fuel=FUEL, verify=True)
    assert status == 200 and body["stdout"] == f"{hello}\na\nb\n" and body["verified"] is True, body
    status, problem = await invoke(gateway, traps, "unreachable", fuel=FUEL, verify=True)
    assert status == 422 and problem["kind"] == "unreachable" and problem["verified"] is True, problem
    grown = _checks_since(gateway, before)
    assert grown | {"checked": 2, "held": 2, "struck": 0} == grown


async def test_a_provider_answering_other_results_than_its_record_signs_is_struck_and_not_paid(
        node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    before = _balances(gateway, provider)

    def other_results(answer: dict) -> dict:
        answer["run"]["results"] = [{"type": "i32", "value": 4}]  # its record signs 3
        return answer

    answering(provider, monkeypatch, other_results)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(why) or False)
    provider_id = provider.app[NODE].peers.identity.id
    status, body = await _add(gateway, module, 1, 2)  # sampled: answered, checked after
    assert status == 200 and values(body) == [4], body
    await eventually_async(lambda: _checks(gateway)["struck"] == 1, "the provider struck")
    assert provider_id in struck[0] and "other results" in struck[0], struck
    status, problem = await _add(gateway, module, 1, 2, verify=True)  # asked for: checked before the answer
    assert status == 502 and problem["code"] == "forged-result" and "other results" in problem["detail"], problem
    health = await (await gateway.get("/v1/node/status")).json()
    assert health["remote_compute"]["checks"]["struck"] == 2
    # Nothing of a tab one of whose answers its records contradict is paid: neither receipt is (nor struck again:
    # each counts what ran), and nothing counts toward the provider's recognition.
    await _settled(gateway)
    assert _balances(gateway, provider)[0] == before[0]  # (each receipt stays on the provider's chain, unpaid)
    assert _delivered_by(gateway, provider) == 0
    assert gateway.app[NODE].paid.gateway_tabs.refused_receipts == 2 and len(struck) == 2, struck
    assert gateway.app[NODE].ledger.holding() == {}
    for node in (gateway, provider):
        report = await (await node.get("/v1/ledger/verify")).json()
        assert report["ok"], report


async def test_a_tab_is_not_paid_before_the_check_of_a_call_on_it_ends(node_factory, monkeypatch) -> None:
    # The check of a sampled answer is held back past the tab's interval and its close: the tab waits for it, and
    # the call it catches is not paid.
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    before = _balances(gateway, provider)
    release = _records_held_back(monkeypatch)

    def more_fuel(answer: dict) -> dict:
        answer["run"]["fuel_consumed"] += 1
        return answer

    answering(provider, monkeypatch, more_fuel)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200, body
    tabs = gateway.app[NODE].paid.gateway_tabs
    await tabs.close()  # the tab's close is due: it waits for the check
    await gateway.app[NODE].paid.payments.retry_all()
    tabs.start()
    assert len(gateway.app[NODE].ledger.pending()) == 1 and _balances(gateway, provider) == before
    release.set()
    await _settled(gateway)
    assert _checks(gateway)["struck"] == 1 and _balances(gateway, provider)[0] == before[0]
    assert tabs.refused_receipts == 1


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


async def test_a_provider_whose_record_claims_more_fuel_than_the_call_let_it_burn_is_struck(node_factory,
                                                                                           monkeypatch) -> None:
    """Its charge within the call's budget (less memory claimed): only the limit it signs gives it away."""
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    claimed: dict[str, int] = {}

    def more_fuel(answer: dict) -> dict:
        run, cost = answer["run"], answer["run"]["cost"]
        claimed["charge"] = price_compute(FUEL + 1, PRICE, 1, cost["memory_us"], cost["memory_price"])
        run["fuel_consumed"], run["charge"] = FUEL + 1, claimed["charge"]
        return answer

    answering(provider, monkeypatch, more_fuel)
    checks = provider.app[NODE].paid.checks
    served = checks.served
    monkeypatch.setattr(checks, "served", lambda peer, pid: _resigned(
        provider, served(peer, pid), fuel_limit=2 * FUEL, fuel_consumed=FUEL + 1, memory_pages=1,
        charge=claimed["charge"]))
    status, problem = await _add(gateway, module, 1, 2, verify=True)
    assert status == 502 and problem["code"] == "forged-result" and "fuel_limit" in problem["detail"], problem
    assert _checks(gateway)["struck"] == 1


async def test_a_record_is_shown_to_the_node_that_paid_for_its_run_alone(unchecked_pair) -> None:
    gateway, provider, module = unchecked_pair
    status, body = await _add(gateway, module, 3, 4)
    assert status == 200, body
    path = PROVENANCE_PATH.format(id=body["provenance"])
    status, signed = await _peer_get(provider, gateway.app[IDENTITY], path)
    assert status == 200 and signed["record"]["id"] == body["provenance"], signed
    # Any other node is answered as for a run that never was: it learns not which ids there are.
    stranger = Identity.generate()
    status, problem = await _peer_get(provider, stranger, path)
    missing = "ab" * 16
    status_missing, problem_missing = await _peer_get(provider, stranger, PROVENANCE_PATH.format(id=missing))
    assert status == status_missing == 404 and problem["code"] == "provenance-not-found", problem
    assert {**problem, "detail": problem["detail"].replace(body["provenance"], missing)} == problem_missing
    status, problem = await _peer_get(provider, gateway.app[IDENTITY], PROVENANCE_PATH.format(id=missing))
    assert status == 404 and problem["code"] == "provenance-not-found", problem


async def test_a_provider_asked_for_a_record_answering_another_runs_is_struck_not_kept(node_factory,
                                                                                   monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    answers = [await _add(gateway, module, n, 1) for n in (1, 2)]
    assert [status for status, _ in answers] == [200, 200], answers
    first, second = (body["provenance"] for _, body in answers)
    checks = provider.app[NODE].paid.checks
    served = checks.served
    monkeypatch.setattr(checks, "served", lambda peer, pid: served(peer, first))
    shown = await gateway.get(f"/v1/compute/provenance/{second}")
    problem = await shown.json()
    assert shown.status == 502 and problem["code"] == "forged-result" and "another run" in problem["detail"], problem
    assert gateway.app[NODE].compute.store.kept_run(bytes.fromhex(second)) is None


async def test_a_provider_answering_two_calls_with_one_run_is_struck(node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    first: list[dict] = []

    def the_first_again(answer: dict) -> dict:  # the same call again: answered with the first run, running nothing
        first.append(answer)
        return copy.deepcopy(first[0])

    answering(provider, monkeypatch, the_first_again)
    monkeypatch.setattr(gateway.app[NODE].paid.gateway_tabs, "interval", 3600)  # one tab, however slow the machine
    status, body = await _add(gateway, module, 1, 2, verify=True)
    assert status == 200 and body["verified"] is True, body
    status, problem = await _add(gateway, module, 1, 2, verify=True)  # the same tab: its record's deal is this one's
    assert status == 502 and problem["code"] == "forged-result" and "another call with" in problem["detail"], problem


async def test_a_run_named_again_once_its_first_answer_left_the_latest_runs_is_not_held_against_it(node_factory,
                                                                                                   monkeypatch) -> None:
    # Two answers naming one run are seen among the RECENT latest remote runs only: one that left them is forgotten.
    monkeypatch.setattr(spot_checks, "RECENT", 2)
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    monkeypatch.setattr(gateway.app[NODE].paid.gateway_tabs, "interval", 3600)  # one tab, however slow the machine
    answers: list[dict] = []

    def the_first_again_as_the_fourth(answer: dict) -> dict:
        answers.append(answer)
        return copy.deepcopy(answers[0]) if len(answers) == 4 else answer

    answering(provider, monkeypatch, the_first_again_as_the_fourth)
    for _ in range(3):
        status, body = await _add(gateway, module, 1, 2)
        assert status == 200, body
    status, body = await _add(gateway, module, 1, 2, verify=True)
    assert status == 200 and body["verified"] is True and body["provenance"] == answers[0]["run"]["provenance"], body


async def test_a_provider_naming_its_run_otherwise_than_in_hex_is_struck(node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    _naming_runs(provider, monkeypatch, "z" * 32)
    status, problem = await _add(gateway, module, 1, 2, verify=True)
    assert status == 502 and problem["code"] == "forged-result" and "named no run" in problem["detail"], problem


async def test_a_record_dated_far_ahead_is_not_kept_past_the_sweep(node_factory, monkeypatch) -> None:
    # The sweep of kept records goes by the date in their ids, which the provider chose: one dated in a century is
    # not kept (its provider still shows it).
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    ahead = ((time.time_ns() + 100 * 365 * 86400 * 10**9).to_bytes(8, "big") + bytes(8)).hex()
    _naming_runs(provider, monkeypatch, ahead)
    status, body = await _add(gateway, module, 1, 2, verify=True)
    assert status == 200 and body["verified"] is True and body["provenance"] == ahead, body
    assert gateway.app[NODE].compute.store.kept_run(bytes.fromhex(ahead)) is None
    shown = await gateway.get(f"/v1/compute/provenance/{ahead}")
    assert shown.status == 200 and (await shown.json())["record"]["id"] == ahead


@pytest.mark.parametrize("verify", [True, False])
async def test_a_call_whose_record_is_never_shown_is_not_paid_nor_struck(node_factory, monkeypatch, verify) -> None:
    # A provider that never answers a record's request (busy, failing, the connection closed or stalled alike) is
    # asked again, backing off, then not paid for the tab of the call: else a forger that never shows its records
    # escapes every check.
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, provider, module = await _pair(node_factory, check_rate=0 if verify else 1)
    before = _balances(gateway, provider)

    def busy(peer: str, provenance_id: str) -> dict:
        raise QuotaExceeded("over the sender's work quota")

    monkeypatch.setattr(provider.app[NODE].paid.checks, "served", busy)
    status, body = await _add(gateway, module, 1, 2, verify=verify)
    assert (status, body["code"]) == (502, "peer-unreachable") if verify else status == 200, body
    await _settled(gateway)
    assert _balances(gateway, provider)[0] == before[0]  # (its receipt stays on the provider's chain, unpaid)
    assert _checks(gateway) | {"unshown": 1, "unreached": spot_checks.TRIES, "struck": 0} == _checks(gateway)
    assert gateway.app[NODE].paid.gateway_tabs.refused_receipts == 1
    assert _delivered_by(gateway, provider) == 0 and gateway.app[NODE].ledger.holding() == {}


async def test_a_tab_a_check_left_unpaid_is_not_paid_after_a_restart(node_factory, monkeypatch) -> None:
    # The tab is not closed before the gateway stops (its provider unreachable then): the start's payment retry finds
    # on disk that it owes nothing.
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    before = _balances(gateway, provider)

    def busy(peer: str, provenance_id: str) -> dict:
        raise QuotaExceeded("over the sender's work quota")

    async def unreachable(*args, **kwargs):
        raise PeerUnreachable("peer is unreachable: connection refused")

    monkeypatch.setattr(provider.app[NODE].paid.checks, "served", busy)
    monkeypatch.setattr(remote_tabs, "close_tab", unreachable)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200, body
    await eventually_async(lambda: _checks(gateway)["unshown"] == 1, "the record given up on")
    await close_node(gateway)
    monkeypatch.undo()
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False},
                                 compute={"check_rate": 1})
    await gateway.app[NODE].paid.payments.retry_all()
    await eventually_async(lambda: gateway.app[NODE].ledger.pending() == [], "the tab refused")
    assert _balances(gateway, provider)[0] == before[0] and gateway.app[NODE].paid.gateway_tabs.refused_receipts == 1


async def test_a_record_shown_when_asked_again_pays_its_call_once(node_factory, monkeypatch) -> None:
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    before = _balances(gateway, provider)
    checks = provider.app[NODE].paid.checks
    served, refused = checks.served, []

    def busy_at_first(peer: str, provenance_id: str) -> dict:
        if len(refused) < spot_checks.TRIES - 1:
            refused.append(provenance_id)
            raise QuotaExceeded("over the sender's work quota")
        return served(peer, provenance_id)

    monkeypatch.setattr(checks, "served", busy_at_first)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200, body
    await _settled(gateway)
    paid = before[0] - _balances(gateway, provider)[0]
    compiled = compile_price(len(wasm("add")), body["deal"]["price"])  # the provider compiled the module it was pushed
    assert paid == body["charge"] + compiled and body["charge"] > 0 and _delivered_by(gateway, provider) == paid
    assert _checks(gateway) | {"held": 1, "unshown": 0, "unreached": spot_checks.TRIES - 1} == _checks(gateway)


@pytest.mark.parametrize("bound", ["checking", "per_provider"])
async def test_checks_after_the_answers_are_bounded_in_number(node_factory, monkeypatch, bound) -> None:
    # A provider that stalls its records holds PER_PROVIDER of the CHECKING checks at most: other providers' samples
    # are still checked.  (One provider here: CHECKING made smaller shows the bound of all.)
    if bound == "checking":
        monkeypatch.setattr(spot_checks, "CHECKING", 1)
    most = min(spot_checks.CHECKING, spot_checks.PER_PROVIDER)
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    release = _records_held_back(monkeypatch)
    calls = most + 4
    answers = await asyncio.gather(*(_add(gateway, module, n, 1) for n in range(calls)))
    assert [status for status, _ in answers] == [200] * calls, answers  # none waited for its check
    passed = {"skipped": 4, "saturated": 0} if bound == "checking" else {"skipped": 0, "saturated": 4}
    assert _checks(gateway) | {"checking": most, **passed} == _checks(gateway)
    release.set()
    await eventually_async(lambda: _checks(gateway)["checking"] == 0, "the checks done")
    assert _checks(gateway) | {"held": most, "struck": 0} == _checks(gateway)


def _status_as_each_check_settles(monkeypatch, gateway) -> list[dict[str, int]]:
    """The gateway's checks as its status shows them the turn of the loop after each check settles (its tab told),
    before anything else that follows its end: a check that has ended is under way no more, whoever reads it then."""
    tabs, seen = gateway.app[NODE].paid.gateway_tabs, []
    checked = tabs.checked

    def told(*args, **kwargs) -> None:
        checked(*args, **kwargs)
        asyncio.get_running_loop().call_soon(lambda: seen.append(_checks(gateway)))

    monkeypatch.setattr(tabs, "checked", told)
    return seen


def _unreachable_at_first_ask(monkeypatch, stalled: str | None = None) -> asyncio.Event:
    """The gateway's first ask for each record finds its provider unreachable; its later asks (of the provider
    `stalled` alone, if named) wait until the event answered is set, then are made."""
    release, asked = asyncio.Event(), set()
    fetch = spot_checks.fetch_record

    async def unreachable_at_first(client, url, provider, pid):
        if pid not in asked:
            asked.add(pid)
            raise PeerUnreachable("peer is unreachable: connection refused")
        if stalled in (None, provider):
            await release.wait()
        return await fetch(client, url, provider, pid)

    monkeypatch.setattr(spot_checks, "fetch_record", unreachable_at_first)
    return release


async def test_checks_of_verified_calls_made_later_are_bounded_in_number(node_factory, monkeypatch) -> None:
    # Each verified call whose record could not be had at once leaves a check to make later: past the bounds, those
    # wait their turn, however many calls a user makes.
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, _, module = await _pair(node_factory, check_rate=0)
    release = _unreachable_at_first_ask(monkeypatch)
    calls = spot_checks.CHECKING + 2
    for n in range(calls):
        status, problem = await _add(gateway, module, n, 1, verify=True)
        assert status == 502 and problem["code"] == "peer-unreachable", problem
    checks = (await (await gateway.get("/v1/node/status")).json())["remote_compute"]["checks"]
    assert checks | {"checking": spot_checks.PER_PROVIDER, "owed": calls - spot_checks.PER_PROVIDER} == checks
    release.set()
    await eventually_async(lambda: _checks(gateway)["held"] == calls, "every check made")
    assert _checks(gateway) | {"checking": 0, "owed": 0, "unreached": calls, "unshown": 0} == _checks(gateway)


async def test_checks_waiting_past_the_bound_wait_on_disk_and_hold_up_no_other_providers(node_factory,
                                                                                      monkeypatch) -> None:
    # A provider that never shows its records: its checks past the bound wait on disk alone, read back as room comes,
    # and another provider's check is made meanwhile, in the place of the stalling one's latest.
    monkeypatch.setattr(owed_checks, "WAITING", 2)
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, stalling, module = await _pair(node_factory, check_rate=0)
    other = await node_factory("other", **QUIET, market=MARKET_TERMS)
    await peer_with_provider(gateway, other)
    stalling_id, other_id = (node.app[NODE].peers.identity.id for node in (stalling, other))
    release = _unreachable_at_first_ask(monkeypatch, stalled=stalling_id)
    paid = gateway.app[NODE].paid

    async def verified(provider: str, n: int) -> None:
        with pytest.raises(PeerUnreachable):  # (its record asked for again later)
            await paid.invoke_remote(provider, PRICE, InvokeCall(module, "add", [n, 1], FUEL), {}, verify=True)

    calls = spot_checks.PER_PROVIDER + owed_checks.WAITING + 3
    for n in range(calls):
        await verified(stalling_id, n)
    checks = (await (await gateway.get("/v1/node/status")).json())["remote_compute"]["checks"]
    on_disk = calls - spot_checks.PER_PROVIDER - owed_checks.WAITING
    assert checks | {"checking": spot_checks.PER_PROVIDER, "owed": calls - spot_checks.PER_PROVIDER,
                     "owed_on_disk": on_disk} == checks
    settled = _status_as_each_check_settles(monkeypatch, gateway)
    await verified(other_id, 0)
    held = await eventually_async(lambda: next((s for s in settled if s["held"] == 1), None),
                                  "the other provider's check made")
    assert held | {"checking": spot_checks.PER_PROVIDER, "owed": calls - spot_checks.PER_PROVIDER,
                   "owed_on_disk": on_disk} == held
    release.set()
    await eventually_async(lambda: _checks(gateway)["held"] == calls + 1, "every check made")
    assert _checks(gateway) | {"checking": 0, "owed": 0, "owed_on_disk": 0, "unshown": 0} == _checks(gateway)
    # (the last check's row goes in the tallies' next write, which may come a moment after its count)
    await eventually_async(lambda: paid.compute.store.owed_checks() == [], "every owed check's row gone")


async def test_a_caught_answer_that_charged_nothing_leaves_its_whole_tab_unpaid(node_factory, monkeypatch) -> None:
    # A provider charges nothing for the answer it forges (run at a price of 0, memory free: its record signs another
    # price than the deal's), so the tally less that answer is what its receipt says: the tab is not paid all the same.
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS, compute={"memory_price": 0})
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False},
                                 compute={"check_rate": 1})
    await peer_with_provider(gateway, provider)
    module = await deploy(gateway, "add")
    before = _balances(gateway, provider)
    paid = provider.app[NODE].paid
    run_on_tab = paid._run_on_tab

    async def free_when_forged(gateway_id, call, price, *args, **kwargs):
        return await run_on_tab(gateway_id, call, 0 if str(call.args[0]) == "2" else price, *args, **kwargs)

    monkeypatch.setattr(paid, "_run_on_tab", free_when_forged)
    answers = await asyncio.gather(_add(gateway, module, 1, 1), _add(gateway, module, 2, 1))  # on one tab
    assert [status for status, _ in answers] == [200, 200] and answers[1][1]["charge"] == 0 < answers[0][1]["charge"]
    await _settled(gateway)
    assert _checks(gateway) | {"held": 1, "struck": 1} == _checks(gateway)
    assert _balances(gateway, provider)[0] == before[0] and gateway.app[NODE].paid.gateway_tabs.refused_receipts == 1
    assert _delivered_by(gateway, provider) == 0


async def _restarted(gateway, node_factory, check_rate: float):
    """The gateway stopped and started again on its data dir."""
    await close_node(gateway)
    return await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False},
                              compute={"check_rate": check_rate})


def _other_results(answer: dict) -> dict:
    answer["run"]["results"] = [{"type": "i32", "value": 4}]  # its record signs 3
    return answer


def _records_kept_back(provider, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """The provider answers its records' requests busy (429) until the second event is set; the first is set once
    it has been asked for one."""
    asked, shown = threading.Event(), threading.Event()
    checks = provider.app[NODE].paid.checks
    served = checks.served

    def kept_back(peer: str, provenance_id: str) -> dict:
        if not shown.is_set():
            asked.set()
            raise QuotaExceeded("over the sender's work quota")
        return served(peer, provenance_id)

    monkeypatch.setattr(checks, "served", kept_back)
    return asked, shown


async def test_a_check_under_way_at_a_stop_is_made_at_the_next_start(node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    before = _balances(gateway, provider)
    answering(provider, monkeypatch, _other_results)
    asked, shown = _records_kept_back(provider, monkeypatch)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200 and values(body) == [4], body
    await eventually_async(asked.is_set, "the record asked for")
    gateway = await _restarted(gateway, node_factory, check_rate=1)
    shown.set()
    await eventually_async(lambda: gateway.app[NODE].ledger.pending() == [], "the tab refused")
    assert _balances(gateway, provider)[0] == before[0] and gateway.app[NODE].paid.gateway_tabs.refused_receipts == 1
    assert _checks(gateway) | {"struck": 1, "checking": 0, "owed": 0} == _checks(gateway)


async def test_checks_a_stop_left_owed_are_taken_up_within_the_bounds(node_factory, monkeypatch) -> None:
    # Those past the bound of the checks waiting in memory wait on disk alone, and are read back as room comes.
    monkeypatch.setattr(owed_checks, "WAITING", 1)
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    _, shown = _records_kept_back(provider, monkeypatch)
    calls = spot_checks.PER_PROVIDER + 2
    for n in range(calls):  # each one's record asked for again in the background: more than the bound
        status, problem = await _add(gateway, module, n, 1, verify=True)
        assert status == 502 and problem["code"] == "peer-unreachable", problem
    release = _records_held_back(monkeypatch)
    gateway = await _restarted(gateway, node_factory, check_rate=0)
    assert _checks(gateway) | {"checking": spot_checks.PER_PROVIDER, "owed": 2, "owed_on_disk": 1} == _checks(gateway)
    shown.set()
    release.set()
    await eventually_async(lambda: _checks(gateway) | {"held": calls, "checking": 0, "owed": 0} == _checks(gateway),
                           "every check made and its slot given back")
    assert _checks(gateway) | {"struck": 0, "unshown": 0} == _checks(gateway)


async def test_a_check_owed_of_a_provider_gone_for_good_leaves_its_tab_unpaid(node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    _records_kept_back(provider, monkeypatch)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200, body
    await eventually_async(lambda: _checks(gateway)["unreached"] == 1, "the record asked for, unanswered")
    await close_node(provider)
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway = await _restarted(gateway, node_factory, check_rate=1)
    # Asked for as often as any record, the ask before the stop counted (its provider is unreachable): never shown,
    # its tab owes nothing.
    await eventually_async(lambda: _checks(gateway)["unshown"] == 1, "the record given up on")
    assert _checks(gateway) | {"unreached": spot_checks.TRIES - 1, "checking": 0, "owed": 0} == _checks(gateway)


async def test_a_sampled_answer_reaches_its_user_once_its_owed_check_is_on_disk(node_factory, monkeypatch) -> None:
    # A kill -9 of the gateway just after the answer leaves the check owed: the user was answered by a call checked.
    gateway, _, module = await _pair(node_factory, check_rate=1)
    release = _records_held_back(monkeypatch)
    paid = gateway.app[NODE].paid
    invoke_remote, on_disk = paid.invoke_remote, []

    async def answered(*args, **kwargs):
        run = await invoke_remote(*args, **kwargs)
        on_disk.append([check["facts"]["provenance"] for _, _, check in paid.compute.store.owed_checks()])
        return run

    monkeypatch.setattr(paid, "invoke_remote", answered)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200 and on_disk == [[body["provenance"]]], (body, on_disk)
    release.set()
    await eventually_async(lambda: paid.compute.store.owed_checks() == [], "the check done")


class _FailingOwedRow:
    """The gateway's database, but the first write of a check owed fails (a full disk); every one while `full`."""

    def __init__(self, db) -> None:
        self.db, self.failed, self.full = db, False, False

    def write_batch(self, *args, **kwargs):
        return _Batch(self, self.db.write_batch(*args, **kwargs))

    def __getattr__(self, name: str):
        return getattr(self.db, name)


class _Batch:
    def __init__(self, of: _FailingOwedRow, batch) -> None:
        self.of, self.batch, self.puts = of, batch, []

    def put(self, key: bytes, value: bytes) -> None:
        self.puts.append(key)
        self.batch.put(key, value)

    def delete(self, key: bytes) -> None:
        self.batch.delete(key)

    def __enter__(self):
        self.batch.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None and (self.of.full or not self.of.failed) and any(
                k.startswith(keys.OWED_CHECKS) for k in self.puts):
            self.of.failed = True
            self.batch.clear()
            raise OSError(28, "No space left on device")
        self.batch.__exit__(*exc)


async def test_an_answer_whose_owed_check_could_not_be_written_is_given_and_counted(node_factory,
                                                                                  monkeypatch) -> None:
    # The answer is its caller's (its tab counts it): given, and the write that failed counted; the check goes on, its
    # row written with the next write, and it is made.
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    tabs = gateway.app[NODE].paid.gateway_tabs
    monkeypatch.setattr(tabs.tallies, "db", _FailingOwedRow(tabs.tallies.db))
    asked, shown = _records_kept_back(provider, monkeypatch)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200 and tabs.tallies.db.failed, body
    checks = (await (await gateway.get("/v1/node/status")).json())["remote_compute"]["checks"]
    assert checks["unwritten"] == 1, checks
    store = gateway.app[NODE].paid.compute.store
    await eventually_async(lambda: [c["tried"] for _, _, c in store.owed_checks()] == [1], "the check's row written")
    shown.set()
    await eventually_async(lambda: _checks(gateway)["held"] == 1, "the check made")
    assert _checks(gateway) | {"unwritten": 1, "checking": 0, "owed": 0} == _checks(gateway)


async def test_checks_owed_held_up_by_rows_a_full_disk_left_unwritten_are_not_read_again_until_a_write(
        node_factory, monkeypatch) -> None:
    # A check waiting on disk alone whose latest row could not be written is not taken until it is: a read of the
    # rows that met it and took nothing is not made again at each check that ends, only once a write went through.
    monkeypatch.setattr(owed_checks, "WAITING", 1)
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    paid = gateway.app[NODE].paid
    tabs, store, owed = paid.gateway_tabs, paid.compute.store, paid.checks.owed
    disk = _FailingOwedRow(tabs.tallies.db)
    disk.failed = True  # (full only once told so)
    monkeypatch.setattr(tabs.tallies, "db", disk)
    calls = spot_checks.PER_PROVIDER + owed_checks.WAITING + 1
    release, asked, fetch = asyncio.Event(), [], spot_checks.fetch_record

    async def unreachable_at_first(client, url, peer, pid):
        if pid not in asked:  # the connection tried a while: the check's row is written meanwhile
            asked.append(pid)
            await eventually_async(lambda: pid in {c["facts"]["provenance"] for _, _, c in store.owed_checks()},
                                   "the check's row written")
            disk.full = len(asked) == calls  # the last one's next row finds the disk full
            raise PeerUnreachable("peer is unreachable: connection refused")
        await release.wait()
        return await fetch(client, url, peer, pid)

    monkeypatch.setattr(spot_checks, "fetch_record", unreachable_at_first)
    for n in range(calls):
        with pytest.raises(PeerUnreachable):
            await paid.invoke_remote(provider.app[NODE].peers.identity.id, PRICE,
                                     InvokeCall(module, "add", [n, 1], FUEL), {}, verify=True)
    assert _checks(gateway) | {"owed_on_disk": 1, "unwritten": 1} == _checks(gateway)
    release.set()  # the checks under way and the one waiting in memory are made: the one on disk is held up
    await eventually_async(lambda: _checks(gateway)["held"] == calls - 1, "the others made")
    reads = []
    read = store.owed_check_ids
    monkeypatch.setattr(store, "owed_check_ids", lambda *a: reads.append(a) or read(*a))
    for _ in range(4):
        assert owed.next(lambda peer: True) is None
    assert reads == [] and _checks(gateway)["owed_on_disk"] == 1
    disk.full = False  # room again: the next write writes its row, and it is taken
    assert tabs.tallies.write_now()
    assert owed.next(lambda peer: False) is None and len(reads) == 1


async def test_a_check_sent_to_disk_whose_first_row_a_full_disk_refused_is_counted_and_taken_up_once_written(
        node_factory, monkeypatch) -> None:
    # A provider's check past the bound waits on disk alone, but the disk was full for its first row: no read lists it
    # until a write goes through.  A pass over the rows meanwhile (another provider's check starting left room) keeps
    # it counted; once its row is written it is taken up and made, and a restart finds nothing owed.
    monkeypatch.setattr(owed_checks, "WAITING", 1)
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, busy, module = await _pair(node_factory, check_rate=0)
    other = await node_factory("other", **QUIET, market=MARKET_TERMS)
    await peer_with_provider(gateway, other)
    paid = gateway.app[NODE].paid
    tabs, store = paid.gateway_tabs, paid.compute.store
    disk = _FailingOwedRow(tabs.tallies.db)
    disk.failed = True  # (full only once told so)
    monkeypatch.setattr(tabs.tallies, "db", disk)
    release, asked, fetch = asyncio.Event(), [], spot_checks.fetch_record

    async def unreachable_at_first(client, url, peer, pid):
        if pid not in asked:
            asked.append(pid)
            if not disk.full:  # the connection tried a while: the check's row is written meanwhile
                await eventually_async(lambda: pid in {c["facts"]["provenance"] for _, _, c in store.owed_checks()},
                                       "the check's row written")
            raise PeerUnreachable("peer is unreachable: connection refused")
        await release.wait()
        return await fetch(client, url, peer, pid)

    async def verified(provider, n: int) -> None:
        with pytest.raises(PeerUnreachable):
            await paid.invoke_remote(provider.app[NODE].peers.identity.id, PRICE,
                                     InvokeCall(module, "add", [n, 1], FUEL), {}, verify=True)

    monkeypatch.setattr(spot_checks, "fetch_record", unreachable_at_first)
    for n in range(spot_checks.PER_PROVIDER + 1):  # under way as many as one provider may, and one waiting in memory
        await verified(busy, n)
    disk.full = True
    await verified(other, 0)  # no room in memory: on disk alone, its row refused
    assert len(store.owed_checks()) == spot_checks.PER_PROVIDER + 1, store.owed_checks()
    assert _checks(gateway) | {"owed": 2, "owed_on_disk": 1} == _checks(gateway)
    release.set()  # the busy provider's checks are made, the one in memory started: the rows read meanwhile
    await eventually_async(lambda: _checks(gateway)["held"] == spot_checks.PER_PROVIDER + 1, "the busy one's made")
    assert _checks(gateway) | {"checking": 0, "owed": 1, "owed_on_disk": 1} == _checks(gateway)
    disk.full = False  # room again: the next write writes its row, and the next check that ends or waits takes it up
    assert tabs.tallies.write_now()
    await verified(busy, spot_checks.PER_PROVIDER + 1)
    await eventually_async(lambda: _checks(gateway)["held"] == spot_checks.PER_PROVIDER + 3, "every check made")
    assert _checks(gateway) | {"checking": 0, "owed": 0, "owed_on_disk": 0, "unshown": 0} == _checks(gateway)
    assert store.owed_checks() == []
    gateway = await _restarted(gateway, node_factory, check_rate=0)
    assert _checks(gateway) | {"checking": 0, "owed": 0, "owed_on_disk": 0} == _checks(gateway)
    assert gateway.app[NODE].paid.compute.store.owed_checks() == []


async def test_the_answer_of_a_call_whose_caller_went_away_is_checked_as_any(node_factory, monkeypatch) -> None:
    # A provider cannot tell a call whose caller went away once it was sent: its answer is sampled as any other, and
    # one that its record contradicts is caught (its tab not paid).
    gateway, provider, module = await _pair(node_factory, check_rate=1)
    status, body = await _add(gateway, module, 1, 2)  # (the provider gets the module)
    assert status == 200, body
    await _settled(gateway)
    before = _balances(gateway, provider)
    answering(provider, monkeypatch, _other_results)
    running, go = asyncio.Event(), asyncio.Event()
    paid = provider.app[NODE].paid
    run_for_peer = paid.run_for_peer

    async def held_up(*args, **kwargs):
        running.set()
        await go.wait()
        return await run_for_peer(*args, **kwargs)

    monkeypatch.setattr(paid, "run_for_peer", held_up)
    call = asyncio.create_task(gateway.app[NODE].paid.invoke({"module": module, "function": "add", "args": [1, 2],
                                                              "fuel": FUEL}))
    await asyncio.wait_for(running.wait(), 30)
    call.cancel()
    await asyncio.wait([call])
    go.set()
    await eventually_async(lambda: _checks(gateway)["struck"] == 1, "the late answer checked")
    await _settled(gateway)
    assert _balances(gateway, provider)[0] == before[0] and gateway.app[NODE].paid.gateway_tabs.refused_receipts == 1


async def test_a_record_is_asked_for_so_many_times_in_all_across_restarts(node_factory, monkeypatch) -> None:
    # The provider never answers: the gateway is stopped twice while it asks (an ask cut short counts for nothing), and
    # the asks that went unanswered before each stop count toward TRIES after it.
    monkeypatch.setattr(spot_checks, "BACKOFF", 0.01)
    gateway, _, module = await _pair(node_factory, check_rate=1)
    asks: list[str] = []
    stops = (3, 5)  # the asks the gateway is stopped during

    async def unreachable(client, url, provider, pid):
        asks.append(pid)
        if len(asks) in stops:
            await asyncio.Event().wait()  # until the stop cuts it short
        raise PeerUnreachable("peer is unreachable: connection refused")

    monkeypatch.setattr(spot_checks, "fetch_record", unreachable)
    status, body = await _add(gateway, module, 1, 2)
    assert status == 200, body
    for ask in stops:
        await eventually_async(lambda ask=ask: len(asks) == ask, f"ask {ask} made")
        gateway = await _restarted(gateway, node_factory, check_rate=1)
    await eventually_async(lambda: _checks(gateway)["unshown"] == 1, "the record given up on")
    assert len(asks) == spot_checks.TRIES + len(stops) and set(asks) == {body["provenance"]}, asks
    assert _checks(gateway) | {"unreached": 2, "checking": 0, "owed": 0} == _checks(gateway)


async def test_a_run_not_checked_is_found_on_its_provider_after_a_restart(node_factory) -> None:
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    status, body = await _add(gateway, module, 2, 3)
    assert status == 200, body
    gateway = await _restarted(gateway, node_factory, check_rate=0)
    shown = await gateway.get(f"/v1/compute/provenance/{body['provenance']}")  # no ?provider=
    signed = await shown.json()
    assert shown.status == 200 and signed["record"]["results"] == body["results"], signed


async def test_a_second_answer_with_one_run_is_struck_by_its_check_taken_up_after_a_restart(node_factory,
                                                                                          monkeypatch) -> None:
    # The latest remote runs are on disk with the answers: the check a stop left owed still sees the first answer.
    gateway, provider, module = await _pair(node_factory, check_rate=0)
    monkeypatch.setattr(gateway.app[NODE].paid.gateway_tabs, "interval", 3600)  # one tab, however slow the machine
    first: list[dict] = []

    def the_first_again(answer: dict) -> dict:
        first.append(answer)
        return copy.deepcopy(first[0])

    answering(provider, monkeypatch, the_first_again)
    asked, shown = _records_kept_back(provider, monkeypatch)
    shown.set()
    status, body = await _add(gateway, module, 1, 2, verify=True)
    assert status == 200 and body["verified"] is True, body
    shown.clear()
    status, problem = await _add(gateway, module, 1, 2, verify=True)  # the same tab; its record asked again later
    assert status == 502 and problem["code"] == "peer-unreachable", problem
    struck: list[str] = []
    monkeypatch.setattr(Quarantine, "strike", lambda self, node, why, **kw: struck.append(why) or False)
    gateway = await _restarted(gateway, node_factory, check_rate=0)
    shown.set()
    await eventually_async(lambda: _checks(gateway)["struck"] == 1, "the second answer struck")
    assert "another call with" in struck[0], struck


@pytest.mark.slow
def test_a_check_under_way_at_a_kill_9_of_the_gateway_is_made_at_its_restart(cli_node, node_process,
                                                                          monkeypatch) -> None:
    # The provider (in this process) answers other results than its record signs, and keeps the record back until
    # the gateway (a process) was killed while it waited to ask again.
    provider = cli_node("provider", **QUIET, market=MARKET_TERMS)
    answering(provider, monkeypatch, _other_results)
    asked, shown = _records_kept_back(provider, monkeypatch)
    env = {"XSC_HEALTH_PROBE_INTERVAL": "3600", "XSC_PEERS_GOSSIP_INTERVAL": "3600", "XSC_COMPUTE_CHECK_RATE": "1",
           "XSC_MARKET_OFFER_COMPUTE": "false", "XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3",
           **{f"XSC_MARKET_{k.upper()}": str(v) for k, v in MARKET_TERMS.items()}}
    gateway = node_process("gateway", ["--peer", provider.url], env)
    status, body = http(gateway.url, "POST", "/v1/modules", wasm("add"), {"Authorization": f"Bearer {gateway.token}"})
    assert status in (200, 201), body
    spent = api(gateway, "GET", "/v1/ledger/accounts/client")[1]["balance"]
    call = {"module": module_id("add"), "function": "add", "args": [1, 2], "fuel": FUEL}
    status, body = eventually(lambda: (answer := api(gateway, "POST", "/v1/compute/invoke", call))[0] == 200
                              and answer, "the call run on the provider", timeout=60)
    assert values(body) == [4], body
    eventually(asked.is_set, "the record asked for")
    gateway.kill()
    shown.set()
    gateway.start()
    eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0, "the tab refused")
    # (The provider's receipt stays on its chain, unpaid.)
    assert api(gateway, "GET", "/v1/ledger/accounts/client")[1]["balance"] == spent
    checks = api(gateway, "GET", "/v1/node/status")[1]["remote_compute"]["checks"]
    assert checks | {"struck": 1, "checking": 0, "owed": 0} == checks
