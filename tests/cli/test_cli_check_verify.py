"""`store check` says it looks at presence and points to verify; `verify` names the bad blocks
by share and segment; `rm` names the holders it did not reach."""

from __future__ import annotations

import json
import os

from xsc import keys
from xsc.node.appkeys import NODE
from xsc.storage import Capability

from tests.support.peers import offering_pair


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

    verify = node.xsc("store", "verify", cap)
    assert verify.exit_code == 1  # not healthy
    assert "bad block in segment 3" in verify.stdout and "bad block in segment 0" in verify.stdout
    assert verify.stdout.splitlines()[-1] == (
        "4 of 6 shares intact: recoverable; bad blocks: share 1 segment 3, share 4 segment 0")
    report = json.loads(node.xsc("store", "verify", cap, "--json").stdout)
    assert {s["share"]: s["bad_blocks"] for s in report["shares"] if s["bad_blocks"]} == {1: [3], 4: [0]}

    repair = node.xsc("store", "repair", cap)
    assert repair.exit_code == 0, repair.output
    assert repair.stdout.splitlines()[-1] == "repaired shares 1, 4"
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
        "it keeps its shares of the file until their lease ends or they go unpaid (nothing more is paid for them)"), said
