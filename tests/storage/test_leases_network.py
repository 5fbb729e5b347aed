"""Leases across nodes: renewal here and on every holder, uploader only; holders collect expired shares."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import pytest

from xsc.errors import PeerRefused
from xsc.ledger import price_storage
from xsc.node.appkeys import CONFIG, NODE
from xsc.storage.holder_client import RemoteHolder
from xsc.storage import Capability

from tests.support.nodes import run_xsc
from tests.support.shares import EncodedFile
from tests.support.waiting import eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
FAST_GC = {"segment_size": 4096, "gc_interval": 0.1, "gc_grace": 0}


@pytest.fixture
async def trio(node_factory):
    """a (the gateway) knows b and c; b and c collect expired shares every 0.1 s with no grace."""
    a = await node_factory("a", storage={"segment_size": 4096}, **QUIET)
    b, c = [await node_factory(name, storage=FAST_GC, **QUIET) for name in ("b", "c")]
    for other in (b, c):
        await a.app[NODE].peers.add(other.app[NODE].peers.url)
    await c.app[NODE].peers.add(b.app[NODE].peers.url)
    return a, b, c


PRICE = 1_000_000  # a deal price above any ask: shares placed directly, as a gateway would after matching


def _id(node) -> str:
    return node.app[NODE].peers.identity.id


async def test_renew_extends_every_lease_here_and_on_each_holder(trio) -> None:
    a, b, c = trio
    response = await a.post("/v1/store/files", params={"name": "spread", "duration": "3600"},
                            data=os.urandom(40_000))
    assert response.status == 201, await response.text()
    put = await response.json()
    assert set(put["placement"]) == {_id(a), _id(b), _id(c)}
    cap = put["capability"]
    si = Capability.parse(cap).storage_index
    stores = {_id(n): n.app[NODE].gateway.store for n in (a, b, c)}
    first = put["lease_expiry"]
    for node, store in stores.items():
        assert {m.lease_expiry for m in store.share_metas(si)} == {first}

    asked = int(time.time()) + 7200
    response = await a.post(f"/v1/store/files/{cap}/renew", json={"duration": 7200})
    assert response.status == 200, await response.text()
    renewal = await response.json()
    assert renewal["not_renewed"] == {}
    assert sorted(r["share"] for r in renewal["renewed"]) == list(range(6))
    new = renewal["lease_expiry"]
    assert new >= asked and all(r["lease_expiry"] == new for r in renewal["renewed"])
    for s, node in enumerate(put["placement"]):
        assert stores[node].share_meta(si, s).lease_expiry == new  # this node and both holders
    record = stores[_id(a)].file_record(si)
    assert record["leases"] == [new] * 6 and record["lease_expiry"] == new
    share_bytes = stores[_id(a)].share_metas(si)[0].stored_bytes
    assert sorted((e["share"], e["node"], e["bytes"]) for e in renewal["extended"]) == \
        [(s, put["placement"][s], share_bytes) for s in range(6)]
    assert all(new - first - 5 <= e["seconds"] <= new - first for e in renewal["extended"])
    # The deals run (and are paid) until the new lease end; the renewal cost what the extension costs.
    deals = a.app[NODE].deals.of_file(si)
    assert {d.end for d in deals} == {new}
    # (priced on the lease end asked for a moment before the gateway asked the holders: a second apart at most)
    assert renewal["cost"] in {sum(price_storage(d.bytes, new - first - lag, d.price) for d in deals) for lag in (0, 1)}
    assert renewal["cost"] > 0

    # A shorter renewal shortens nothing and adds nothing to pay for.
    response = await a.post(f"/v1/store/files/{cap}/renew", json={"duration": 60})
    shorter = await response.json()
    assert shorter["lease_expiry"] == new and shorter["extended"] == [] and shorter["not_renewed"] == {}
    assert shorter["cost"] == 0
    assert stores[_id(b)].share_metas(si)[0].lease_expiry == new

    # Only the uploader may renew: c, which knows b, is refused.
    from_c = RemoteHolder(c.app[NODE].peers.client, _id(b), b.app[NODE].peers.url, PRICE)
    held_on_b = put["placement"].index(_id(b))
    with pytest.raises(PeerRefused) as err:
        await from_c.renew(si, held_on_b, asked + 10**6)
    assert (err.value.details["peer_status"], err.value.details["peer_code"]) == (403, "forbidden")
    assert stores[_id(b)].share_meta(si, held_on_b).lease_expiry == new

    # Bad durations are refused with a hint; the leases stay as they were.
    for body in ({"duration": 59}, {"duration": "30d"}, [1]):
        response = await a.post(f"/v1/store/files/{cap}/renew", json=body)
        assert response.status == 400, body
        assert "whole seconds from 60 to 315360000" in (await response.json())["hint"]  # ("30d" is the CLI's)
    response = await a.post("/v1/store/files/xsc:chk:nope/renew", json={"duration": 3600})
    assert response.status == 400

    # A holder that is down is reported, by node, and the CLI says so and fails.
    c_id = _id(c)
    await c.close()
    cli = await asyncio.to_thread(_xsc, a, "store", "renew", cap, "--duration", "3h", "--json")
    assert cli.returncode == 1, cli.stderr
    partial = json.loads(cli.stdout)
    assert list(partial["not_renewed"]) == [c_id]
    assert sorted(r["share"] for r in partial["renewed"]) == sorted(
        s for s, node in enumerate(put["placement"]) if node != c_id)
    record = stores[_id(a)].file_record(si)
    assert record["lease_expiry"] == new  # the shares on c keep the lease a last heard of
    cli = await asyncio.to_thread(_xsc, a, "store", "renew", cap, "--duration", "3h")
    assert cli.returncode == 1
    message = cli.stderr.decode()
    assert "not renewed" in message and c_id[:12] in message and message.count("\n") == 1, message
    assert message.endswith("(retry when those nodes are back, or `xsc store repair` the file first)\n"), message

    # A holder that wants prepayment is named with what the user can do about it, not told to come back.
    b.app[NODE].trust.stranger_credit = 0
    cli = await asyncio.to_thread(_xsc, a, "store", "renew", cap, "--duration", "4h")
    message = cli.stderr.decode()
    assert cli.returncode == 1 and f"node {_id(b)}: " in message, message
    assert message.endswith(f"(ask for credit, or if it owes you: xsc ledger prepay {_id(b)} CREDITS; then renew it "
                            "again)\n"), message


async def test_a_holders_refusal_of_the_shares_it_holds_is_said_once_with_how_many(node_factory) -> None:
    """A holder refuses each share it holds alike, and each refusal quoted the request it refused (a path with the
    storage index): the renewal's error said it all again per share.  Now once per holder and reason, with the count
    and the shares, in the holder's own words."""
    a = await node_factory("a", storage={"segment_size": 4096}, **QUIET)
    b = await node_factory("b", **QUIET)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    response = await a.post("/v1/store/files", params={"name": "spread", "duration": "3600", "spread": "true"},
                            data=os.urandom(40_000))
    assert response.status == 201, await response.text()
    put = await response.json()
    on_b = [s for s, node in enumerate(put["placement"]) if node == _id(b)]
    assert len(on_b) >= 2, put["placement"]
    b.app[NODE].trust.stranger_credit = 0
    cli = await asyncio.to_thread(_xsc, a, "store", "renew", put["capability"], "--duration", "4h")
    message = cli.stderr.decode()
    assert cli.returncode == 1 and message.count("\n") == 1, message
    assert f"node {_id(b)}: {len(on_b)} shares ({', '.join(map(str, on_b))}): node {_id(a)} must prepay" in message, \
        message
    si = Capability.parse(put["capability"]).storage_index.hex()
    assert message.count("must prepay") == 1 and "/v1/peer/shares" not in message and si not in message, message
    cli = await asyncio.to_thread(_xsc, a, "store", "renew", put["capability"], "--duration", "4h", "--json")
    assert cli.returncode == 1
    (said,) = json.loads(cli.stdout)["not_renewed"].values()  # the API's the same, by holder
    assert said.startswith(f"{len(on_b)} shares (") and said.count("must prepay") == 1, said
    assert _unclocked(said) in _unclocked(message), (said, message)


def _unclocked(refusal: str) -> str:
    """A refusal without the lease extension it quotes: each CLI call asks for 4 h from its own second."""
    return re.sub(r"extension of \d+ s", "extension of N s", refusal)


def _xsc(node, *args: str):
    """The real CLI against an in-process node."""
    return run_xsc("--data-dir", str(node.app[CONFIG].data_dir), "--node", node.app[CONFIG].url, *args)


async def test_a_holder_collects_an_expired_share_and_keeps_a_live_one(trio) -> None:
    a, b, _ = trio
    store = b.app[NODE].gateway.store
    to_b = RemoteHolder(a.app[NODE].peers.client, _id(b), b.app[NODE].peers.url, PRICE)
    short, live = EncodedFile(20_000), EncodedFile(20_000)
    for f, lease in ((short, int(time.time()) + 2), (live, int(time.time()) + 3600)):
        upload = await to_b.begin(f.si, 1, f.size, f.segment_size, lease)
        await to_b.put_segments(upload, 0, f.blocks[1])
        await to_b.commit(upload, f.hashes[1], f.manifest.encode())
    assert store.used == 2 * short.share_bytes

    collector = b.app[NODE].lease_gc
    # Counted once the collection has returned: the share's keys and the store's counters are all updated by then.
    await eventually_async(lambda: collector.counts["shares"] == 1, "b to collect the expired share")
    assert store.share_meta(short.si, 1) is None
    assert store.used == live.share_bytes and store.shares_held == 1
    assert store.manifest(short.si) is None and store.manifest(live.si) is not None
    assert collector.counts["shares"] == 1 and collector.counts["bytes"] == short.share_bytes
    rounds = collector.counts["rounds"]
    await eventually_async(lambda: collector.counts["rounds"] >= rounds + 3, "three more collection rounds")
    assert store.share_meta(live.si, 1) is not None and store.used == live.share_bytes
    status = await (await b.get("/v1/node/status")).json()
    assert status["lease_gc"]["shares"] == 1 and status["storage"]["used"] == live.share_bytes

    # A share collected is gone: renewing it is refused, so the uploader learns it must repair.
    gone = await _refused_renewal(to_b, short)
    assert (gone.details["peer_status"], gone.details["peer_code"]) == (404, "share-not-found")


async def _refused_renewal(holder: RemoteHolder, f: EncodedFile) -> PeerRefused:
    with pytest.raises(PeerRefused) as err:
        await holder.renew(f.si, 1, int(time.time()) + 3600)
    return err.value
