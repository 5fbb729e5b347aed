"""Jobs on in-process nodes: run one over the user API, read what it stored, settle and check the ledgers."""

from __future__ import annotations

import json

from tests.support.compute import peer_with_provider
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def network(node_factory, providers: int = 1):
    """A gateway that offers no compute, and `providers` nodes that do, each known to the gateway's market."""
    nodes = [await node_factory(f"provider{i}", **QUIET) for i in range(providers)]
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    for provider in nodes:
        await peer_with_provider(gateway, provider)
    return gateway, nodes


async def run_job(node, spec: dict, stdin: bytes = b"") -> tuple[int, dict]:
    """POST /v1/compute/jobs: the spec's JSON on one line, then the job's stdin; (status, answer)."""
    body = json.dumps(spec).encode() + b"\n" + stdin
    response = await node.post("/v1/compute/jobs", data=body, headers={"Content-Type": "application/x-xsc-job"})
    return response.status, await response.json()


async def read_file(node, cap: str) -> bytes:
    response = await node.get(f"/v1/store/files/{cap}")
    assert response.status == 200, await response.text()
    return await response.read()


async def settle(gateway) -> None:
    """Close every open tab now: what the gateway owes each provider is paid (or refused)."""
    paid = gateway.app[NODE].paid
    await paid.gateway_tabs.close()
    await paid.payments.retry_all()
    paid.gateway_tabs.start()


def balances(gateway, provider) -> tuple[int, int]:
    """The gateway's user's balance (it pays) and the provider's node's (it is paid)."""
    return (gateway.app[NODE].ledger.store.state(gateway.app[CLIENT_IDENTITY].public_key).balance,
            provider.app[NODE].ledger.store.state(provider.app[IDENTITY].public_key).balance)


async def verified(node) -> None:
    response = await node.get("/v1/ledger/verify")
    report = await response.json()
    assert response.status == 200 and report["ok"], report
