"""`xsc ledger prepay|trust`, `xsc market recognize --credit` and `xsc peers quarantine ls|rm` on real nodes."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal

import pytest

from xsc.client.sync import NodeClient
from xsc.errors import InvalidArgument, PeerUnreachable, PrepaymentRequired
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import METRICS, NODE

from tests.support.compute import WASM
from tests.support.waiting import eventually

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


def test_prepay_trust_lines_credit_and_quarantine_from_the_cli(thread_node) -> None:
    a = thread_node("a", **QUIET)
    b = thread_node("b", **QUIET, ledger={"stranger_credit": 0})
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    assert a.xsc("peers", "add", b.url).exit_code == 0

    done = a.xsc("ledger", "prepay", b_id, "0.5")  # `b` owes it nothing: nothing to prepay out of
    assert done.exit_code != 0 and len(done.stderr.strip().splitlines()) == 1, done.output
    line = done.stderr.strip()
    assert line == (f"xsc: error: node {b_id} refused the prepayment: it owes this node nothing (a prepayment counts "
                    "only out of what its payee owes its payer; nothing was paid)"), line
    assert len(line.replace(b_id, "ID")) <= 160, line  # short, but for the id it names whole
    done = b.xsc("ledger", "trust")
    assert done.exit_code == 0 and "no peer has a trust line here yet" in done.stdout, done.output
    usage = "usage: xsc ledger prepay [OPTIONS] NODE CREDITS (more: xsc ledger prepay --help)\n"
    for bad, hint in (("lots", "e.g. 10"), ("NaN", "e.g. 10"), ("+1", "e.g. 10"), ("-lots", "e.g. 10"),
                      ("0.0000001", "6 decimals at most"),
                      # written out as sizes are: an exponent is refused, not read as the figure it spells
                      ("1e3", "write it in digits, e.g. 1000, not 1e3"), ("1e999999", "not 1e3")):
        done = a.xsc("ledger", "prepay", b_id, bad)  # a usage error: exit 2, the usage under the one line
        assert done.exit_code == 2 and done.stderr.endswith(usage) and done.stderr.count("\n") == 2, done.output
        assert done.stderr.startswith(f"xsc: usage error: invalid value for 'CREDITS': not an amount of credits: "
                                      f"{bad[:40]!r}") and hint in done.stderr, bad
    # A negative amount (not taken for an option) or none is refused as such, whatever its size.
    for bad in ("-1", "-0.5", "-2000000", "0", "-0"):
        done = a.xsc("ledger", "prepay", b_id, bad)
        assert done.exit_code == 2 and done.stderr == (
            "xsc: usage error: invalid value for 'CREDITS': the amount must be positive, at least 0.000001 credits, "
            f"not {bad}\n" + usage), done.output
    # Too large is said as the bound, the user's figure beside it (a figure of 100,000 digits counted, not read).
    for big, shown in (("2000000", "2000000"), ("99999999999999", "99999999999999"),
                       ("9" * 100_000, "a figure of 100,000 digits")):
        done = a.xsc("ledger", "prepay", b_id, big)
        assert done.exit_code == 2 and done.stderr == (
            "xsc: usage error: invalid value for 'CREDITS': a prepayment is at most 1000000 credits, "
            f"not {shown}\n" + usage), done.output[:300]
    done = a.xsc("ledger", "prepay", b_id, "500")  # more than `a` may spend: the line names the command that helps
    (line,) = done.stderr.splitlines()
    assert done.exit_code == 1 and line.startswith("xsc: error: insufficient credit: "), done.output
    assert "xsc config set ledger.credit_limit MICRO_CREDITS" in line and "operator" not in line, line
    with pytest.raises(InvalidArgument, match=r"at most 1000000\.000000 credits\), not 2000000000000"):
        NodeClient(a.url, a.token).request("POST", "/v1/ledger/prepay", json_body={"node": b_id, "amount": 2 * 10**12})

    done = b.xsc("market", "recognize", a_id, "1", "--credit", "1e999999")
    assert done.exit_code == 2 and done.stderr.startswith(
        "xsc: usage error: invalid value for '--credit': not an amount of credits: '1e999999'"), done.output
    done = b.xsc("market", "recognize", a_id, "1", "--credit", "-1")  # a line of 0 is none: below it is no line
    assert done.exit_code == 2 and done.stderr.startswith(
        "xsc: usage error: invalid value for '--credit': the amount must be 0 or more credits, not -1\n"), done.output
    with pytest.raises(InvalidArgument, match="a credit line is 0 to"):  # past the largest line, through the API
        NodeClient(b.url, b.token).request("POST", "/v1/market/recognize",
                                           json_body={"peer": a_id, "weight": "1", "credit": 2**62 + 1})
    assert not b.app[NODE].market.weights.recognised(a_id)  # refused whole: the weight was not set either
    done = b.xsc("market", "recognize", a_id, "1", "--credit", "4611686018427.387903")  # shown exactly, not as a float
    assert done.exit_code == 0 and "credit line 4611686018427.387903 credits" in done.stdout, done.output
    done = b.xsc("market", "recognize", a_id, "1", "--credit", "3")
    assert done.exit_code == 0 and "credit line 3.000000 credits, available 3.000000" in done.stdout, done.output
    lines = json.loads(b.xsc("ledger", "trust", "--json").stdout)["lines"]  # listed before any work or payment
    assert [(x["peer"], x["credit"], x["available"]) for x in lines] == [(a_id, 3_000_000, 3_000_000)], lines
    shown = b.xsc("ledger", "trust", "--wide").stdout  # the peer in a column (not on a terminal it fits 80)
    assert a_id in shown
    header, row = shown.splitlines()[1], shown.splitlines()[2].split()  # every figure the available is made of
    assert header.split() == ["peer", "paid", "used", "reserved", "credit", "available"], shown
    paid, used, reserved, credit, available = (Decimal(x) for x in row[1:])
    assert paid + credit - used - reserved == available, shown
    done = b.xsc("market", "recognize", a_id, "1", "--credit", "default")  # back to ledger.peer_credit
    assert done.exit_code == 0 and "credit line 10.000000 credits" in done.stdout, done.output
    done = b.xsc("market", "recognize", a_id, "1", "--credit", "3")
    assert done.exit_code == 0 and "credit line 3.000000 credits" in done.stdout, done.output
    done = b.xsc("market", "recognize", a_id, "1")  # no --credit: the line stays as it is
    assert done.exit_code == 0 and "credit line 3.000000 credits" in done.stdout, done.output
    assert b.xsc("market", "recognize", a_id, "2.5").exit_code == 0
    # Back to the derived weight (or to 0): not recognised by the user, `a` gets a stranger's line (docs/security.md),
    # and the command says so, with what it was and the command that gives it back.
    for weight in ("auto", "0"):
        done = b.xsc("market", "recognize", a_id, weight)
        said = " ".join(done.stdout.split())
        assert done.exit_code == 0 and (
            "credit line 0.000000 credits, a stranger's (was 3.000000 while recognised), available 0.000000; give "
            f"it back with: xsc market recognize {a_id} 2.5 --credit 3") in said, done.output
        assert all(len(line) <= 80 for line in done.stdout.splitlines()[1:]), done.stdout  # (the first: the id)
        assert json.loads(b.xsc("ledger", "trust", "--json").stdout)["lines"][0]["credit"] == 0
        assert b.xsc("market", "recognize", a_id, "2.5", "--credit", "3").exit_code == 0  # as it said
        assert json.loads(b.xsc("ledger", "trust", "--json").stdout)["lines"][0]["credit"] == 3_000_000
    before = json.loads(b.xsc("market", "recognize", a_id, "auto", "--json").stdout)["before"]
    assert before == {"weight": "2.5", "credit": 3_000_000}
    done = b.xsc("market", "recognize", a_id, "1", "--credit", "3")  # a line raised is said as ever
    assert done.exit_code == 0 and "credit line 3.000000 credits, available 3.000000" in done.stdout, done.output

    assert "no peer is quarantined" in b.xsc("peers", "quarantine", "ls").stdout
    b.app[NODE].admission.quarantine.put(a_id, "failed 5 audits")
    done = b.xsc("peers", "quarantine", "ls")
    assert done.exit_code == 0 and a_id in done.stdout and "failed 5 audits" in done.stdout, done.output
    done = b.xsc("peers", "quarantine", "rm", a_id[:8])  # a prefix will do, as the list shows the ids whole
    assert done.exit_code == 0 and f"lifted the quarantine of {a_id}" in done.stdout, done.output
    done = b.xsc("peers", "quarantine", "rm", a_id)
    assert done.exit_code != 0 and "not quarantined" in done.stderr, done.output


def test_a_prepayment_past_what_the_payee_can_collect_is_refused_without_a_strike(thread_node) -> None:
    a = thread_node("a", **QUIET)
    b = thread_node("b", health=QUIET["health"], peers={**QUIET["peers"], "quarantine_strikes": 2},
                    ledger={"stranger_credit": 0})
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    assert a.xsc("peers", "add", b.url).exit_code == 0
    assert b.xsc("market", "recognize", a_id, "1", "--credit", "3").exit_code == 0
    for _ in range(3):  # the user tries, as docs/peers.md shows, and again: `a` cannot know what `b` can collect
        done = a.xsc("ledger", "prepay", b_id, "0.5")
        assert done.exit_code == 1 and f"node {b_id} refused the prepayment" in done.stderr, done.output
        assert "--credit" not in done.stderr, done.output  # given already: credit does not make a prepayment count
    assert "no peer is quarantined" in b.xsc("peers", "quarantine", "ls").stdout
    assert a.xsc("peers", "add", b.url).exit_code == 0  # still served


def test_a_payment_the_payee_refuses_on_a_retry_is_dropped_and_its_hold_given_back(thread_node) -> None:
    a = thread_node("a", **QUIET, ledger={"settle_retry_interval": 0.2})
    b = thread_node("b", **QUIET, ledger={"stranger_credit": 0})
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    assert a.xsc("peers", "add", b.url).exit_code == 0
    b.app[NODE].admission.quarantine.put(a_id, "a test")  # refuses everything: the payment's fate is unknown to `a`
    done = a.xsc("ledger", "prepay", b_id, "0.5")
    assert done.exit_code == 1 and "quarantined" in done.stderr, done.output
    assert b.xsc("peers", "quarantine", "rm", a_id).exit_code == 0  # its retry now hears the payee's refusal
    eventually(lambda: json.loads(a.xsc("ledger", "balance", "--json").stdout)["held"] == 0,
               "the refused payment's hold to be given back", 20)
    assert json.loads(a.xsc("ledger", "verify", "--json").stdout)["ok"]


def test_a_prepayment_to_a_node_that_was_down_and_refuses_it_is_told_dropped_where_its_user_looks(thread_node) -> None:
    a = thread_node("a", **QUIET, ledger={"settle_retry_interval": 0.2})
    b = thread_node("b", **QUIET, ledger={"stranger_credit": 0})  # it will take no prepayment from `a`
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    assert a.xsc("peers", "add", b.url).exit_code == 0
    b.stop()
    done = a.xsc("ledger", "prepay", b_id, "0.5")
    (line,) = done.stderr.splitlines()
    assert done.exit_code == 1 and "is pending" in line and line.endswith("xsc ledger payments shows how it ends)"), line
    listed = a.xsc("ledger", "payments")
    assert listed.exit_code == 0 and "pending" in listed.stdout and b_id in listed.stdout, listed.output
    assert "1 pending (0.500000 credits held): xsc ledger payments" in a.xsc("node", "status").stdout

    b.start()  # its node is back, checks the claim and refuses it: `a`'s retry drops it
    eventually(lambda: json.loads(a.xsc("ledger", "payments", "--json").stdout)["dropped"], "the payment dropped", 20)
    info = json.loads(a.xsc("ledger", "payments", "--json").stdout)
    assert info["pending"] == [] and [(d["node"], d["amount"]) for d in info["dropped"]] == [(b_id, 500_000)], info
    listed = a.xsc("ledger", "payments", "--wide")
    said = " ".join(listed.stdout.split())
    assert "no payment to another node is pending" in said and f"0.500000 credits to node {b_id}" in said, said
    assert f"node {b_id} refused the prepayment: it owes this node nothing" in said, said
    assert "(a prepayment counts only out of what its payee owes its payer; nothing was paid)" in said, said
    status = a.xsc("node", "status").stdout
    assert "payments" in status and "1 dropped unpaid this week: xsc ledger payments" in status, status
    assert json.loads(a.xsc("ledger", "balance", "--json").stdout)["held"] == 0


def test_a_payment_for_work_its_payee_refuses_on_a_retry_is_told_in_the_payees_words_as_its_own(thread_node) -> None:
    a = thread_node("a", **QUIET, ledger={"settle_retry_interval": 0.2})
    b = thread_node("b", **QUIET)
    b_id = b.app[NODE].peers.identity.id
    assert a.xsc("peers", "add", b.url).exit_code == 0
    b.stop()
    with pytest.raises(PeerUnreachable):  # pending: retried until `b` answers
        a.submit(a.app[NODE].payments.pay(b_id, 700, {"fuel": 7}, "test:work")).result(30)
    b.start()  # back, it settles no work of the kind "test": it refuses the claim, and `a`'s retry drops it
    eventually(lambda: json.loads(a.xsc("ledger", "payments", "--json").stdout)["dropped"], "the payment dropped", 20)
    said = " ".join(a.xsc("ledger", "payments", "--wide").stdout.split())
    # who refused, and its words quoted as its own: its "this node" is `b`, not the node `a`'s user reads them on
    assert f"0.000700 credits to node {b_id} (test:work): node {b_id} refused it, saying: \"this node settles no " \
           "work of kind 'test' (job 'test:work')\" (nothing was paid: the credits it held are free again)" in said, said
    assert "refused POST" not in said, said


def test_a_pending_tab_is_listed_at_what_it_holds_not_at_its_cap(thread_node) -> None:
    a, b = thread_node("a", **QUIET), thread_node("b", **QUIET)
    assert a.xsc("peers", "add", b.url).exit_code == 0
    # A tab of calls holds what they spent and what those under way may spend, in steps up to its cap
    ledger = a.app[NODE].ledger
    tab = a.submit(ledger.authorize(a.app[CLIENT_IDENTITY], b.app[IDENTITY].public_key, 10_000, "test:tab", ttl=3600,
                                    hold=300)).result(30)
    held = json.loads(a.xsc("ledger", "balance", "--json").stdout)["held"]
    (pending,) = json.loads(a.xsc("ledger", "payments", "--json").stdout)["pending"]
    assert (pending["authorization"], pending["amount"]) == (tab.id.hex(), held) == (tab.id.hex(), 300), pending
    assert pending["cap"] == 10_000, pending  # the most its payee may claim, apart
    assert "1 pending (0.000300 credits held): xsc ledger payments" in a.xsc("node", "status").stdout
    assert "0.000300" in a.xsc("ledger", "payments", "--wide").stdout.split()
    # a tab of a function placed on the market: its reference holds a node id, shown whole within 80 columns
    job = f"compute:rtab:fn:{a.app[NODE].peers.identity.id}:mkt"
    a.submit(ledger.authorize(a.app[CLIENT_IDENTITY], b.app[IDENTITY].public_key, 10_000, job, ttl=3600,
                              hold=5)).result(30)
    for env in ({"COLUMNS": "80"}, {}):  # on a terminal of 80 columns, and piped
        lines = a.xsc("ledger", "payments", env=env).stdout.splitlines()
        assert f"    job {job}" in lines and f"    node {b.app[NODE].peers.identity.id}," in lines, "\n".join(lines)
        assert all(len(line) <= 80 for line in lines if not line.startswith("    job ")), lines


def test_a_provider_that_wants_prepayment_is_passed_over_and_the_call_and_the_job_run_elsewhere(thread_node) -> None:
    a = thread_node("a", **QUIET, market={"compute_ask_floor": 30, "compute_ask_ceiling": 40})
    b = thread_node("b", **QUIET, ledger={"stranger_credit": 0})  # cheaper than `a`, and `a` is a stranger to it
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    assert a.xsc("peers", "add", b.url).exit_code == 0
    eventually(lambda: any(o["owner"] == b_id for k in json.loads(a.xsc("market", "book", "--json").stdout)["books"]
                           if k["kind"] == "compute" for o in k["asks"]), "b's compute offer in a's book", 30)

    done = a.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["provider"] == a_id
    done = a.xsc("compute", "run", str(WASM / "wc.wasm"), "--json", input=b"a b\nc\n")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["provider"] == a_id
    # b's refusal is remembered as its terms: the calls and the job after it never ask b again
    for n in range(3):
        done = a.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", str(n), "2", "--json")
        assert done.exit_code == 0 and json.loads(done.stdout)["provider"] == a_id, done.output
    done = a.xsc("compute", "run", str(WASM / "wc.wasm"), "--json", input=b"a b\nc\n")
    assert done.exit_code == 0 and json.loads(done.stdout)["provider"] == a_id, done.output
    assert 'xsc_peer_refusals_total{code="prepayment-required"} 1.0' in b.app[METRICS].render().decode()


def test_a_job_a_stranger_provider_will_not_run_unpaid_names_the_command_that_pays_it(thread_node) -> None:
    a = thread_node("a", **QUIET, market={"offer_compute": False})  # its jobs run elsewhere: on `b`, or not at all
    b = thread_node("b", **QUIET, ledger={"stranger_credit": 0})  # and `a` is a stranger to it
    b_id = b.app[NODE].peers.identity.id
    assert a.xsc("peers", "add", b.url).exit_code == 0
    eventually(lambda: any(o["owner"] == b_id for k in json.loads(a.xsc("market", "book", "--json").stdout)["books"]
                           if k["kind"] == "compute" for o in k["asks"]), "b's compute offer in a's book", 30)

    # A job is refused as a call is: the provider's 402 relayed with the command that pays it, not a peer's fault.
    for args in (("invoke", str(WASM / "add.wasm"), "add", "1", "2"), ("run", str(WASM / "wc.wasm"))):
        done = a.xsc("compute", *args, input=b"a b\nc\n")
        assert done.exit_code == 1, done.output
        (line,) = done.stderr.strip().splitlines()
        what = args[0].replace("invoke", "call").replace("run", "job")
        assert line.startswith(f"xsc: error: the provider wants prepayment for this {what} ("), line
        # the amount the provider said is missing, checked, and the provider's id once, whole, in the command that
        # pays it: the command works as written
        command = re.search(rf"\(([\d.]+) credits\) \(.* xsc ledger prepay {b_id} ([\d.]+)\)$", line)
        assert command and command[1] == command[2] and Decimal(command[1]) > 0, line
        assert line.count(b_id) == 1 and a.app[NODE].peers.identity.id not in line and len(line) < 200, line
    module = hashlib.sha256((WASM / "wc.wasm").read_bytes()).hexdigest()  # deployed by the run above
    with pytest.raises(PrepaymentRequired):  # the API's answer: 402 prepayment-required
        NodeClient(a.url, a.token).request("POST", "/v1/compute/jobs", json_body={"module": module})
