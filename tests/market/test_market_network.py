"""The market on real node processes: puts paid to their holders, a failing holder unpaid and replaced,
invokes run on another provider, underfunded puts refused; every ledger verifies afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from xsc.compute.provider_tabs import compile_price
from xsc.ledger import price_storage
from xsc.storage import Capability

from tests.support.nodes import NodeProcess, kill_all
from tests.support.peers import api, http, start_star
from tests.support.waiting import eventually
from tests.support.blocks import corrupt_block

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "wasm"
PAY_OFTEN = {"XSC_MARKET_PAYMENT_INTERVAL": "0.5", "XSC_AUDIT_INTERVAL": "0.3", "XSC_AUDIT_BLOCKS_PER_ROUND": "6",
             "XSC_AUDIT_SCRUB_RATE": "0", "XSC_STORAGE_SEGMENT_SIZE": "65536"}


@pytest.fixture
def network(tmp_path: Path):
    """network(n, gateway_env, others_env) -> (nodes, ids): a gateway and n-1 nodes that joined it, probed up,
    and every market book holding every node's offer."""
    started: list[NodeProcess] = []

    def start(n: int, gateway_env: dict | None = None, others_env: dict | None = None):
        nodes, ids = start_star(tmp_path, n, gateway_env or {}, others_env or {}, started)
        eventually(lambda: len({_market(node)["digest"] for node in nodes}) == 1
                   and _market(nodes[0])["participants"] == n, "every node to hold the same book", timeout=60)
        return nodes, ids

    yield start
    kill_all(started)


def _market(node: NodeProcess) -> dict:
    status, body = api(node, "GET", "/v1/market/status")
    assert status == 200, body
    return body


def _put(gateway: NodeProcess, tmp_path: Path, size: int, *args: str) -> dict:
    src = tmp_path / f"file-{size}.bin"
    src.write_bytes(os.urandom(size))
    put = gateway.xsc("store", "put", str(src), "--json", *args)
    assert put.returncode == 0, put.stderr
    return json.loads(put.stdout)


def _account(node: NodeProcess, who: str) -> dict:
    status, body = api(node, "GET", f"/v1/ledger/accounts/{who}")
    assert status == 200, body
    return body


def _received(node: NodeProcess) -> int:
    return _account(node, "node")["balance"]


def _verify_all(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        if node.alive():
            result = node.xsc("ledger", "verify", "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            assert json.loads(result.stdout)["ok"] is True


@pytest.mark.slow
def test_puts_are_paid_to_their_holders_for_what_they_hold_and_a_failing_holder_is_not(network, tmp_path) -> None:
    nodes, ids = network(7, {**PAY_OFTEN, "XSC_AUDIT_REPAIR_AFTER_FAILURES": "100000"}, {"XSC_AUDIT_SCRUB_RATE": "0"})
    gateway = nodes[0]
    small, large = _put(gateway, tmp_path, 100_000), _put(gateway, tmp_path, 400_000)
    for put in (small, large):
        assert len(set(put["placement"])) == 6  # six distinct providers, chosen by the market
        assert len(set(put["prices"])) == 1  # one uniform price
    # Each remote holder is paid, and exactly what its deals say: its share's bytes x the time held x price.
    by_node: dict[str, list[dict]] = {}

    def all_paid() -> bool:
        deals = _market(gateway)["deals"]
        by_node.clear()
        for d in deals:
            by_node.setdefault(d["node"], []).append(d)
        return len(deals) == 12 and all(d["paid_until"] > d["start"] for d in deals)

    eventually(all_paid, "every deal to be paid at least once", timeout=60)
    for node, deals in by_node.items():
        for d in deals:
            held = d["paid_until"] - d["start"]
            exact = price_storage(d["bytes"], held, d["price"])
            assert exact - 1 <= d["paid"] <= exact, d  # the periods add up to the time held, priced once
        if node != ids[0]:
            holder = nodes[ids.index(node)]
            assert _received(holder) >= sum(d["paid"] for d in deals)
    sizes = {d["bytes"] for d in _market(gateway)["deals"]}
    assert len(sizes) == 2  # the larger file's holders are paid on more bytes

    # A holder whose block is corrupt fails its audit: it is not paid from then on, and its share moves.
    cap = large["capability"]
    si = Capability.parse(cap).storage_index
    share = next(s for s, node in enumerate(large["placement"]) if node != ids[0])
    victim_id = large["placement"][share]
    victim = nodes[ids.index(victim_id)]
    corrupt_block(victim, si, share, segment=2)

    def holder_now() -> str | None:
        check = api(gateway, "GET", f"/v1/store/files/{cap}/check")[1]
        return check["shares"][share]["node"] if check["healthy"] else None

    eventually(lambda: holder_now() not in (None, victim_id), "the share to be rebuilt elsewhere", timeout=60)
    # The deal follows the share to where the file's placement says it is now (on a loaded machine a repair
    # that could not reach the new holder in time may have moved it once more).
    deal = eventually(lambda: next((d for d in _market(gateway)["deals"] if d["si"] == si.hex()
                                    and d["share"] == share and d["node"] == holder_now() != victim_id), None),
                      "the share's deal to move to its new holder")
    assert deal["price"] > 0
    eventually(lambda: any(d["si"] == si.hex() and d["share"] == share and d["paid_until"] > d["start"]
                           for d in _market(gateway)["deals"]), "the new holder to be paid", timeout=60)
    status, history = api(gateway, "GET", f"/v1/market/status?file={si.hex()}")
    ended = [d for d in history["ended"] if d["share"] == share]
    assert ended and ended[0]["node"] == victim_id and ended[0]["ended"]
    # Paid only for the time up to its last passed audit (what it was paid covers its paid period, no more).
    assert ended[0]["paid"] <= price_storage(ended[0]["bytes"], ended[0]["paid_until"] - ended[0]["start"],
                                             ended[0]["price"])
    assert api(gateway, "GET", "/v1/node/status")[1]["audits"]["audits_failed"] >= 1
    _verify_all(nodes)


def test_a_small_files_holders_paid_every_period_are_paid_its_lease_price_not_a_micro_credit_a_period(
        network, tmp_path) -> None:
    """A share of a small file costs under a micro-credit a period: its periods, each paid (a receipt each, which
    keeps the share from being collected unpaid), add up to what its time held costs, priced once, never past its
    deal's total, and what the holder's ledger received is what the gateway's market says it paid."""
    nodes, ids = network(2, PAY_OFTEN)
    gateway, holder = nodes
    put = _put(gateway, tmp_path, 1000)
    assert put["placement"].count(ids[1]) == 2, put

    def deals() -> list[dict]:
        return _market(gateway)["deals"]

    # ten payment runs at least (0.5 s apart) for every deal
    eventually(lambda: len(deals()) == 6 and all(d["paid_until"] - d["start"] >= 5 for d in deals()),
               "every deal to be paid for five seconds", timeout=60)
    settled = deals()
    for d in settled:
        exact = price_storage(d["bytes"], d["paid_until"] - d["start"], d["price"])
        assert exact - 1 <= d["paid"] <= min(exact, d["total"]) and d["total"] <= put["cost"], (d, put["cost"])
    paid_to = {node: sum(d["paid"] for d in settled if d["node"] == node) for node in ids}
    eventually(lambda: _received(holder) >= paid_to[ids[1]], "the holder to write its receipts")
    assert sum(paid_to.values()) <= put["cost"]
    _verify_all(nodes)


@pytest.mark.slow
def test_an_invoke_runs_on_another_provider_when_this_node_offers_no_compute(network, tmp_path) -> None:
    nodes, ids = network(2, {"XSC_MARKET_OFFER_COMPUTE": "false"})
    gateway, provider = nodes
    result = gateway.xsc("compute", "invoke", str(FIXTURES / "add.wasm"), "add", "1", "2", "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["results"][0]["value"] == 3 and run["provider"] == ids[1]
    # The provider's signed record names the deal; it is paid for the metered fuel by the receipt that closes
    # the gateway's tab with it (one transfer per interval: compute/remote_tabs.py).
    status, record = api(provider, "GET", f"/v1/compute/provenance/{run['provenance']}")
    assert status == 200, record
    assert record["record"]["deal"]["gateway"] == ids[0] and record["record"]["deal"]["authorization"] == run["tab"]
    assert run["charge"] > 0
    # The tab pays the call and compiling the module the gateway pushed for it.
    owed = run["charge"] + compile_price(len((FIXTURES / "add.wasm").read_bytes()), run["deal"]["price"])
    eventually(lambda: _received(provider) == owed, "the tab to be paid")
    # The gateway writes its side once the provider's countersigned answer is back: a moment after the provider's.
    eventually(lambda: _account(gateway, "client")["balance"] == -owed, "the gateway to write the payment")
    # A trap is paid too, and reported as the trap it is.
    trapped = gateway.xsc("compute", "invoke", str(FIXTURES / "loop.wasm"), "spin", "--fuel", "1000000")
    assert trapped.returncode != 0 and b"fuel" in trapped.stderr
    eventually(lambda: _received(provider) > owed, "the second tab to be paid")
    eventually(lambda: _account(gateway, "client")["held"] == 0, "the gateway's holds to be released")
    _verify_all(nodes)


@pytest.mark.slow
def test_an_underfunded_put_is_refused_and_nothing_is_stored_anywhere(network, tmp_path) -> None:
    nodes, ids = network(3, {"XSC_LEDGER_CREDIT_LIMIT": "1"})
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(300_000))
    put = nodes[0].xsc("store", "put", str(src), "--duration", "30d")
    assert put.returncode != 0 and b"credit" in put.stderr
    for node in nodes:
        status, body = api(node, "GET", "/v1/node/status")
        assert body["storage"]["used"] == 0 and body["storage"]["shares"] == 0
    assert _market(nodes[0])["deals"] == []
    _verify_all(nodes)


@pytest.mark.slow
def test_a_stopping_node_says_it_leaves_first_so_a_put_while_it_drains_places_no_share_on_it(network) -> None:
    """A node stopped (SIGTERM) while an upload of its own user is in flight publishes its offer of nothing before
    it stops listening and waits for that upload: a put spread over the market meanwhile places its shares on the
    other two nodes, none on the one stopping, and the upload in flight still finishes before it stops."""
    # The gateway probes its peers seldom: it learns of the stop from the stopping node, not from a failed probe.
    (gateway, stopping, staying), ids = network(3, {"XSC_HEALTH_PROBE_INTERVAL": "5"})
    data = os.urandom(200_000)
    held = socket.create_connection(("127.0.0.1", stopping.port), timeout=60)
    try:
        held.sendall(f"POST /v1/store/files HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {stopping.token}\r\n"
                     f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert held.recv(4096).startswith(b"HTTP/1.1 100 Continue")  # its handler runs: a request in flight
        stopping.proc.send_signal(signal.SIGTERM)
        eventually(lambda: b"stopping: waiting for 1 request in flight" in stopping.log.read_bytes(),
                   "the stopping node to wait for the upload")
        status, put = http(gateway.url, "POST", "/v1/store/files?spread=1", os.urandom(100_000),
                           {"Authorization": f"Bearer {gateway.token}"})
        assert status == 201, put
        status, check = api(gateway, "GET", f"/v1/store/files/{put['capability']}/check")
        assert status == 200, check
        holders = {s["node"] for s in check["shares"]}
        assert ids[1] not in holders and holders == {ids[0], ids[2]}, check
        held.sendall(data)
        assert held.recv(4096).startswith(b"HTTP/1.1 201"), "the upload in flight as the stop began"
    finally:
        held.close()
    assert stopping.proc.wait(60) == 0
