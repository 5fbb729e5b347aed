"""The service the rest of the node uses (app[PEERS]): signed requests, peers(), availability()."""

from __future__ import annotations

import pytest

from xsc.errors import PeerRefused, PeerUnreachable
from xsc.health import check_answer, new_nonce
from xsc.node.health_routes import HEALTH
from xsc.node.peers import PEERS

from ..conftest import free_port

FAST = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def test_the_peer_service_signs_requests_and_reports_availability(node_factory) -> None:
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    peers_a, b_url = a.app[PEERS], b.app[PEERS].url
    added = await peers_a.add(b_url)
    b_id = b.app[PEERS].identity.id
    assert added.id == b_id and [d.id for d in peers_a.peers()] == [b_id]
    assert peers_a.availability(b_id).up is None  # known, not probed yet

    nonce = new_nonce()
    response = await peers_a.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": nonce})
    assert response.status == 200
    check_answer(response.json(), nonce=nonce, prober=peers_a.identity.id, responder=b_id)

    with pytest.raises(PeerRefused) as refused:
        await peers_a.request(b_url, "POST", "/v1/peer/no-such-thing", data=b"\x00\x01")
    assert refused.value.details["peer_status"] == 404
    with pytest.raises(PeerRefused) as refused:  # a bad nonce: the peer's problem code comes through
        await peers_a.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": "xyz"})
    assert refused.value.details["peer_code"] == "invalid-argument"
    with pytest.raises(PeerUnreachable):
        await peers_a.request(f"http://127.0.0.1:{free_port()}", "POST", "/v1/peer/challenge", json={})

    result = await a.app[HEALTH].probe_round()
    assert result["ok"] == 1 and result["results"][0]["id"] == b_id
    stats = peers_a.availability(b_id)
    assert stats.up is True and stats.probes_1h == 1 and stats.latency_ms > 0
    a.app[HEALTH].record_audit(b_id, False, "block 7 of share 3 does not match its root")
    assert peers_a.availability(b_id).last_audit["ok"] is False
    health = await (await a.get("/health")).json()
    assert health["checks"]["peers:reachable"][0]["status"] == "pass"
    status = await (await a.get("/v1/node/status")).json()
    assert status["peers"] == {"url": peers_a.url, "known": 1, "up": 1}
