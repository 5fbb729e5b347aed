"""Settlement across nodes survives SIGKILL of the payer or the payee (real node processes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE
from xsc.ledger.receipts import ask_receipt

from tests.support.nodes import NodeProcess, free_port, kill_all
from tests.support.peers import FAST, api, node_id
from tests.support.waiting import eventually

LAUNCHER = [sys.executable, str(Path(__file__).parents[1] / "support" / "ledger_node.py")]
RETRY = {"XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3"}


def launched_node(data_dir: Path, port: int, args=(), env=None) -> NodeProcess:
    """A node process started through the launcher: it settles the "test" job kind and has /v1/test/pay."""
    return NodeProcess(data_dir, port, args, env, launcher=LAUNCHER)


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def _balance(node, account: str = "client") -> dict:
    status, body = api(node, "GET", f"/v1/ledger/accounts/{account}")
    assert status == 200, body
    return body


@pytest.mark.slow
def test_a_payer_killed_with_a_payment_pending_completes_it_after_restart(tmp_path) -> None:
    env = {**FAST, **RETRY, "XSC_LEDGER_CREDIT_LIMIT": "10000", "XSC_LEDGER_LOW_BALANCE": "60"}
    nodes = []
    try:
        a = launched_node(tmp_path / "a", free_port(), env=env).start()
        b = launched_node(tmp_path / "b", free_port(), env=env).start()
        nodes += [a, b]
        _ok(a.xsc("peers", "add", b.url))
        b_id = node_id(b)
        info = json.loads(_ok(a.xsc("ledger", "balance", "--json")))
        assert info["low"] is False

        b.kill()  # the payee is down when the payer pays
        status, problem = api(a, "POST", "/v1/test/pay", {"node": b_id, "amount": 5_000, "usage": {"fuel": 50},
                                                          "job": "test:crash"})
        assert (status, problem["code"]) == (502, "peer-unreachable") and "pending" in problem["detail"]
        held = _balance(a)
        assert (held["balance"], held["held"], held["available"], held["low"]) == (0, 5_000, 5_000, True)
        low = a.xsc("ledger", "balance")
        assert low.returncode == 0 and "low balance: 0.005000 credits left" in low.stderr.decode()
        assert json.loads(_ok(a.xsc("ledger", "balance", "--json")))["low"] is True
        status, health = api(a, "GET", "/health")
        assert health["checks"]["ledger:balance"][0]["status"] == "warn"
        a.kill()  # and the payer dies with the payment pending

        b.start()
        a.start()
        eventually(lambda: _balance(a)["balance"] == -5_000, "the restarted payer to complete its payment")
        assert _balance(a)["held"] == 0 and _balance(b, "node")["balance"] == 5_000
        for node in (a, b):
            report = json.loads(_ok(node.xsc("ledger", "verify", "--json")))
            assert report["ok"] and report["open_transfers"] == 1
    finally:
        kill_all(nodes)


@pytest.mark.slow
async def test_a_payee_killed_after_countersigning_is_paid_from_its_stored_receipt(node_factory, tmp_path) -> None:
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600},
             "ledger": {"settle_retry_interval": 3600}}
    a = await node_factory("a", **quiet)
    b = launched_node(tmp_path / "b", free_port(), env=FAST).start()
    try:
        await a.app[NODE].peers.add(b.url)
        b_id = node_id(b)
        ledger, payer = a.app[NODE].ledger, a.app[CLIENT_IDENTITY]
        auth = await ledger.authorize(payer, b_id_key(b_id), 2_500, "test:killed", claim=(2_500, {"fuel": 25}))
        receipt = await ask_receipt(a.app[NODE].peers.client, a.app[NODE].peers.peer(b_id).url, b_id, auth, 2_500, {"fuel": 25})  # countersigned and on b's disk...
        b.kill()  # ...then b dies before the payer completed: its answer counts as lost
        assert await a.app[NODE].payments.retry_all() == {"pending": 1}
        assert ledger.account_view(payer.public_key)["balance"] == 0

        b.start()
        assert await a.app[NODE].payments.retry_all() == {"completed": 1}  # from GET .../receipts/{id}
        assert ledger.pending() == [] and ledger.account_view(payer.public_key)["balance"] == -2_500
        payment = ledger.store.history(payer.public_key, 1)[0]
        assert payment.receipt.encode() == receipt.encode()
        assert _balance(b, "node")["balance"] == 2_500
        assert json.loads(_ok(b.xsc("ledger", "verify", "--json")))["ok"]
        report = await (await a.get("/v1/ledger/verify")).json()
        assert report["ok"], report["violations"]
        assert a.app[IDENTITY].id != b_id
    finally:
        kill_all([b])


def b_id_key(node: str) -> bytes:
    from xsc.identity import parse_public_id

    return parse_public_id(node)
