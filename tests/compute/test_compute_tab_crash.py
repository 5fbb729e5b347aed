"""Aggregated settlement survives kill -9 of the node: every acknowledged invoke is paid exactly once after
the restart, and the payer never spends past its credit limit (real node processes)."""

from __future__ import annotations

import threading

import pytest
from tests.support.compute import WASM

from tests.support.peers import api, http
from tests.support.waiting import eventually

PRICE = 1_000_000  # micro-credits per million fuel
FUEL = 100_000  # each call spins out of its fuel: it owes 0.1 credit
LIMIT = 2_000_000  # 20 such calls at most, ever
ENV = {"XSC_LEDGER_CREDIT_LIMIT": str(LIMIT), "XSC_MARKET_COMPUTE_ASK_FLOOR": str(PRICE),
       "XSC_MARKET_COMPUTE_ASK_CEILING": str(PRICE), "XSC_MARKET_COMPUTE_BID": str(PRICE)}


def _spin(node, module: str) -> tuple[int, dict]:
    try:
        return api(node, "POST", "/v1/compute/invoke", {"module": module, "function": "spin", "fuel": FUEL})
    except OSError:  # the node was killed under this request: not acknowledged
        return 0, {}


def _covered(node) -> dict[str, dict]:
    status, body = api(node, "GET", "/v1/ledger/accounts/client/history?limit=1000&expand=true")
    assert status == 200, body
    return {ref: entry for entry in body["entries"] for ref in entry.get("covered", [])}


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_payment_and_never_passes_the_credit_limit(node_process) -> None:
    node = node_process("n", env=ENV)
    try:
        module = _deploy(node)
        acked: dict[str, int] = {}
        lock = threading.Lock()

        def client() -> None:
            for _ in range(3):
                status, body = _spin(node, module)
                if status == 422 and body.get("provenance"):
                    with lock:
                        acked[body["provenance"]] = body["charge"]

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        eventually(lambda: len(acked) >= 4, "some acknowledged invokes")
        node.kill()  # in the middle of the burst: some acknowledged, some still running
        for t in threads:
            t.join()
        assert acked and all(price == FUEL * PRICE // 1_000_000 for price in acked.values())

        node.start()
        covered = eventually(lambda: (c := _covered(node)) and set(acked) <= set(c) and c, "the tabs settled")
        # Spend everything that is left: the credit limit holds across the crash.
        while True:
            status, body = _spin(node, module)
            if status == 402:
                assert body["code"] == "insufficient-credit"
                break
            assert status == 422, body
        node.stop()
        node.start()
        covered = eventually(lambda: (c := _covered(node)) and c, "history")
        status, client = api(node, "GET", "/v1/ledger/accounts/client")
        assert client["balance"] >= -LIMIT and client["held"] == 0
        status, records = api(node, "GET", "/v1/compute/provenance?limit=1000")
        prices = {r["record"]["id"]: r["record"]["charge"] for r in records["records"]}
        assert set(covered) == set(prices)  # every recorded run is paid, each once
        assert client["balance"] == -sum(prices.values())
        status, report = api(node, "GET", "/v1/ledger/verify")
        assert report["ok"], report["violations"]
    finally:
        if node.proc and node.proc.poll() is None:
            node.kill()


def _deploy(node) -> str:
    status, body = http(node.url, "POST", "/v1/modules", (WASM / "loop.wasm").read_bytes(),
                        {"Authorization": f"Bearer {node.token}"})
    assert status in (200, 201), body
    return body["id"]
