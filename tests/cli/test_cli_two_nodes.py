"""Two people, two nodes, from the CLI: the user of one runs a job the other's node provides, and each reads
from the CLI where it ran and what was paid for it."""

from __future__ import annotations

import json
import logging
import re
import threading

from xsc.node.appkeys import NODE

from tests.support.compute import WASM
from tests.support.waiting import eventually

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


def test_a_job_run_on_the_other_node_names_it_and_that_node_lists_what_it_earned(thread_node) -> None:
    alice = thread_node("alice", **QUIET, market={"offer_compute": False})  # her jobs run on Bob's node
    bob = thread_node("bob", **QUIET)
    bob_id = bob.app[NODE].peers.identity.id
    added = alice.xsc("peers", "add", bob.url)
    assert added.exit_code == 0 and added.stdout.endswith(" (1 peer known)\n"), added.output
    eventually(lambda: any(o["owner"] == bob_id for k in json.loads(alice.xsc("market", "book", "--json").stdout)
                           ["books"] if k["kind"] == "compute" for o in k["asks"]), "Bob's compute offer", 30)

    done = alice.xsc("compute", "run", str(WASM / "wc.wasm"), "--json", input=b"a b\nc\n")
    assert done.exit_code == 0, done.output
    ran = json.loads(done.stdout)
    assert ran["provider"] == bob_id
    shown = alice.xsc("compute", "job", ran["id"])
    assert f"provider:   {bob_id}" in shown.stdout.splitlines(), shown.output

    # Bob's earnings: `history node` as `balance node` names his node's account.
    def earned() -> list[dict]:
        return [e for e in json.loads(bob.xsc("ledger", "history", "node", "--json").stdout) if e["kind"] == "receipt"]

    assert eventually(earned, "Bob's receipt for the job", 30)
    # the job's id in Bob's receipt is Alice's job: his node says where its record is, and where his receipt is
    there = bob.xsc("compute", "job", ran["id"])
    assert there.exit_code == 1 and there.stderr.startswith(f"xsc: error: no job {ran['id']} of this node's user ("), \
        there.output
    assert there.stderr.endswith("another node is that node's, its receipt here: xsc ledger history node)\n"), there.stderr
    assert bob.xsc("ledger", "history", "node", "--json").stdout == \
        bob.xsc("ledger", "history", "--account", "node", "--json").stdout
    twice = bob.xsc("ledger", "history", "node", "--account", "client")
    assert twice.exit_code == 2 and "two accounts named" in twice.stderr, twice.output

    # The id Bob's node shows for his half (his receipt's) finds Alice's half, her payment, on her node too.
    receipt = earned()[0]["id"]

    def paid() -> list[dict]:
        return [e for e in json.loads(alice.xsc("ledger", "history", "--json").stdout) if e["kind"] == "payment"]

    (payment,) = eventually(paid, "Alice's payment for the job", 30)
    for ref in (receipt, receipt[:8]):
        shown = json.loads(alice.xsc("ledger", "show", ref, "--json").stdout)
        assert (shown["id"], shown["kind"], shown["receipt"]) == (payment["id"], "payment", receipt), shown
    missing = bob.xsc("ledger", "show", payment["id"])  # Bob's node holds no copy of Alice's half
    assert missing.exit_code == 1 and missing.stderr.endswith(
        "(see them with: xsc ledger history (a transfer's payment is found on either node by its receipt's id, the "
        "payee's entry id))\n"), missing.output

    # Run again (the same run asked: its executions counted), its summary names the node that ran it, whole, piped
    # or on a terminal.
    for env in ({}, {"COLUMNS": "80"}):
        again = alice.xsc("compute", "run", str(WASM / "wc.wasm"), input=b"a b\nc\n", env=env)
        said = " ".join(again.stderr.split())
        assert again.exit_code == 0, again.output
        assert re.match(rf"job \w+ ran on node {bob_id} \(executions: \d+\), charged ", said), again.output
        assert bob_id in again.stderr.split(), again.stderr


def test_a_job_past_the_users_credit_names_the_flags_and_the_setting_that_let_it_run(thread_node) -> None:
    # A call and a job both hold their worst case first: refused alike, here and sent to another node.
    tight = {"credit_limit": 100_000}  # 0.1 credits: less than a default budget
    alone = thread_node("alone", **QUIET, ledger=tight)
    alice = thread_node("alice", **QUIET, ledger=tight, market={"offer_compute": False})
    bob = thread_node("bob", **QUIET)
    bob_id = bob.app[NODE].peers.identity.id
    assert alice.xsc("peers", "add", bob.url).exit_code == 0
    eventually(lambda: any(o["owner"] == bob_id for k in json.loads(alice.xsc("market", "book", "--json").stdout)
                           ["books"] if k["kind"] == "compute" for o in k["asks"]), "Bob's compute offer", 30)
    for user in (alone, alice):
        for args in (("invoke", str(WASM / "add.wasm"), "add", "1", "2"), ("run", str(WASM / "wc.wasm"))):
            done = user.xsc("compute", *args, input=b"a b\nc\n")
            (line,) = done.stderr.strip().splitlines()
            assert done.exit_code == 1 and line.startswith("xsc: error: insufficient credit: a "), done.output
            assert line.endswith("(a job is charged only what it uses), or raise the limit: xsc config set "
                                 "ledger.credit_limit MICRO_CREDITS)" if args[0] == "run" else
                                 "xsc config set ledger.credit_limit MICRO_CREDITS)"), line
    done = alice.xsc("compute", "run", str(WASM / "wc.wasm"), "--fuel", "1000000", input=b"a b\nc\n")
    assert done.exit_code == 0 and done.stdout == "2 3 6\n", done.output  # asking for less lets it run


def test_a_get_of_a_file_whose_holder_is_down_names_that_node_not_a_wrong_capability(thread_node) -> None:
    alice = thread_node("alice", **QUIET)
    bob = thread_node("bob", **QUIET)
    alice_id = alice.app[NODE].peers.identity.id
    assert bob.xsc("peers", "add", alice.url).exit_code == 0
    cap = alice.xsc("store", "put", "-", input=b"alice's notes\n").stdout.strip()  # every share on Alice's node
    assert bob.xsc("store", "get", cap).stdout == "alice's notes\n"
    alice.stop()
    probed = bob.xsc("health", "probe", "--json")  # Bob's node sees Alice's down, and says so in its exit status
    assert probed.exit_code == 1 and not json.loads(probed.stdout)["results"][0]["ok"], probed.output
    got = bob.xsc("store", "get", cap)
    (line,) = got.stderr.splitlines()
    assert got.exit_code == 1 and f"node {alice_id}, which it knows, is not up" in line, got.output
    assert line.endswith("(get it again once that node is up (`xsc health status` shows it), or check the "
                         "capability)"), line
    for action in ("check", "verify", "repair"):  # each names its own command to run again
        done = bob.xsc("store", action, cap)
        (line,) = done.stderr.splitlines()
        assert done.exit_code == 1 and f"node {alice_id}, which it knows, is not up" in line, done.output
        assert line.endswith(f"(run xsc store {action} again once that node is up (`xsc health status` shows it), "
                             "or check the capability)"), line


def test_a_get_whose_holder_went_down_since_its_last_probe_names_that_node(thread_node) -> None:
    alice = thread_node("alice", **QUIET)  # no probe says Alice is down: the get's own tries do
    bob = thread_node("bob", **QUIET)
    alice_id = alice.app[NODE].peers.identity.id
    assert bob.xsc("peers", "add", alice.url).exit_code == 0
    read = alice.xsc("store", "put", "-", input=b"read once before\n").stdout.strip()
    never = alice.xsc("store", "put", "-", input=b"never read by Bob\n").stdout.strip()
    assert bob.xsc("store", "get", read).stdout == "read once before\n"  # Bob's node knows where its shares are
    alice.stop()
    for cap in (read, never):
        got = bob.xsc("store", "get", cap)
        assert got.exit_code == 1 and got.stderr == (
            "xsc: error: this node holds no file with that capability, and no node it could ask holds a share of it; "
            f"node {alice_id}, which it knows, is not up (get it again once that node is up (`xsc health status` "
            "shows it), or check the capability)\n"), got.output


def test_peers_ls_shows_a_peer_a_request_found_stopped_down_with_its_probes_age(thread_node) -> None:
    alice = thread_node("alice", **QUIET)  # probes once an hour: only Bob's failed get can tell his node
    bob = thread_node("bob", **QUIET)
    alice_id = alice.app[NODE].peers.identity.id
    assert bob.xsc("peers", "add", alice.url).exit_code == 0
    cap = alice.xsc("store", "put", "-", input=b"held by Alice's node\n").stdout.strip()

    def alices() -> dict:
        return next(p for p in json.loads(bob.xsc("peers", "ls", "--json").stdout)["peers"] if p["id"] == alice_id)

    assert alices()["up"] is True and alices()["last_probe"] is not None  # probed as Bob added her
    row = next(line for line in bob.xsc("peers", "ls", "--wide").stdout.splitlines() if line.startswith(alice_id))
    assert row.split()[1] == "up" and " s ago)" in row, row  # up as of its last probe, and when that was
    alice.stop()
    assert bob.xsc("store", "get", cap).exit_code == 1  # a request to Alice's node that finds no answer
    eventually(lambda: alices()["up"] is False, "Bob's node to probe Alice's at once, not at its next round")
    row = next(line for line in bob.xsc("peers", "ls", "--wide").stdout.splitlines() if line.startswith(alice_id))
    assert row.split()[1] == "DOWN" and " s ago)" in row, row


def test_a_get_whose_holder_hangs_asks_that_node_once_not_once_a_share(thread_node, caplog) -> None:
    alice = thread_node("alice", **QUIET)
    bob = thread_node("bob", health=QUIET["health"], peers={**QUIET["peers"], "request_timeout": 1.0})
    alice_id = alice.app[NODE].peers.identity.id
    assert bob.xsc("peers", "add", alice.url).exit_code == 0
    cap = alice.xsc("store", "put", "-", input=b"six shares on Alice's node\n").stdout.strip()
    assert bob.xsc("store", "get", cap).stdout == "six shares on Alice's node\n"
    released = threading.Event()

    async def hang() -> None:  # Alice's node stops answering, as a process stopped (SIGSTOP) or cut off would
        released.wait()

    alice.submit(hang())
    try:
        with caplog.at_level(logging.INFO, logger="xsc.storage.files"):
            got = bob.xsc("store", "get", cap)
    finally:
        released.set()
    assert got.exit_code == 1 and f"node {alice_id}, which it knows, is not up" in got.stderr, got.output
    asked = [r for r in caplog.records if f"not read from node {alice_id}" in r.getMessage()]
    assert len(asked) == 1, [r.getMessage() for r in asked]  # one request's timeout, not one for each of its 6 shares
