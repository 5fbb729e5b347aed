"""`xsc_peer_bytes` (node/metrics.py): what a node's own requests to its peers cost on the wire, both ways."""

from __future__ import annotations

import os

from yarl import URL

from xsc.health import new_nonce
from xsc.node import IDENTITY
from xsc.net.traffic import route
from xsc.node.appkeys import NODE

TRUSTING = {"ledger": {"stranger_credit": 10**15}}


def _traffic(node, route: str | None = None) -> dict[str, float]:
    """Bytes sent and received by the node's requests to peers (to `route` only, if given)."""
    found = {"sent": 0.0, "received": 0.0}
    for metric in node.app[NODE].metrics.peer_bytes.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and route in (None, sample.labels["route"]):
                found[sample.labels["direction"]] += sample.value
    return found


async def test_a_nodes_requests_to_peers_are_counted_both_ways_with_their_bodies(node_factory) -> None:
    a = await node_factory("a", **TRUSTING)
    b = await node_factory("b", **TRUSTING)
    assert _traffic(a) == {"sent": 0, "received": 0}
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await b.app[NODE].peers.add(a.app[NODE].peers.url)
    peered = _traffic(a)
    assert peered["sent"] > 0 and peered["received"] > 0, peered

    # A file whose six shares all go to B: A sends at least the shares' bytes (1.5x the file), B sends nothing of it.
    data = os.urandom(2 * 1024 * 1024)
    before_b = _traffic(b)
    response = await a.post("/v1/store/files", data=data, params={"avoid": a.app[IDENTITY].id})
    stored = await response.json()
    assert response.status == 201 and set(stored["placement"]) == {b.app[IDENTITY].id}, stored
    sent = _traffic(a)["sent"] - peered["sent"]
    assert len(data) * 1.5 <= sent < len(data) * 1.6, sent
    assert _traffic(a, "uploads")["sent"] >= 1.5 * len(data)  # the shares' segments, by the route they went to
    assert _traffic(b)["sent"] - before_b["sent"] < 0.01 * len(data)
    text = (await (await a.get("/metrics")).text())
    assert 'xsc_peer_bytes_total{direction="sent",route="uploads"}' in text

    # Its get streams the blocks back from B: A receives at least the file's bytes, by the route they came from.
    before = _traffic(a, "shares")["received"]
    got = await a.get(f"/v1/store/files/{stored['capability']}")
    assert got.status == 200 and await got.read() == data
    assert len(data) <= _traffic(a, "shares")["received"] - before < len(data) * 1.1


async def test_requests_over_the_kept_connections_are_counted_both_ways(node_factory) -> None:
    a = await node_factory("a", **TRUSTING)
    b = await node_factory("b", **TRUSTING)
    client, b_url, b_id = a.app[NODE].peers.client, b.app[NODE].peers.url, b.app[NODE].peers.identity.id
    before = _traffic(a, "challenge")
    response = await client.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": new_nonce()}, to=b_id,
                                     kept=True, max_size=1 << 20)
    counted = _traffic(a, "challenge")
    sent, received = counted["sent"] - before["sent"], counted["received"] - before["received"]
    assert client.kept_opened == 1
    assert 100 < sent < 2000 and len(response.body) < received < len(response.body) + 2000, (sent, received)


def test_a_route_label_names_the_peer_route_and_never_an_id() -> None:
    si = "ab" * 32
    assert route(URL("https://h:1/v1/peer/market")) == "market"
    assert route(URL("https://h:1/v1/peer/market/digest")) == "market/digest"
    assert route(URL("https://h:1/v1/peer/allocation/subscribe")) == "allocation/subscribe"
    assert route(URL(f"https://h:1/v1/peer/shares/{si}/3/uploads")) == "shares"
    assert route(URL("https://h:1/v1/peer/uploads/abcdef/commit")) == "uploads"
    assert route(URL("https://h:1/health")) == "health"
