"""`store check` says it looks at presence and points to verify; `verify` names the bad blocks
by share and segment; `rm` names the holders it did not reach."""

from __future__ import annotations

import json
import os

from xsc import keys
from xsc.node.appkeys import NODE
from xsc.storage import Capability
from xsc.storage.core import erasure

from tests.support.peers import offering_pair
from tests.support.waiting import eventually

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}

NARROW = {"COLUMNS": "80"}


def test_check_says_present_and_verify_names_bad_blocks(thread_node) -> None:
    node = thread_node(storage={"segment_size": 64 * 1024})
    cap = node.xsc("store", "put", "-", input=os.urandom(5 * 64 * 1024)).stdout.strip()
    si = Capability.parse(cap).storage_index
    store = node.app[NODE].store
    for share, segment in [(1, 3), (4, 0)]:  # flip a byte of two blocks (where a block is read first)
        block = bytearray(store.get_block(si, share, segment))
        block[10] ^= 0xFF
        store.blocks.put(keys.block(si, share, segment), bytes(block))

    check = node.xsc("store", "check", cap)
    assert check.exit_code == 0, check.output
    assert "intact" not in check.stdout
    assert "6 of 6 shares present" in check.stdout and "xsc store verify" in check.stdout
    other = node.xsc("store", "put", "-", input=b"other").stdout.strip()
    assert store.delete_share(Capability.parse(other).storage_index, 2)
    check = node.xsc("store", "check", other, env={"COLUMNS": "80"})
    assert check.stdout.count("missing") == 1 and "detail" not in check.stdout, check.stdout  # said once
    assert check.exit_code == 1 and check.stdout.splitlines()[-1] == f"    xsc store repair {other}", check.stdout

    verify = node.xsc("store", "verify", cap)
    assert verify.exit_code == 1  # not healthy
    assert "bad block in segment 3" in verify.stdout and "bad block in segment 0" in verify.stdout
    said = verify.stdout.splitlines()  # (piped: the sentence wrapped to 80 columns between words)
    assert [" ".join(said[-3:-1]), said[-1]] == [  # and the command that mends it, the capability whole
        "4 of 6 shares intact: recoverable; bad blocks: share 1 segment 3, share 4 segment 0; rebuild them with:",
        f"    xsc store repair {cap}"], verify.stdout
    assert all(len(line) <= 80 for line in said[-3:-1]), verify.stdout
    report = json.loads(node.xsc("store", "verify", cap, "--json").stdout)
    assert {s["share"]: s["bad_blocks"] for s in report["shares"] if s["bad_blocks"]} == {1: [3], 4: [0]}

    repair = node.xsc("store", "repair", cap, "--wide", env={"COLUMNS": "30"})  # as check and verify take it
    assert repair.exit_code == 0, repair.output
    lines = repair.stdout.splitlines()
    assert lines[-1] == "repaired shares 1, 4" and len(lines) == 1 + 6 + 1, lines  # a row a share
    assert node.xsc("store", "repair", cap).stdout.splitlines()[-1] == "nothing to repair"


def test_rm_names_a_holder_it_did_not_reach_and_what_becomes_of_its_shares(thread_node, tmp_path) -> None:
    a, b, b_id = offering_pair(thread_node)
    a_id = json.loads(a.xsc("node", "status", "--json").stdout)["id"]
    (tmp_path / "f").write_bytes(os.urandom(70_000))  # a file: its size known, its shares placed on the market
    put = json.loads(a.xsc("store", "put", str(tmp_path / "f"), "--avoid", a_id, "--json").stdout)
    assert b_id in put["placement"], put.get("kept_home")
    cap = put["capability"]
    b.stop()
    removed = a.xsc("store", "rm", cap)
    assert removed.exit_code == 0 and removed.stdout.strip() == f"removed {cap}", removed.output
    said = " ".join(removed.stderr.split())
    assert said.startswith(f"node {b_id} was not reached (") and said.endswith(
        "its shares of the file are deleted once it answers (asked at each start of this node and every "
        "storage.gc_interval); nothing more is paid for them"), said


def test_check_verify_and_repair_of_shares_on_a_node_that_is_down_fit_80_columns_and_name_it(thread_node,
                                                                                            tmp_path) -> None:
    a, b, b_id = offering_pair(thread_node)
    a_id = json.loads(a.xsc("node", "status", "--json").stdout)["id"]
    (tmp_path / "f").write_bytes(os.urandom(70_000))
    put = json.loads(a.xsc("store", "put", str(tmp_path / "f"), "--avoid", a_id, "--json").stdout)
    cap, on_b = put["capability"], [s for s, node in enumerate(put["placement"]) if node == b_id]
    assert len(on_b) > erasure.M, put["placement"]  # too many on b for the file to be rebuilt without it
    b.stop()
    for command in ("check", "verify"):
        shown = a.xsc("store", command, cap, env=NARROW)
        assert shown.exit_code == 1, shown.output  # not healthy
        lines = shown.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), shown.stdout
        assert sum(b_id in line.split() for line in lines) == len(on_b)  # on each of its shares' rows, whole
        assert "unreachable" in shown.stdout
    repair = a.xsc("store", "repair", cap, env=NARROW)
    assert repair.exit_code != 0 and repair.stdout == ""
    said = repair.stderr.strip()
    assert len(said.splitlines()) == 1 and said.startswith("xsc: error: only ")
    assert f"{', '.join(map(str, on_b))} on node {b_id}" in said and "nothing was changed" in said
    assert "xsc store repair" in said and "xsc health status" in said
    assert a.xsc("store", "check", cap, "--json").exit_code == 1  # nothing of the file's record was changed
    assert json.loads(a.xsc("store", "check", cap, "--json").stdout)["shares"][on_b[0]]["node"] == b_id


def test_the_shares_rm_could_not_delete_are_deleted_once_their_holder_is_back(thread_node, tmp_path) -> None:
    """A removal asks again, at each start and every storage.gc_interval, the holders it did not reach: a holder back
    up drops the shares and gives back on its line the lease it will not hold."""
    a, b, b_id = offering_pair(thread_node)
    a_id = json.loads(a.xsc("node", "status", "--json").stdout)["id"]
    (tmp_path / "f").write_bytes(os.urandom(70_000))
    put = json.loads(a.xsc("store", "put", str(tmp_path / "f"), "--avoid", a_id, "--json").stdout)
    assert b_id in put["placement"], put.get("kept_home")
    b.stop()
    assert a.xsc("store", "rm", put["capability"]).exit_code == 0
    b.start()
    # The removal found b gone, so a probed it and counts it down: the note waits for a probe to find b back up.
    assert a.xsc("health", "probe").exit_code == 0
    held = b.app[NODE].store
    assert held.shares_held > 0  # kept while nobody asked
    used = b.app[NODE].trust.line(a_id)["used"]
    a.stop()
    a.start()  # its start asks again
    eventually(lambda: held.shares_held == 0, "the shares deleted on the holder back up", timeout=20)
    assert b.app[NODE].trust.line(a_id)["used"] < used
    eventually(lambda: a.app[NODE].store.strays() == [], "the note of the copies to delete dropped")


def test_check_of_a_file_kept_whole_here_names_this_node_as_where_each_share_is(thread_node) -> None:
    node = thread_node()
    me = node.app[NODE].peers.identity.id
    cap = node.xsc("store", "put", "-", input=b"kept at home\n").stdout.strip()
    check = node.xsc("store", "check", cap, "--wide")
    assert check.exit_code == 0, check.output
    lines = check.stdout.splitlines()
    assert lines[0].split() == ["share", "status", "node", "node", "state"], check.stdout
    assert [line.split() for line in lines[1:7]] == [[str(s), "present", me, "this", "node"] for s in range(6)], \
        check.stdout
    assert {s["node"] for s in json.loads(node.xsc("store", "check", cap, "--json").stdout)["shares"]} == {me}


def test_check_from_another_node_gives_shares_no_node_was_found_holding_no_node_state(thread_node, tmp_path) -> None:
    a, b, b_id = offering_pair(thread_node)
    a_id = json.loads(a.xsc("node", "status", "--json").stdout)["id"]
    (tmp_path / "f").write_bytes(os.urandom(70_000))
    put = json.loads(a.xsc("store", "put", str(tmp_path / "f"), "--json").stdout)
    on_b = {s for s, node in enumerate(put["placement"]) if node == b_id}
    assert 0 < len(on_b) < 6, put["placement"]  # the manifest is found on b, the rest of the shares nowhere
    a.stop()
    shown = b.xsc("store", "check", put["capability"], "--wide")
    assert shown.exit_code == 1, shown.output
    rows = {int(line.split()[0]): line for line in shown.stdout.splitlines()[1:7]}
    for share, row in rows.items():
        if share in on_b:
            assert row.split()[1:4] == ["present", b_id, "this"], row
        elif "(none found)" in row:  # not "this node": no node holds it that this one found
            assert row.split()[1:5] == ["missing", "(none", "found)", "-"], row
        else:  # the search named its holder (what a has published of its shares reached b first): down
            assert row.split()[1:4] == ["missing", a_id, "DOWN"], row


def test_check_calls_a_file_whose_shares_are_all_on_one_node_at_risk_while_another_node_is_up(thread_node) -> None:
    alice = thread_node("alice", **QUIET)
    cap = alice.xsc("store", "put", "-", input=b"kept whole\n").stdout.strip()  # a stream: all 6 shares here
    alone = alice.xsc("store", "check", cap)
    assert alone.exit_code == 0 and "6 of 6 shares present: healthy" in " ".join(alone.stdout.split()), alone.output
    bob = thread_node("bob", **QUIET)
    assert alice.xsc("peers", "add", bob.url).exit_code == 0  # a node up that could hold some of them
    checked = alice.xsc("store", "check", cap)
    said = " ".join(checked.stdout.split())
    assert checked.exit_code == 0 and "6 of 6 shares present: at risk (blocks not read" in said, checked.output
    assert "all 6 shares are on this node: the file does not survive its loss, while 1 other node is up; put it " \
        "again from a file to spread its shares (then `xsc store rm` this capability):" in said, said
    assert checked.stdout.splitlines()[-1] == f"    xsc store get {cap} -o FILE && xsc store put FILE"
    report = json.loads(alice.xsc("store", "check", cap, "--json").stdout)
    assert report["healthy"] and report["at_risk"].startswith("all 6 shares are on this node"), report
    # verify --all says so too, the file whole (exit 0), why in its detail, and where to read how to spread it
    every = alice.xsc("store", "verify", "--all")
    lines = every.stdout.splitlines()
    assert every.exit_code == 0 and lines[1].split()[:2] == ["at", "risk"], every.output
    assert lines[1].split()[5] == cap and lines[1].endswith(f"  {report['at_risk']}"), every.stdout  # (piped: a line)
    assert " ".join(lines[2:]) == "1 file: 1 at risk; `xsc store check CAP` of an at-risk file says how to spread " \
        "its shares", every.stdout
    narrow = alice.xsc("store", "verify", "--all", env={"COLUMNS": "80"}).stdout.splitlines()
    assert narrow[1].split()[:2] == ["at", "risk"] and narrow[2].strip().startswith(cap), narrow
    (found,) = json.loads(alice.xsc("store", "verify", "--all", "--json").stdout)["files"]
    assert found["state"] == "healthy" and found["at_risk"] == report["at_risk"], found
    elsewhere = json.loads(bob.xsc("store", "check", cap, "--json").stdout)  # Bob's node sees them all on Alice's
    assert elsewhere["at_risk"].startswith(f"all 6 shares are on node {alice.app[NODE].peers.identity.id}: "), elsewhere
