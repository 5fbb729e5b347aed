"""`xsc compute invoke --cost` of a call the market placed on another node names that node."""

from __future__ import annotations

import json
import re

from xsc.node.appkeys import NODE

from tests.support.compute import WASM
from tests.support.waiting import eventually

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


def test_a_remote_invokes_cost_line_names_its_provider_whole(thread_node) -> None:
    alice = thread_node("alice", **QUIET, market={"offer_compute": False})  # her calls run on Bob's node
    bob = thread_node("bob", **QUIET)
    bob_id = bob.app[NODE].peers.identity.id
    assert alice.xsc("peers", "add", bob.url).exit_code == 0
    eventually(lambda: any(o["owner"] == bob_id for k in json.loads(alice.xsc("market", "book", "--json").stdout)
                           ["books"] if k["kind"] == "compute" for o in k["asks"]), "Bob's compute offer", 30)
    done = alice.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2", "--cost", env={"COLUMNS": "80"})
    assert done.exit_code == 0 and done.stdout == "3\n", done.output
    line = done.stderr.strip()
    assert re.fullmatch(rf"charge: \d+\.\d{{6}} credits to node {bob_id} = [\d,]+ fuel at \d+ micro-credits per "
                        r"million \+ .* \(rounded up\)", line), line
    # A call run here names no node: it is this node's own.
    local = bob.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2", "--cost")
    assert local.exit_code == 0 and local.stderr.startswith("charge: ") and " to node " not in local.stderr, local.output
