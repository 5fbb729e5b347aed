"""What a settlement leaves for the next start to count on the trust lines (Payments.count_uncounted): nothing after a
clean stop, and nothing after a kill -9 just after the settlement's synced ledger write, whose batch holds its count
(real node processes; the S3 funding in one node's process).  What a ledger written without the count in that batch
left is counted at the next start: tests/ledger/test_trust_lines.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xsc.node.appkeys import NODE

from tests.support.nodes import NodeProcess, free_port, kill_all
from tests.support.peers import FAST, api, node_id
from tests.support.waiting import eventually

LAUNCHER = [sys.executable, str(Path(__file__).parents[1] / "support" / "ledger_node.py")]
ENV = {**FAST, "XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3"}
LEFT_OFF = "the last run left off the trust lines"
WASM = Path(__file__).parents[2] / "fixtures" / "wasm" / "add.wasm"


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def _started(data_dir: Path, port: int, killed_after: str | None = None) -> tuple[NodeProcess, int]:
    """A node process through the launcher (it settles the "test" job kind, /v1/test/pay), and where its log's part
    for this run begins; `killed_after` ("owe", "paid"): it SIGKILLs itself just after the batch of a payment its user
    makes (of a receipt it countersigns)."""
    env = {**ENV, **({"XSC_TEST_KILLED_WRITING": killed_after} if killed_after else {})}
    node = NodeProcess(data_dir, port, env=env, launcher=LAUNCHER)
    logged = node.log.stat().st_size if node.log.exists() else 0
    return node.start(), logged


def _this_run(node: NodeProcess, logged: int) -> str:
    return node.log.read_bytes()[logged:].decode(errors="replace")


def _line(node: NodeProcess, peer: str) -> dict:
    status, body = api(node, "GET", "/v1/ledger/trust")
    assert status == 200, body
    return next((line for line in body["lines"] if line["peer"] == peer), {"paid": 0, "owed": 0})


def _pay(a: NodeProcess, b_id: str, amount: int, job: str) -> tuple[int, dict]:
    return api(a, "POST", "/v1/test/pay", {"node": b_id, "amount": amount, "usage": {"fuel": 1}, "job": job})


@pytest.mark.slow
def test_a_clean_stop_leaves_nothing_to_count_nor_does_a_kill_just_after_a_settlements_write(tmp_path) -> None:
    nodes: list[NodeProcess] = []
    pa, pb = free_port(), free_port()
    try:
        (a, _), (b, _) = _started(tmp_path / "a", pa), _started(tmp_path / "b", pb)
        nodes += [a, b]
        # What a user does on a node: a put and an invoke paid here (before it knows a peer, so that they are
        # settled here alone), a payment to another node, counted on both nodes' lines, and last an S3 user funded:
        # a transfer to an account this node keeps, which no other node is owed.
        (tmp_path / "f.bin").write_bytes(b"x" * 20_000)
        _ok(a.xsc("store", "put", str(tmp_path / "f.bin")))
        assert _ok(a.xsc("compute", "invoke", str(WASM), "add", "1", "2")).strip() == "3"
        _ok(a.xsc("peers", "add", b.url))
        b_id, a_id = node_id(b), node_id(a)
        assert _pay(a, b_id, 1_000, "test:clean")[0] == 200
        _ok(a.xsc("s3", "keys", "create", "--user", "ana"))
        ana = json.loads(_ok(a.xsc("s3", "fund", "ana", "1", "--json")))["account"]
        assert _line(a, b_id)["owed"] == 1_000 and _line(b, a_id)["paid"] == 1_000

        for node in (a, b):
            assert node.stop() == 0 and not node.killed
        (a, a_log), (b, b_log) = _started(tmp_path / "a", pa), _started(tmp_path / "b", pb)
        nodes[:] = [a, b]
        for node, logged in ((a, a_log), (b, b_log)):
            assert LEFT_OFF not in _this_run(node, logged), _this_run(node, logged)
        assert [line["peer"] for line in api(a, "GET", "/v1/ledger/trust")[1]["lines"]] == [b_id]  # none for ana
        assert ana != b_id

        # The payer killed just after its payment's batch: the payment and its count were written together, so the
        # next start finds nothing to count.
        assert a.stop() == 0
        a, _ = _started(tmp_path / "a", pa, killed_after="owe")
        nodes[0] = a
        with pytest.raises(OSError):  # its connection is cut as it dies
            _pay(a, b_id, 2_000, "test:killed-payer")
        eventually(lambda: not a.alive(), "the payer to die")
        a, a_log = _started(tmp_path / "a", pa)
        nodes[0] = a
        assert LEFT_OFF not in _this_run(a, a_log), _this_run(a, a_log)
        assert _line(a, b_id)["owed"] == 3_000

        # The payee killed just after its receipt's batch: the same at its next start; the payer's retry then
        # completes the payment from the stored receipt.
        assert b.stop() == 0
        b, _ = _started(tmp_path / "b", pb, killed_after="paid")
        nodes[1] = b
        status, problem = _pay(a, b_id, 4_000, "test:killed-payee")
        assert (status, problem["code"]) == (502, "peer-unreachable"), problem
        eventually(lambda: not b.alive(), "the payee to die")
        b, b_log = _started(tmp_path / "b", pb)
        nodes[1] = b
        assert LEFT_OFF not in _this_run(b, b_log), _this_run(b, b_log)
        assert _line(b, a_id)["paid"] == 7_000
        eventually(lambda: _line(a, b_id)["owed"] == 7_000, "the payer's retry to complete the payment")

        # Counted once: the next clean stop and start count nothing again.
        for node in (a, b):
            assert node.stop() == 0
        (a, a_log), (b, b_log) = _started(tmp_path / "a", pa), _started(tmp_path / "b", pb)
        nodes[:] = [a, b]
        for node, logged in ((a, a_log), (b, b_log)):
            assert LEFT_OFF not in _this_run(node, logged), _this_run(node, logged)
        assert _line(a, b_id)["owed"] == 7_000 and _line(b, a_id)["paid"] == 7_000
        for node in (a, b):
            assert json.loads(_ok(node.xsc("ledger", "verify", "--json")))["ok"]
    finally:
        kill_all(nodes)


async def test_an_s3_users_funding_is_no_payment_to_another_node(node_factory) -> None:
    """The transfer that funds an S3 user pays an account this node keeps: the start's count of payments to other
    nodes leaves it alone, and no trust line is opened for that account as if it were a peer."""
    node = await node_factory()
    services = node.app[NODE]
    response = await node.post("/v1/s3/accounts/ana/fund", json={"amount": 1_000_000})
    assert response.status == 200, await response.text()
    account = (await response.json())["account"]
    assert services.payments.count_uncounted() == 0
    assert services.trust.lines() == [] and services.trust.line(account)["owed"] == 0
