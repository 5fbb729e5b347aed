"""A settlement a stop or a dropped connection cuts into is finished whole or not begun: a payment to another node or a
receipt for one, written with its count on the trust line in one synced batch, and waited for by the task a stop
cancels.  So the next start has nothing to count and logs no warning; a kill -9 at the same point leaves the ledger
and the lines consistent (real node processes; each write held in the node's ledger writer until the stop, the hang-up
or the kill reaches it: tests/support/ledger_node.py)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import pytest

from tests.support.nodes import NodeProcess, free_port, kill_all
from tests.support.peers import FAST, api, node_id
from tests.support.waiting import eventually

LAUNCHER = [sys.executable, str(Path(__file__).parents[1] / "support" / "ledger_node.py")]
ENV = {**FAST, "XSC_LEDGER_SETTLE_RETRY_INTERVAL": "0.3"}
AMOUNT = 1_000

pytestmark = pytest.mark.slow


class Pair:
    """A payer node `a` and a payee node `b`, each started through the launcher with the hooks a test asks of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ports = {"a": free_port(), "b": free_port()}
        self.nodes: dict[str, NodeProcess] = {}
        self.logged: dict[str, int] = {}
        self.mark = tmp_path / "held"
        self.ids: dict[str, str] = {}

    def start(self, name: str, **env: str) -> NodeProcess:
        node = NodeProcess(self.tmp_path / name, self.ports[name], env={**ENV, **env}, launcher=LAUNCHER)
        self.logged[name] = node.log.stat().st_size if node.log.exists() else 0
        self.nodes[name] = node.start()
        return node

    def held(self, name: str, kind: str, **env: str) -> NodeProcess:
        """`name` started with its first write of `kind` ("owe", "paid") held (ledger_node.py)."""
        return self.start(name, XSC_TEST_HELD_WRITING=kind, XSC_TEST_HELD_MARK=str(self.mark), **env)

    def this_run(self, name: str) -> str:
        return self.nodes[name].log.read_bytes()[self.logged[name]:].decode(errors="replace")

    def line(self, name: str, peer: str) -> dict:
        status, body = api(self.nodes[name], "GET", "/v1/ledger/trust")
        assert status == 200, body
        return next((line for line in body["lines"] if line["peer"] == peer), {"paid": 0, "owed": 0})

    def pay(self, job: str) -> tuple[int, dict]:
        return api(self.nodes["a"], "POST", "/v1/test/pay",
                   {"node": self.ids["b"], "amount": AMOUNT, "usage": {"fuel": 1}, "job": job})

    def peered(self) -> tuple[str, str]:
        a, b = self.nodes["a"], self.nodes["b"]
        result = a.xsc("peers", "add", b.url)
        assert result.returncode == 0, result.stderr.decode()
        self.ids = {"a": node_id(a), "b": node_id(b)}
        return self.ids["a"], self.ids["b"]

    def started_clean(self) -> None:
        """Both stopped and started again: this start counts nothing (it logs no warning at all), the counts on both
        lines are the one payment's, nothing is pending, and both ledgers verify."""
        for name in ("a", "b"):
            assert self.nodes[name].stop() == 0 and not self.nodes[name].killed
        for name in ("a", "b"):
            self.start(name)
        a_id, b_id = self.ids["a"], self.ids["b"]
        for name in ("a", "b"):
            assert " WARNING " not in self.this_run(name), self.this_run(name)
        assert self.line("a", b_id)["owed"] == AMOUNT and self.line("b", a_id)["paid"] == AMOUNT
        assert api(self.nodes["a"], "GET", "/v1/ledger/payments")[1]["pending"] == []
        for node in self.nodes.values():
            result = node.xsc("ledger", "verify", "--json")
            assert result.returncode == 0 and json.loads(result.stdout)["ok"], result.stdout.decode()


@pytest.fixture
def pair(tmp_path):
    made = Pair(tmp_path)
    try:
        yield made
    finally:
        kill_all(made.nodes.values())


def _left_pending(pair: Pair) -> None:
    """The payee down: a payment to it stays pending on the payer, for its retry to finish once the payee is back."""
    assert pair.nodes["b"].stop() == 0
    status, problem = pair.pay("test:pending")
    assert (status, problem["code"]) == (502, "peer-unreachable"), problem


def test_a_stop_that_cancels_the_retry_as_it_writes_a_payment_finishes_the_payment_and_its_count(pair) -> None:
    """The stop cancels the payer's retry loop while the payment it completes is being written: the stop waits for
    the write, whose batch holds the payment and its count as owed, so the next start counts nothing."""
    pair.held("a", "owe")
    pair.start("b")
    a_id, b_id = pair.peered()
    _left_pending(pair)
    pair.start("b")
    eventually(pair.mark.exists, "the payer's retry to write the payment")
    assert pair.nodes["a"].stop() == 0 and not pair.nodes["a"].killed
    pair.started_clean()


def test_a_receipt_whose_asker_hangs_up_as_it_is_written_is_written_and_counted_whole(pair) -> None:
    """The payer gives up on its request (its timeout) while the payee writes the receipt: the node's server does not
    cancel a handler whose client went away (aiohttp's handler_cancellation is off), so the receipt and its count
    on the payer's line are written, and the payer's retry then pays it."""
    pair.start("a", XSC_PEERS_REQUEST_TIMEOUT="2")
    pair.held("b", "paid")
    a_id, b_id = pair.peered()
    status, problem = pair.pay("test:hung-up")
    assert (status, problem["code"]) == (502, "peer-unreachable"), problem
    assert pair.mark.exists()
    eventually(lambda: pair.line("b", a_id)["paid"] == AMOUNT, "the receipt to be written and counted")
    eventually(lambda: pair.line("a", b_id)["owed"] == AMOUNT, "the payer's retry to pay the receipt")
    pair.started_clean()


def test_a_forced_stop_that_cuts_short_a_receipt_being_written_finishes_the_receipt_and_its_count(pair) -> None:
    """A second SIGTERM cuts short the requests in flight: the one writing a receipt waits for its write (the receipt
    and its count in one batch), so the payee's next start counts nothing; the payer's retry pays it."""
    pair.start("a")
    pair.held("b", "paid")
    a_id, b_id = pair.peered()
    answered: list = []
    paying = threading.Thread(target=lambda: answered.append(pair.pay("test:forced")))
    paying.start()
    eventually(pair.mark.exists, "the payee to write the receipt")
    pair.nodes["b"].send(signal.SIGTERM)
    eventually(lambda: "stopping: waiting for 1 request in flight" in pair.this_run("b"), "the stop to wait for it")
    pair.nodes["b"].send(signal.SIGTERM)  # the second: the request is cut short at once
    assert pair.nodes["b"].stop() == 0 and not pair.nodes["b"].killed
    paying.join(60)
    assert answered and answered[0][0] == 502, answered
    pair.start("b")
    assert " WARNING " not in pair.this_run("b"), pair.this_run("b")
    assert pair.line("b", a_id)["paid"] == AMOUNT
    eventually(lambda: pair.line("a", b_id)["owed"] == AMOUNT, "the payer's retry to pay the receipt")
    pair.started_clean()


@pytest.mark.parametrize("killed", ["a", "b"])
def test_a_kill_as_a_settlement_is_written_leaves_it_to_be_finished_whole_after_the_restart(pair, killed) -> None:
    """A kill -9 of the payer as it writes the payment (`a`), or of the payee as it writes the receipt (`b`): that
    batch is never written, nothing half of it is on disk, and after the restart the payer's retry finishes the
    payment, counted once on both lines."""
    kind = {"a": "owe", "b": "paid"}[killed]
    for name in ("a", "b"):
        if name == killed:
            pair.held(name, kind, XSC_TEST_HELD_KILLED="1")
        else:
            pair.start(name)
    a_id, b_id = pair.peered()
    if killed == "a":
        _left_pending(pair)
        pair.start("b")
    else:
        status, problem = pair.pay("test:killed-payee")
        assert (status, problem["code"]) == (502, "peer-unreachable"), problem
    eventually(pair.mark.exists, "the settlement to be written")
    eventually(lambda: not pair.nodes[killed].alive(), "the node to die")
    pair.start(killed)
    assert " WARNING " not in pair.this_run(killed), pair.this_run(killed)
    eventually(lambda: pair.line("a", b_id)["owed"] == AMOUNT, "the payer's retry to pay the receipt")
    assert pair.line("b", a_id)["paid"] == AMOUNT
    pair.started_clean()
