"""A stranger that learnt a file's storage index (every holder of a share of it is told it) squats on its shares: it
begins or commits a share of it, of its own making, on a node before the file's own uploader writes there.  Real
nodes on free ports; the stranger is a PeerClient signing with a fresh key, sending what an honest node never
would."""

from __future__ import annotations

import io
import os
import time

import aiohttp
import pytest

from xsc.errors import PeerRefused
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc import keys
from xsc.node.appkeys import NODE
from xsc.storage.core import layout
from xsc.storage.core.wire import MIN_SEGMENT_SIZE
from xsc.storage.core.merkle import block_hash
from xsc.storage.holder_client import RemoteHolder

from tests.support.shares import DEAL_PRICE, EncodedFile, Holding, lease, place, refused

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


class Squatted:
    """A holder as a put sees it, on which a stranger commits a tiny share of the put's storage index (share 0, of its
    own making) just before the put's begin there (`at="begin"`), or just before its commit."""

    round_trip = None

    def __init__(self, holder: RemoteHolder, squatter: RemoteHolder, at: str) -> None:
        self.holder, self.squatter, self.at = holder, squatter, at
        self.si = b""

    async def _squat(self) -> None:
        tiny = EncodedFile(100)
        tiny.si = self.si  # a holder cannot tell: it never sees the capability
        await place(self.squatter, tiny, 0)

    async def begin(self, si, share, size, segment_size, lease_expiry) -> str:
        self.si = si
        if self.at == "begin":
            await self._squat()
        return await self.holder.begin(si, share, size, segment_size, lease_expiry)

    async def commit(self, upload, block_hashes, manifest, *, first=0, blocks=None) -> None:
        if self.at == "commit":
            await self._squat()
        await self.holder.commit(upload, block_hashes, manifest, first=first, blocks=blocks)

    def __getattr__(self, name: str):
        return getattr(self.holder, name)


async def test_a_stranger_squatting_before_a_put_begins_a_share_has_it_kept_home_and_said_why(net) -> None:
    """The holder refuses the put's begin (409 share-exists: it holds another node's share of the storage index, and
    cannot tell it from the file's): no other holder takes the share, so the put keeps it here, as it does a share
    refused for the holder's room or terms, and says why, rather than fail."""
    a, a_id, b_id = net["a"], net["a_id"], net["b_id"]
    squatted = Squatted(net["from_a"], net["stranger"](net["b"]), "begin")
    result = await _put(a, lambda si, _: ([a_id] * 5 + [b_id], {5: squatted}), keep_home=True)
    assert result.placement == [a_id] * 6 and "share-exists" in result.kept_home and not result.lost
    si = result.capability.storage_index
    assert sorted(m.share for m in a.app[NODE].gateway.store.share_metas(si)) == list(range(6))
    assert [m.share for m in net["b"].app[NODE].gateway.store.share_metas(si)] == [0]  # the stranger's, alone


async def test_a_stranger_squatting_between_a_put_s_begin_and_its_commit_loses_the_put_that_share_only(net) -> None:
    """A stranger commits its share of the storage index on a holder while the put's share is on its way there: the
    holder refuses the put's commit (409 share-exists: it holds another manifest for that storage index).  The put
    goes on without that share, as without a holder lost mid-put: published missing and marked damaged, for the
    repair loop to rebuild, and the answer says which holder failed it and why."""
    a, a_id, b_id = net["a"], net["a_id"], net["b_id"]
    squatted = Squatted(net["from_a"], net["stranger"](net["b"]), "commit")
    result = await _put(a, lambda si, _: ([a_id] * 5 + [b_id], {5: squatted}))
    si = result.capability.storage_index
    assert result.missing == (5,) and f"node {b_id} failed share 5 (share-exists)" in result.lost
    assert list(a.app[NODE].gateway.store.damaged(si)) == [5]
    assert net["b"].app[NODE].gateway.store.reserved == 0


async def test_a_repair_counts_a_share_its_holder_holds_already_as_placed(net) -> None:
    """A repair moves a share to a holder that holds that very share (placed by this node: a copy an earlier repair
    committed and never recorded), which refuses the begin (409 share-exists).  The repair reads it back, finds it
    the manifest's, and counts it as placed there (its lease renewed, nothing sent), rather than look elsewhere and
    fail when no other node takes it."""
    a, from_a, b_id = net["a"], net["from_a"], net["b_id"]
    result = await _put(a, None)
    cap, si = result.capability, result.capability.storage_index
    store = a.app[NODE].gateway.store
    share = [store.get_block(si, 5, i) for i in range(5)]
    upload = await from_a.begin(si, 5, len(DATA), SEGMENT, lease())
    await from_a.commit(upload, [block_hash(b) for b in share], store.manifest(si), blocks=share)
    held = net["b"].app[NODE].gateway.store.share_meta(si, 5)

    async def relocate(s, used, failed):
        return None if b_id in used or b_id in failed else (b_id, from_a)

    # The file's record names a node for share 5 that lost it (a holder with nothing of it).
    names = [net["a_id"]] * 5 + ["gone"]
    repaired = await a.app[NODE].gateway.repair(cap, {5: Holding()}, names, relocate, me=net["a_id"])
    assert repaired["repaired"] == [5] and repaired["placement"][5] == b_id
    now = net["b"].app[NODE].gateway.store.share_meta(si, 5)
    assert now.block_hashes == held.block_hashes and now.lease_expiry >= held.lease_expiry


class SquatsHere:
    """A holder as a put sees it whose first begin has a stranger commit share 5 of the put's storage index on the
    put's own node first: a share of the stranger's making, of more segments than the put's (that node holds no
    share of the file nor, the put not yet published, its manifest)."""

    round_trip = None

    def __init__(self, holder: RemoteHolder, squatter: RemoteHolder) -> None:
        self.holder, self.squatter, self.squatted = holder, squatter, False

    async def begin(self, si, share, size, segment_size, lease_expiry) -> str:
        if not self.squatted:
            self.squatted = True
            squat = EncodedFile(8 * MIN_SEGMENT_SIZE, MIN_SEGMENT_SIZE)
            squat.si = si
            await place(self.squatter, squat, 5)
        return await self.holder.begin(si, share, size, segment_size, lease_expiry)

    def __getattr__(self, name: str):
        return getattr(self.holder, name)


async def test_a_repair_here_ends_a_share_a_stranger_committed_here_first(net) -> None:
    """This node's repair rebuilds share 5 of its file here, where a stranger committed a share 5 of its own making
    (8 segments, the file's 5) under a deal: the stranger's share is ended as its own delete ends it, its blocks past
    the repaired share's gone, `used` the shares held, and its deal ended (else the unpaid collector, finding the deal
    unpaid, would delete the share the repair published)."""
    a, from_a, b_id = net["a"], net["from_a"], net["b_id"]
    squatting = SquatsHere(from_a, net["stranger"](a))
    result = await _put(a, lambda si, _: ([b_id] * 6, {s: squatting for s in range(6)}))
    cap, si = result.capability, result.capability.storage_index
    node = a.app[NODE]
    store, terms = node.gateway.store, node.share_holder.terms
    assert store.share_meta(si, 5).segment_count == 8 and terms.get(si, 5) is not None
    await from_a.delete(si, 5)

    repaired = await node.gateway.repair(cap, {s: from_a for s in range(5)}, [b_id] * 6, me=net["a_id"])
    assert repaired["repaired"] == [5]
    meta = store.share_meta(si, 5)
    assert meta.segment_count == 5 and meta.uploader == node.gateway.node_key
    blocks = set()
    for db in {id(store.db): store.db, id(store.blocks): store.blocks}.values():
        with db.iterator(prefix=keys.blocks_of(si), include_value=False) as it:
            blocks |= {(keys.block_share(k), keys.block_segment(k)) for k in it}
    assert blocks == {(5, i) for i in range(5)}
    assert store.used == sum(store.share_meta(*held).stored_bytes for held in store.held_shares())
    assert terms.get(si, 5) is None
    await node.lease_gc.collect(now=time.time() + node.lease_gc.config.unpaid_grace + 60)
    assert store.share_meta(si, 5) == meta
