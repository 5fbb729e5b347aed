"""The hash table between real node processes: a capability is read from a node that never stored any of it, which
finds the file's holders through the table, and a node is found by its id."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.peers import FAST, api, node_id
from tests.support.waiting import eventually
from xsc.devnet import Devnet
from xsc.storage.core.capability import Capability

N = 8
ENV = {**FAST, "XSC_PEERS_DHT_INTERVAL": "0.2"}


def dht(node) -> dict:
    status, body = api(node, "GET", "/v1/node/status")
    assert status == 200, body
    return body["dht"]


@pytest.mark.slow
def test_a_capability_is_read_from_a_node_that_never_stored_it_through_the_hash_table(tmp_path) -> None:
    net = Devnet(tmp_path, N, env=ENV, name="n{}")
    try:
        net.spawn().wait_listening(90)
        nodes = list(net)
        ids = [node_id(n) for n in nodes]
        assert not net.wait_peered(60), "every node to know every other"
        eventually(lambda: all(dht(n)["contacts"] >= N - 1 for n in nodes), "every node to join the table", 60)
        data = os.urandom(300_000)
        src = tmp_path / "file.bin"
        src.write_bytes(data)
        put = nodes[0].xsc("store", "put", str(src), "--json", "--spread")
        assert put.returncode == 0, put.stderr.decode()
        placed = json.loads(put.stdout)
        eventually(lambda: dht(nodes[0])["published"] >= 1, "the put's holders to be published", 30)
        reader = next(n for n, i in zip(nodes[1:], ids[1:]) if i not in placed["placement"])
        out = tmp_path / "out"
        got = reader.xsc("store", "get", placed["capability"], "-o", str(out))
        assert got.returncode == 0, got.stderr.decode()
        assert out.read_bytes() == data
        si = Capability.parse(placed["capability"]).storage_index.hex()[:16]
        assert f"found the holders of {si} through the hash table" in reader.log.read_text(), reader.tail(20)
    finally:
        net.stop()
