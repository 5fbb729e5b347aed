"""The hash table between real node processes: a capability is read from a node that never stored any of it, which
finds the file's holders through the table, and a node is found by its id.

The tests share one devnet: each puts a file of its own, from a node of its own, and reads or places only that.
Every node recognises one peer, so a node's book holds two or three providers of each kind (its neighbourhood's, once
the offers announced at start have lapsed): a put, a get and a replicated job find what they lack through the table."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.compute import WASM
from tests.support.peers import FAST, api, node_id
from tests.support.waiting import eventually
from xsc.devnet import Devnet
from xsc.storage.core.capability import Capability

WC = WASM / "wc.wasm"

N = 8
ENV = {**FAST, "XSC_PEERS_DHT_INTERVAL": "0.2", "XSC_MARKET_RECOGNISED_AT_MOST": "1", "XSC_MARKET_FRESHNESS": "6"}

# Each test's time limit is its own: the devnet's start (eight processes to listen, then to know each other) is the
# fixture's, bounded by its own waits for those, and on a loaded machine takes most of a limit that counted it in the
# first test's.
pytestmark = pytest.mark.timeout(120, func_only=True)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> list:
    """The N started nodes of the file's devnet, once every node knows every other."""
    net = Devnet(tmp_path_factory.mktemp("dht"), N, env=ENV, name="n{}")
    try:
        net.spawn().wait_listening(90)
        assert not net.wait_peered(60), "every node to know every other"
        yield list(net)
    finally:
        net.stop()


def dht(node) -> dict:
    status, body = api(node, "GET", "/v1/node/status")
    assert status == 200, body
    return body["dht"]


def market(node) -> dict:
    status, body = api(node, "GET", "/v1/market/status")
    assert status == 200, body
    return body


def _offered_in_the_table(nodes) -> None:
    eventually(lambda: all({"storage", "compute"} <= set(dht(n)["offered"]) for n in nodes),
               "every provider record in the table", 60)


@pytest.mark.slow
def test_a_capability_is_read_from_a_node_that_never_stored_it_through_the_hash_table(nodes, tmp_path) -> None:
    ids = [node_id(n) for n in nodes]
    eventually(lambda: all(dht(n)["contacts"] >= N - 1 for n in nodes), "every node to join the table", 60)
    _offered_in_the_table(nodes)  # the put finds the providers its book lacks there
    data = os.urandom(300_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    writer = nodes[2]  # not the other test's: a node looks a kind's providers up once in a while only
    published = dht(writer)["published"]
    put = writer.xsc("store", "put", str(src), "--json", "--spread")
    assert put.returncode == 0, put.stderr.decode()
    placed = json.loads(put.stdout)
    eventually(lambda: dht(writer)["published"] > published, "the put's holders to be published", 30)
    reader = next(n for n, i in zip(nodes, ids) if n is not writer and i not in placed["placement"])
    out = tmp_path / "out"
    got = reader.xsc("store", "get", placed["capability"], "-o", str(out))
    assert got.returncode == 0, got.stderr.decode()
    assert out.read_bytes() == data
    si = Capability.parse(placed["capability"]).storage_index.hex()
    assert f"found the holders of {si} through the hash table" in reader.log.read_text(), reader.tail(20)


@pytest.mark.slow
def test_a_put_and_a_replicated_job_find_the_providers_their_book_lacks_through_the_hash_table(nodes, tmp_path) -> None:
    """A spread put from one node still lands on six distinct nodes, and a job on five replicas from another still
    runs on five other nodes: the providers each lacked are found through the table and their commitments asked of
    them."""
    _offered_in_the_table(nodes)

    def neighbours_only(node) -> None:  # waited for just before the node's own put or job: no other wait between
        eventually(lambda: market(node)["providers"]["storage"] < 6, f"{node.name}'s book to hold its neighbours", 60)

    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(300_000))
    neighbours_only(nodes[0])
    found, logged = market(nodes[0])["found_through_table"], len(nodes[0].log.read_text())
    put = nodes[0].xsc("store", "put", str(src), "--json", "--spread")
    assert put.returncode == 0, put.stderr.decode()
    assert len(set(json.loads(put.stdout)["placement"])) == 6, put.stdout
    assert market(nodes[0])["found_through_table"] > found
    assert "providers of storage through the hash table" in nodes[0].log.read_text()[logged:], nodes[0].tail(20)
    neighbours_only(nodes[1])
    found, logged = market(nodes[1])["found_through_table"], len(nodes[1].log.read_text())
    job = nodes[1].xsc("compute", "run", str(WC), "--deterministic", "--replicas", "5", "--json", input=b"a b\n")
    assert job.returncode == 0, job.stderr.decode()
    assert len({r["provider"] for r in json.loads(job.stdout)["replicas"]}) == 5, job.stdout
    assert market(nodes[1])["found_through_table"] > found
    assert "providers of compute through the hash table" in nodes[1].log.read_text()[logged:], nodes[1].tail(20)
