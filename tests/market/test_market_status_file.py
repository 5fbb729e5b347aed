"""`xsc market status --file CAP`: one file's storage deals, those a repair ended among them, on two people's nodes
(real processes, own data dirs): the holder a share was moved away from is seen with its ended deal."""

from __future__ import annotations

import json
import os

from tests.support.people import TRUSTING, join, person, put, started  # noqa: F401 (a fixture)
from xsc.storage.core.capability import Capability


def test_a_files_deals_show_the_one_a_repair_ended_and_its_old_holder(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started, env=TRUSTING)
    b, id_b = person(tmp_path, "B", started, peer=a, env=TRUSTING)
    join(a, b, [id_b])
    done = put(a, os.urandom(200_000))
    cap, moved = done["capability"], [s for s, node in enumerate(done["placement"]) if node == id_b]
    assert len(moved) == 2, done["placement"]
    # A forgets B: its shares there are unreadable to A, and a repair rebuilds them on A (the only provider left).
    assert a.xsc("peers", "rm", id_b).returncode == 0
    repaired = a.xsc("store", "repair", cap)
    assert repaired.returncode == 0, repaired.stderr.decode()

    shown = json.loads(a.xsc("market", "status", "--file", cap, "--json").stdout)
    assert shown["node"] == id_a and {d["node"] for d in shown["deals"]} == {id_a}, shown
    assert sorted((d["share"], d["node"], d["ended"]) for d in shown["ended"]) == [(s, id_b, True) for s in moved]
    si = Capability.parse(cap).storage_index.hex()
    assert json.loads(a.xsc("market", "status", "--file", si, "--json").stdout) == shown  # its storage index too
    text = a.xsc("market", "status", "--file", cap, env={"COLUMNS": "80"})
    said = " ".join(text.stdout.decode().split())
    assert text.returncode == 0 and f"holder {id_b}" in said and said.count(" yes ") == 2, said
    assert "2 deals ended when a repair moved their shares to another holder" in said, said
    assert all(len(line) <= 80 for line in text.stdout.decode().splitlines()), text.stdout.decode()

    bad = a.xsc("market", "status", "--file", "zz")
    assert bad.returncode == 2 and "invalid value for '--file': give a capability" in bad.stderr.decode()
    elsewhere = " ".join(b.xsc("market", "status", "--file", cap).stdout.decode().split())
    assert elsewhere == (f"no storage deals of file {si} here (deals are kept on the node that put the file: "
                         "xsc store ls)"), elsewhere
