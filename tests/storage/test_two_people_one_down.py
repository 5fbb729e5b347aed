"""Two people, each with a node of their own (real processes, own data dirs), one of them down: the other's reports
of a file whose shares are on the node down name that node, not "no node holds it"."""

from __future__ import annotations

import json
import os

from tests.support.people import TRUSTING, join, person, started  # noqa: F401 (a fixture)
from tests.support.peers import peer_health
from tests.support.waiting import eventually


def test_a_file_whose_holder_is_down_is_reported_with_that_node_named(tmp_path, started) -> None:
    a, id_a = person(tmp_path, "A", started, env=TRUSTING)
    b, id_b = person(tmp_path, "B", started, peer=a, env=TRUSTING)
    join(a, b, [id_b])
    path = tmp_path / "f"
    path.write_bytes(os.urandom(200_000))
    done = a.xsc("store", "put", str(path), "--json")
    assert done.returncode == 0, done.stderr.decode()
    cap, placement = json.loads(done.stdout)["capability"], json.loads(done.stdout)["placement"]
    on_a = [s for s, node in enumerate(placement) if node == id_a]
    assert len(on_a) == 4 and placement.count(id_b) == 2, placement
    a.stop()
    b.stop()  # B, restarted, remembers no node it found holding the file: it would ask A, which is down
    b.start(90)
    eventually(lambda: (peer_health(b, id_a) or {}).get("up") is False, "B to see A down", 60)

    check = b.xsc("store", "check", cap, "--json")
    assert check.returncode == 1, check.stderr.decode()
    report = json.loads(check.stdout)
    unfound = [s for s in report["shares"] if s["share"] in on_a]
    assert all(s["node"] == "(none found)" for s in unfound) and report["intact"] == 2, report
    for share in unfound:  # the four shares on A: B could not ask A, and says so
        assert share["detail"] == (f"unreadable: no node this one could ask holds it; node {id_a}, which it knows, "
                                   "is not up"), share
    table = " ".join(b.xsc("store", "check", cap).stdout.decode().split())  # (piped: wrapped to 80 columns)
    assert "on node (none found)" not in table and f"node {id_a}, which it knows, is not up" in table, table

    got = b.xsc("store", "get", cap, "-o", str(tmp_path / "out"))
    said = got.stderr.decode()
    assert got.returncode == 1 and not (tmp_path / "out").exists(), said
    assert said.startswith("xsc: error: only 2 of 6 shares are intact (4 are needed): shares "  # named together
                           f"{', '.join(map(str, on_a))} unreadable: no node this one could ask holds it; node {id_a}, "
                           "which it knows, is not up ("), said
    assert "retry when they are back" in said and len(said.strip().splitlines()) == 1, said

    a.start(90)
    eventually(lambda: b.xsc("store", "get", cap, "-o", str(tmp_path / "out")).returncode == 0, "B to read A's file")
    assert (tmp_path / "out").read_bytes() == path.read_bytes()
