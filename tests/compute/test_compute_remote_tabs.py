"""Remote invokes paid through tabs survive kill -9 of the gateway and of the provider: every acknowledged
invoke is paid, both ledgers verify, and the payer stays within its credit limit (real node processes)."""

from __future__ import annotations

import threading

import pytest
from tests.support.compute import module_id, wasm

from tests.support.peers import api, http, kill_all, start_star
from tests.support.waiting import eventually

ENV = {"XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3"}
ADD = module_id("add")


def _invoke(gateway) -> tuple[int, dict]:
    try:
        return api(gateway, "POST", "/v1/compute/invoke", {"module": ADD, "function": "add", "args": [1, 2]})
    except OSError:  # the node died under the request: not acknowledged
        return 0, {}


def _burst(gateway, acked: dict, stop: threading.Event) -> list[threading.Thread]:
    lock = threading.Lock()

    def client() -> None:
        for _ in range(500):  # bounded; ends when the victim is down
            if stop.is_set():
                return
            status, body = _invoke(gateway)
            if status == 200:
                with lock:
                    acked[body["provenance"]] = body["charge"]

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    return threads


def _settled(gateway, provider) -> bool:
    payer = api(gateway, "GET", "/v1/ledger/accounts/client")[1]
    paid = api(provider, "GET", "/v1/ledger/accounts/node")[1]
    pending = api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"]
    return pending == 0 and payer["held"] == 0 and -payer["balance"] == paid["balance"]


def _verified(node) -> None:
    status, report = api(node, "GET", "/v1/ledger/verify")
    assert status == 200 and report["ok"], report


@pytest.mark.slow
def test_kill_9_of_gateway_or_provider_loses_no_acknowledged_remote_payment(tmp_path) -> None:
    started: list = []
    try:
        (gateway, provider), _ = start_star(tmp_path, 2, {**ENV, "XSC_MARKET_OFFER_COMPUTE": "false"}, ENV, started)
        eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 2, "the market")
        status, body = http(gateway.url, "POST", "/v1/modules", wasm("add"), {"Authorization": f"Bearer {gateway.token}"})
        assert status in (200, 201), body
        acked: dict[str, int] = {}
        for victim in (gateway, provider):
            # The market matches the gateway's invokes to the provider (again, after a restart) first.
            eventually(lambda: (answer := _invoke(gateway))[0] == 200 and acked.update(
                {answer[1]["provenance"]: answer[1]["charge"]}) is None, "a remote invoke to succeed", timeout=90)
            before, stop = len(acked), threading.Event()
            threads = _burst(gateway, acked, stop)
            eventually(lambda: len(acked) >= before + 3, "some acknowledged remote invokes", timeout=60)
            victim.kill()
            stop.set()
            for t in threads:
                t.join()
            victim.start()
            eventually(lambda: _settled(gateway, provider), "every tab paid after the restart", timeout=60)
            received = api(provider, "GET", "/v1/ledger/accounts/node")[1]["balance"]
            assert received >= sum(acked.values())  # every acknowledged invoke is paid (a lost answer may be too)
            records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
            assert set(acked) <= {r["record"]["id"] for r in records}
            # and nothing twice: the runs, and compiling the module the first call pushed, paid with that call's tab
            receipts = api(provider, "GET", "/v1/ledger/accounts/node/history?limit=1000")[1]["entries"]
            compiles = [e["usage"]["compiles"] for e in receipts if "compiles" in e.get("usage", {})]
            assert len(compiles) == 1 and received == sum(r["record"]["charge"] for r in records) + compiles[0]
        for node in (gateway, provider):
            _verified(node)
        payer = api(gateway, "GET", "/v1/ledger/accounts/client")[1]
        assert payer["balance"] >= -payer["credit_limit"]
    finally:
        kill_all(started)
