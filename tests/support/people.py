"""Two or three people, each with a node of their own: separate data dirs, node processes joined with `--peer`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .nodes import NodeProcess, kill_all
from .peers import FAST, api, node_id, peer_health
from .waiting import eventually

# A person's node as `xsc node start` runs it: strangers get no credit (ledger.stranger_credit 0, the default).
STRANGERS = {**FAST, "XSC_LEDGER_STRANGER_CREDIT": "0"}
# Nodes that extend each other credit, for tests of placement alone (strangers: tests/market/test_strangers.py).
# A peer that misses one probe counts as down and gets no shares: probes may take the default 5 s on a loaded box.
TRUSTING = {"XSC_LEDGER_STRANGER_CREDIT": str(10**15), "XSC_HEALTH_PROBE_TIMEOUT": "5"}


@pytest.fixture
def started():
    """The people's nodes a test started (`person` appends each), killed at its end."""
    nodes: list = []
    yield nodes
    kill_all(nodes)


def offers_storage(node, other: str) -> bool:
    """Does `node`'s market book hold a storage offer of node `other`?"""
    status, body = api(node, "GET", "/v1/market/book?kind=storage")
    assert status == 200, body
    return any(a["owner"] == other for row in body["books"] for a in row["asks"])


def join(node, joined, ids: list[str]) -> None:
    """Wait until `node` sees each of `ids` up and holds its storage offer."""
    eventually(lambda: all((peer_health(node, i) or {}).get("up") and offers_storage(node, i) for i in ids),
               f"{node.name} to see {len(ids)} peer(s) up, their offers in its book", timeout=90)


def person(root: Path, name: str, started: list, peer: NodeProcess | None = None,
           env: dict | None = None) -> tuple[NodeProcess, str]:
    """One person's node (data dir root/name), joined to `peer` if given: (the node, its id)."""
    node = NodeProcess(root / name, args=["--peer", peer.url] if peer else [], env={**STRANGERS, **(env or {})})
    started.append(node)
    node.start(90)
    return node, node_id(node)


def put(node, data: bytes, *extra: str) -> dict:
    """`xsc store put` of `data` on `node` (a file beside its data dir), its JSON answer."""
    path = node.data_dir.parent / f"f-{os.urandom(4).hex()}"
    path.write_bytes(data)
    done = node.xsc("store", "put", str(path), "--json", *extra)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)
