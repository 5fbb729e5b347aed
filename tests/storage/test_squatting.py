"""A stranger that learnt a file's storage index (every holder of a share of it is told it) squats on its shares: it
begins or commits a share of it, of its own making, on a node before the file's own uploader writes there.  Real
nodes on free ports; the stranger is a PeerClient signing with a fresh key, sending what an honest node never
would."""

from __future__ import annotations

import io
import os

import aiohttp
import pytest

from xsc.errors import PeerRefused
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc.node.appkeys import NODE
from xsc.storage.core import layout
from xsc.storage.core.merkle import block_hash
from xsc.storage.holder_client import RemoteHolder

from tests.support.shares import DEAL_PRICE, lease, refused

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
SEGMENT = 65536
DATA = os.urandom(5 * SEGMENT)  # shares of 80 KiB: staged in the store as they come, not held in memory


@pytest.fixture
async def net(node_factory):
    """a (the uploader, with a small segment size) has peered with b (a holder); `stranger(node)`: a fresh key's view
    of a node as a holder."""
    a = await node_factory("a", **QUIET, storage={"segment_size": SEGMENT})
    b = await node_factory("b", **QUIET)
    b_url, b_id = b.app[NODE].peers.url, b.app[NODE].peers.identity.id
    await a.app[NODE].peers.add(b_url)
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 10.0)

        def stranger(node) -> RemoteHolder:
            peers = node.app[NODE].peers
            return RemoteHolder(client, peers.identity.id, peers.url, DEAL_PRICE)

        yield {"a": a, "b": b, "b_id": b_id, "a_id": a.app[NODE].peers.identity.id, "stranger": stranger,
               "from_a": RemoteHolder(a.app[NODE].peers.client, b_id, b_url, DEAL_PRICE)}


async def _put(node, place, **options):
    stream = io.BytesIO(DATA)

    async def read(n: int) -> bytes:
        return stream.read(n)

    return await node.app[NODE].gateway.put(read, len(DATA), place=place, me=node.app[NODE].peers.identity.id,
                                            **options)


async def test_a_repair_rebuilding_a_share_here_takes_it_from_a_stranger_uploading_it_here(net) -> None:
    """This node's repair rebuilds a share of its own file here while a stranger's upload of that share is in progress
    here (this node holds no share of the file, so a holder's begin of it was let in): the repair's upload is begun,
    then the stranger's aborted before a block is written, so the stranger's bodies never land under the keys of the
    share the repair publishes (nor does its abort delete them)."""
    a, from_a = net["a"], net["from_a"]
    result = await _put(a, lambda si, _: ([net["b_id"]] * 6, {s: from_a for s in range(6)}))
    cap, si = result.capability, result.capability.storage_index
    await from_a.delete(si, 5)
    squatter = net["stranger"](a)
    garbage = [os.urandom(layout.segment_block_length(SEGMENT))]
    upload = await squatter.begin(si, 5, len(DATA), SEGMENT, lease())
    await squatter.put_segments(upload, 0, garbage)

    repaired = await a.app[NODE].gateway.repair(cap, {s: from_a for s in range(5)}, [net["b_id"]] * 6, me=net["a_id"])
    assert repaired["repaired"] == [5]
    try:
        await squatter.put_segments(upload, 1, garbage)
        landed = True
    except PeerRefused as err:
        refused(err, 404, "upload-not-found")
        landed = False
    store = a.app[NODE].gateway.store
    meta = store.share_meta(si, 5)
    assert [block_hash(store.get_block(si, 5, i)) for i in range(5)] == list(meta.block_hashes)
    assert not landed
    assert a.app[NODE].share_holder.status()["in_progress"] == 0
