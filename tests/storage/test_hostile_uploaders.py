"""A stranger with a fresh key attacks a holder through the share protocol.

Each test performs the attack on a real in-process node on a free port, with signed requests from a
freshly generated key, and checks the attack fails and the node keeps its accounting exact."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import time

import aiohttp
import pytest

from xsc import keys
from xsc.errors import PeerRefused, QuotaExceeded, ShareExists, StorageBusy
from xsc.identity import Identity, public_id, parse_public_id
from xsc.ledger.core.pricing import price_storage, price_storage_period
from xsc.net import PeerClient
from xsc.storage.holder_client import RemoteHolder
from xsc.node.appkeys import NODE
from xsc.storage import bodies, gateway_put, holder as holder_module, remote
from xsc.storage.core import wire
from xsc.storage.core.capability import Capability
from xsc.storage.core.leases import MAX_DURATION

from tests.support.attacks import receipt_claim, signed
from tests.support.shares import DEAL_PRICE, EncodedFile, gateway_core, lease, place, refused
from tests.support.waiting import eventually_async
from tests.support.writes import record_synced_writes

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


@pytest.fixture
async def holder_node(node_factory):
    return await node_factory("holder", **QUIET, storage={"capacity": 8 * 1024**2, "unpaid_grace": 3600})


@pytest.fixture
async def stranger(holder_node):
    """A RemoteHolder view of the holder node, used by a brand-new key nobody knows."""
    session = aiohttp.ClientSession()
    client = PeerClient(Identity.generate(), session, 10.0)
    peers = holder_node.app[NODE].peers
    yield RemoteHolder(client, peers.identity.id, peers.url, DEAL_PRICE)
    await session.close()


async def test_a_lease_cannot_outlive_the_longest_lease(holder_node, stranger) -> None:
    f = EncodedFile(5000)
    for forever in (2**64 - 1, int(time.time()) + MAX_DURATION + 2 * 86400):
        with pytest.raises(PeerRefused) as err:
            await stranger.begin(f.si, 0, f.size, f.segment_size, forever)
        refused(err, 400, "invalid-argument")
    assert holder_node.app[NODE].gateway.store.reserved == 0


async def test_a_refused_begin_leaves_no_record_and_no_terms_of_another_uploader(holder_node, stranger,
                                                                                   node_factory) -> None:
    store, terms = holder_node.app[NODE].gateway.store, holder_node.app[NODE].terms
    honest = await node_factory("honest", **QUIET)
    await honest.app[NODE].peers.add(holder_node.app[NODE].peers.url)
    peers = holder_node.app[NODE].peers
    from_honest = RemoteHolder(honest.app[NODE].peers.client, peers.identity.id, peers.url, DEAL_PRICE)
    f = EncodedFile(9000)
    await place(from_honest, f, 1)
    placed = terms.get(f.si, 1)
    assert placed["uploader"] == honest.app[NODE].peers.identity.id and placed["price"] == DEAL_PRICE

    # A co-holder's (a stranger's) begin of the same share is refused, and leaves the honest terms as they were.
    with pytest.raises(PeerRefused) as err:
        await stranger.begin(f.si, 1, f.size, f.segment_size, lease())
    refused(err, 409, "share-exists")
    assert terms.get(f.si, 1) == placed
    # A begin refused for its price writes nothing at all.
    cheap = RemoteHolder(stranger.client, stranger.node_id, stranger.url, 0)
    with pytest.raises(PeerRefused) as err:
        await cheap.begin(f.si, 2, f.size, f.segment_size, lease())
    refused(err, 403, "deal-refused")
    assert terms.get(f.si, 2) is None and list(store.db.iterator(prefix=keys.UPLOADS)) == []
    # Nor does one that comes once the holder said it leaves (its stop began): 503, its sender goes elsewhere.
    await holder_node.app[NODE].market.leave()
    with pytest.raises(PeerRefused) as err:
        await from_honest.begin(f.si, 2, f.size, f.segment_size, lease())
    refused(err, 503, "node-stopping")
    assert terms.get(f.si, 2) is None and list(store.db.iterator(prefix=keys.UPLOADS)) == []


async def test_a_share_a_stranger_begins_and_never_commits_does_not_keep_its_uploader_out(holder_node,
                                                                                            node_factory) -> None:
    """A stranger that learnt a storage index (a co-holder of the file) begins a share of it here first, from another
    network, stages a block of it and never commits: the honest uploader's begin is not refused, its commit keeps the
    share, and the stranger's upload is dropped with its blocks and its room."""
    store = holder_node.app[NODE].gateway.store
    from_honest = await _honest(holder_node, node_factory)
    f = EncodedFile(600_000, 65536)  # a share of 150 KiB: staged in the store, not held in memory
    async with _from_address(holder_node, "127.0.0.2") as squatter:
        upload = await squatter.begin(f.si, 1, f.size, f.segment_size, lease())
        await squatter.put_segments(upload, 0, f.blocks[1][:1])
        await place(from_honest, f, 1)
        with pytest.raises(PeerRefused) as err:
            await squatter.put_segments(upload, 1, f.blocks[1][1:])
        refused(err, 404, "upload-not-found")
        # A committed share is still its uploader's alone.
        with pytest.raises(PeerRefused) as err:
            await squatter.begin(f.si, 1, f.size, f.segment_size, lease())
        refused(err, 409, "share-exists")
    meta = store.share_meta(f.si, 1)
    assert meta.uploader == parse_public_id(from_honest.client.identity.id) and list(meta.block_hashes) == f.hashes[1]
    assert [store.get_block(f.si, 1, i) for i in range(f.count)] == f.blocks[1]
    assert _blocks_held(store) == f.count  # the stranger's staged block went with its upload
    assert store.reserved == 0 and holder_node.app[NODE].share_holder.status()["in_progress"] == 0


async def test_a_share_begun_beside_an_upload_of_it_is_dropped_when_that_one_commits(holder_node,
                                                                                     node_factory) -> None:
    store = holder_node.app[NODE].gateway.store
    from_honest = await _honest(holder_node, node_factory)
    f = EncodedFile(9000)
    upload = await from_honest.begin(f.si, 1, f.size, f.segment_size, lease())
    await from_honest.put_segments(upload, 0, f.blocks[1][:1])
    async with _from_address(holder_node, "127.0.0.2") as squatter:
        theirs = await squatter.begin(f.si, 1, f.size, f.segment_size, lease())
        await squatter.put_segments(theirs, 0, f.blocks[1][:2])
        await from_honest.put_segments(upload, 1, f.blocks[1][1:])
        await from_honest.commit(upload, f.hashes[1], f.manifest.encode())
        with pytest.raises(PeerRefused) as err:
            await squatter.commit(theirs, f.hashes[1], f.manifest.encode())
        refused(err, 404, "upload-not-found")
    assert [store.get_block(f.si, 1, i) for i in range(f.count)] == f.blocks[1]
    assert _blocks_held(store) == f.count and store.reserved == 0


async def test_a_stranger_cannot_begin_a_share_this_node_is_writing_itself(holder_node) -> None:
    """This node's own put stages its shares here as a holder's upload does, under the same keys: a stranger that
    learnt the storage index (a holder of another share of it) and began one of those shares here overwrote the put's
    blocks, and its abort deleted them before the put published.  Its begin is refused while the put writes them."""
    store = holder_node.app[NODE].gateway.store
    f = EncodedFile(600_000, 65536)
    put = store.begin_upload(f.si, (0, 1), 2 * f.share_bytes)  # as gateway_put begins this node's shares
    for i in range(f.count):
        put.put_blocks(i, {0: f.blocks[0][i], 1: f.blocks[1][i]})
    async with _from_address(holder_node, "127.0.0.2") as stranger:
        try:
            upload = await stranger.begin(f.si, 1, f.size, f.segment_size, lease())
            await stranger.put_segments(upload, 0, [bytes(len(f.blocks[1][0]))])
            await stranger.abort(upload)
        except PeerRefused as err:
            refused(err, 409, "share-exists")
    assert [store.get_block(f.si, 1, i) for i in range(f.count)] == f.blocks[1]
    store.abort(put)


async def test_uploads_of_one_share_at_once_are_one_per_network_and_bounded(holder_node) -> None:
    shares = holder_node.app[NODE].share_holder
    f = EncodedFile(100)
    for n in range(holder_module.MAX_RIVALS):
        await shares.begin(os.urandom(32), f.si, 0, f.size, f.segment_size, lease(), network=f"198.51.{n}.0/24")
    for network in ("198.51.0.0/24", "203.0.113.0/24"):  # another id of a network that has one; one past the bound
        with pytest.raises(ShareExists):
            await shares.begin(os.urandom(32), f.si, 0, f.size, f.segment_size, lease(), network=network)
    assert shares.status()["in_progress"] == holder_module.MAX_RIVALS


def _blocks_held(store) -> int:
    count = 0
    for db in {id(store.db): store.db, id(store.blocks): store.blocks}.values():
        with db.iterator(prefix=keys.blocks_of(b""), include_value=False) as blocks:
            count += sum(1 for _ in blocks)
    return count


async def _honest(holder_node, node_factory) -> RemoteHolder:
    honest = await node_factory("honest", **QUIET)
    await honest.app[NODE].peers.add(holder_node.app[NODE].peers.url)
    peers = holder_node.app[NODE].peers
    return RemoteHolder(honest.app[NODE].peers.client, peers.identity.id, peers.url, DEAL_PRICE)


@contextlib.asynccontextmanager
async def _from_address(holder_node, address: str):
    """A stranger's RemoteHolder view of the holder, its requests sent from `address` (another network than the
    other nodes' 127.0.0.1)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0))) as session:
        peers = holder_node.app[NODE].peers
        yield RemoteHolder(PeerClient(Identity.generate(), session, 10.0), peers.identity.id, peers.url, DEAL_PRICE)


async def test_one_sender_cannot_reserve_the_whole_node(holder_node, stranger) -> None:
    store = holder_node.app[NODE].gateway.store
    # Half the capacity at most, in uploads in progress.
    big = EncodedFile(1)
    size = 20 * 1024**2  # a share of 5 MiB: it fits, but is more than half the 8 MiB capacity
    with pytest.raises(PeerRefused) as err:
        await stranger.begin(big.si, 0, size, 1024**2, lease())
    refused(err, 429, "quota-exceeded")
    # And at most MAX_UPLOADS_PER_SENDER uploads in progress, whatever their size.
    files = [EncodedFile(100) for _ in range(holder_module.MAX_UPLOADS_PER_SENDER + 1)]
    for f in files[:-1]:
        await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    with pytest.raises(PeerRefused) as err:
        await stranger.begin(files[-1].si, 0, files[-1].size, files[-1].segment_size, lease())
    refused(err, 429, "quota-exceeded")
    assert store.reserved <= store.capacity // 2


async def test_the_ids_of_one_network_cannot_reserve_more_than_one_id_may(holder_node, stranger) -> None:
    """Node ids are cheap: fresh ids of one network (the route counts a begin by its address's network) reserve at
    most MAX_RESERVED_FRACTION of the capacity together, as one id does; another network still reserves its own."""
    shares, store = holder_node.app[NODE].share_holder, holder_node.app[NODE].gateway.store
    size, segment = 12 * 1024**2, 1024**2  # a share of 3 MiB: one fits in half the 8 MiB capacity, two do not
    first, second = [RemoteHolder(PeerClient(Identity.generate(), stranger.client.session, 10.0), stranger.node_id,
                                  stranger.url, DEAL_PRICE) for _ in range(2)]
    await first.begin(EncodedFile(1).si, 0, size, segment, lease())
    with pytest.raises(PeerRefused) as err:
        await second.begin(EncodedFile(1).si, 0, size, segment, lease())
    refused(err, 429, "quota-exceeded")
    assert "from your network 127.0.0.1" in str(err.value) and len(shares) == 1
    elsewhere = await shares.begin(os.urandom(32), EncodedFile(1).si, 0, size, segment, lease(),
                                   network="198.51.100.0/24")
    assert len(shares) == 2 and store.reserved == 2 * elsewhere.share_bytes


async def test_uploads_begun_by_many_keys_are_bounded_together_and_those_in_progress_finish(
        holder_node, stranger, monkeypatch) -> None:
    """Fresh keys of one network, each within its own quota, begin uploads they never finish: past MAX_UPLOADS, all
    senders together, a begin from that network (the one holding the most) is refused (429), and an upload in
    progress is untouched: it finishes, and its room is taken again."""
    monkeypatch.setattr(holder_module, "MAX_UPLOADS", 20)
    each = 8
    shares, store = holder_node.app[NODE].share_holder, holder_node.app[NODE].gateway.store
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())  # an honest upload, in progress
    await stranger.put_segments(upload, 0, f.blocks[0][:1])
    keys_used = [RemoteHolder(PeerClient(Identity.generate(), stranger.client.session, 10.0), stranger.node_id,
                              stranger.url, DEAL_PRICE) for _ in range(3)]
    begun = refusals = 0
    for key in keys_used:
        for _ in range(each):
            never = EncodedFile(100)
            try:
                await key.begin(never.si, 0, never.size, never.segment_size, lease())
                begun += 1
            except PeerRefused as err:
                refused(err, 429, "quota-exceeded")
                refusals += 1
    assert (begun, len(shares)) == (19, 20) and refusals == 3 * each - 19
    await stranger.put_segments(upload, 1, f.blocks[0][1:])
    await stranger.commit(upload, f.hashes[0], f.manifest.encode())
    assert store.share_meta(f.si, 0) is not None and len(shares) == 19
    again = EncodedFile(100)
    await keys_used[-1].begin(again.si, 0, again.size, again.segment_size, lease())
    assert len(shares) == 20


async def _begin(shares, network: str, uploader: bytes | None = None):
    """An upload begun on the holder by `uploader` (a fresh id by default) from `network`, never fed."""
    f = EncodedFile(100)
    return await shares.begin(uploader or os.urandom(32), f.si, 0, f.size, f.segment_size, lease(), network=network)


async def test_begins_sent_at_once_count_against_their_senders_cap(holder_node, monkeypatch) -> None:
    monkeypatch.setattr(holder_module, "MAX_UPLOADS_PER_SENDER", 4)
    shares, sender = holder_node.app[NODE].share_holder, os.urandom(32)
    outcomes = await asyncio.gather(*(_begin(shares, "203.0.113.0/24", sender) for _ in range(10)),
                                    return_exceptions=True)
    assert [type(o).__name__ for o in outcomes].count("QuotaExceeded") == 6
    assert shares.status() == {"in_progress": 4, "senders": 1, "networks": 1, "bodies": 0, "body_bytes": 0}


async def test_many_ids_of_one_network_are_bounded_together_and_another_network_still_begins(
        holder_node, stranger, monkeypatch) -> None:
    """Node ids are cheap: each fresh id of one network within its own cap, the network's are refused together past
    MAX_UPLOADS_PER_NETWORK (the peer route counts a begin by its address's network), and a sender elsewhere is not."""
    monkeypatch.setattr(holder_module, "MAX_UPLOADS_PER_NETWORK", 3)
    shares = holder_node.app[NODE].share_holder
    fresh = [RemoteHolder(PeerClient(Identity.generate(), stranger.client.session, 10.0), stranger.node_id,
                          stranger.url, DEAL_PRICE) for _ in range(4)]
    for key in fresh[:3]:
        f = EncodedFile(100)
        await key.begin(f.si, 0, f.size, f.segment_size, lease())
    f = EncodedFile(100)
    with pytest.raises(PeerRefused) as err:
        await fresh[3].begin(f.si, 0, f.size, f.segment_size, lease())
    refused(err, 429, "quota-exceeded")
    assert "from your network 127.0.0.1" in str(err.value)
    await _begin(shares, "198.51.100.0/24")
    assert shares.status() == {"in_progress": 4, "senders": 4, "networks": 2, "bodies": 0, "body_bytes": 0}


class Clock:
    """The holder's clock, moved on by the test (`ShareHolder.clock`)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_full_holder_makes_room_for_a_newcomer_from_the_network_that_holds_most(holder_node,
                                                                                          monkeypatch) -> None:
    """At MAX_UPLOADS a begin is not refused for what a flood holds: the least recently active upload idle for
    ROOM_IDLE of the network holding the most is aborted for it, while the flood's own begins are refused; what is
    kept per sender and network goes with the uploads."""
    monkeypatch.setattr(holder_module, "MAX_UPLOADS", 10)
    monkeypatch.setattr(holder_module, "MAX_UPLOADS_PER_NETWORK", 9)
    shares, flood_net, honest_net = holder_node.app[NODE].share_holder, "203.0.113.0/24", "198.51.100.0/24"
    clock = Clock(shares.clock())
    monkeypatch.setattr(shares, "clock", clock)
    honest = await _begin(shares, honest_net)  # the oldest of all
    flood = [await _begin(shares, flood_net) for _ in range(8)]  # fresh ids, within their network's cap
    other = await _begin(shares, "192.0.2.0/24")
    assert shares.status() == {"in_progress": 10, "senders": 10, "networks": 3, "bodies": 0,
                               "body_bytes": 0}
    clock.now += holder_module.ROOM_IDLE
    with pytest.raises(QuotaExceeded, match="as many as any"):  # the flood's network holds the most already
        await _begin(shares, flood_net)
    newcomer = await _begin(shares, "100.64.0.0/24")
    assert flood[0].closed and not any(i.closed for i in (honest, *flood[1:], other, newcomer))
    again = await _begin(shares, honest_net, honest.uploader)  # the honest network's 2 to the flood's 7
    assert flood[1].closed and not again.closed and len(shares) == 10
    with pytest.raises(QuotaExceeded):  # the flood, down to 6, cannot take its room back
        await _begin(shares, flood_net)
    async with flood[2].lock:  # a request holds its least recently active upload: the next one goes instead
        await _begin(shares, "100.64.1.0/24")
    assert not flood[2].closed and flood[3].closed
    assert await shares.reap(shares.clock() + holder_module.IDLE_TIMEOUT + 1) == 10
    assert shares.status() == {"in_progress": 0, "senders": 0, "networks": 0, "bodies": 0, "body_bytes": 0}


async def test_a_whole_share_a_full_holder_refuses_for_seconds_is_sent_again_after_the_time_it_names(
        holder_node, node_factory, monkeypatch) -> None:
    """The holder has all the uploads it takes at once, the first it may abort for a newcomer idle enough within 2 s:
    a put's whole share is refused on its own in its request (429, with the Retry-After the holder means, as if it
    came alone), sent again after that wait, and placed there, rather than the put failed."""
    monkeypatch.setattr(holder_module, "MAX_UPLOADS", 3)
    shares, peers = holder_node.app[NODE].share_holder, holder_node.app[NODE].peers
    crowd = [await _begin(shares, "203.0.113.0/24") for _ in range(2)]
    await _begin(shares, "198.51.100.0/24")
    ahead = holder_module.ROOM_IDLE - 2
    monkeypatch.setattr(shares, "clock", lambda: time.monotonic() + ahead)
    gateway = await node_factory("gateway", **QUIET)
    await gateway.app[NODE].peers.add(peers.url)
    b = RemoteHolder(gateway.app[NODE].peers.client, peers.identity.id, peers.url, DEAL_PRICE)
    f = EncodedFile(1000)
    with pytest.raises(PeerRefused) as err:  # as the put's first try finds it
        await b.place_whole(f.si, 0, f.size, f.segment_size, lease(), f.blocks[0][0], f.hashes[0][0],
                            f.manifest.encode())
    refused(err, 429, "quota-exceeded")
    assert 1 <= err.value.details["peer_retry_after"] <= 2
    stream = io.BytesIO(os.urandom(1000))

    async def read(n: int) -> bytes:
        return stream.read(n)

    result = await gateway.app[NODE].gateway.put(read, 1000, place=lambda si, _: (
        ["me"] * 5 + [peers.identity.id], {5: b}), me="me")
    assert result.placement == ["me"] * 5 + [peers.identity.id] and not result.lost
    placed = holder_node.app[NODE].gateway.store.share_metas(result.capability.storage_index)
    assert [m.share for m in placed] == [5] and crowd[0].closed


async def test_a_full_holder_aborts_no_upload_active_within_the_grace_to_make_room(holder_node, stranger,
                                                                                    monkeypatch) -> None:
    """Only an upload idle for ROOM_IDLE is aborted to make room: a newcomer finding the crowded network's uploads
    all begun or fed within it is refused (429, with when to try again), and nothing is aborted; once one has been
    idle that long it goes, and one fed meanwhile stays."""
    monkeypatch.setattr(holder_module, "MAX_UPLOADS", 4)
    shares, crowd = holder_node.app[NODE].share_holder, "203.0.113.0/24"
    clock = Clock(shares.clock())
    monkeypatch.setattr(shares, "clock", clock)
    f, newcomer = EncodedFile(3 * 4096), EncodedFile(100)
    fed = await shares.begin(os.urandom(32), f.si, 0, f.size, f.segment_size, lease(), network=crowd)
    waiting = [await _begin(shares, crowd) for _ in range(2)]
    await _begin(shares, "198.51.100.0/24")
    clock.now += holder_module.ROOM_IDLE - 10
    with pytest.raises(PeerRefused) as err:  # the newcomer, through the route (from 127.0.0.1)
        await stranger.begin(newcomer.si, 0, newcomer.size, newcomer.segment_size, lease())
    refused(err, 429, "quota-exceeded")
    assert f"idle for {holder_module.ROOM_IDLE:g} s" in str(err.value) and len(shares) == 4
    with pytest.raises(QuotaExceeded) as quota:
        await _begin(shares, "192.0.2.0/24")
    assert quota.value.details["retry_after"] == 10 and not any(i.closed for i in (fed, *waiting))
    await shares.put(fed, 0, f.blocks[0][:1])  # the oldest of the crowd fed: active again
    clock.now += 10
    await stranger.begin(newcomer.si, 0, newcomer.size, newcomer.segment_size, lease())
    assert not fed.closed and [i.closed for i in waiting] == [True, False] and len(shares) == 4


async def test_an_honest_put_waiting_for_its_first_segment_keeps_its_uploads_on_a_holder_full_of_a_flood(
        holder_node, stranger, tmp_path, monkeypatch) -> None:
    """A gateway begins a put's uploads as the put starts, then may wait (for its byte budget, for its client) before
    the first body.  A flood from many networks fills the holder meanwhile, so that the put's network holds the
    most: the flood's newcomers are refused rather than given the put's uploads, within the grace and past it (the
    gateway touches the uploads of its puts that wait), and the put completes."""
    monkeypatch.setattr(holder_module, "MAX_UPLOADS", 4)
    monkeypatch.setattr(remote, "KEEP_ALIVE", 0.0)  # (each keep_alive round touches every upload waiting)
    shares, store = holder_node.app[NODE].share_holder, holder_node.app[NODE].gateway.store
    clock = Clock(shares.clock())
    monkeypatch.setattr(shares, "clock", clock)
    data, go = os.urandom(3 * 4096), asyncio.Event()
    sent = 0

    async def read(n: int) -> bytes:  # a client that sends nothing until the flood has come
        nonlocal sent
        await go.wait()
        sent += n
        return data[sent - n:sent]

    with gateway_core(tmp_path, 4096) as gateway:
        putting = asyncio.ensure_future(gateway_put.put(
            gateway, read, len(data), place=lambda si, size: (["b", "b"] + ["me"] * 4, {0: stranger, 1: stranger}),
            me="me"))
        try:
            await eventually_async(lambda: len(shares) == 2 or putting.done(), "the put's two uploads begun")
            for net in ("203.0.113.0/24", "198.51.100.0/24"):  # the holder full, each network holding one
                await _begin(shares, net)
            with pytest.raises(QuotaExceeded):
                await _begin(shares, "192.0.2.0/24")
            clock.now += holder_module.ROOM_IDLE  # the put waits on
            await gateway.keep_alive()
            with pytest.raises(QuotaExceeded):
                await _begin(shares, "100.64.0.0/24")
            go.set()
            result = await asyncio.wait_for(putting, 30)
        finally:
            go.set()
            await asyncio.gather(putting, return_exceptions=True)
    si = result.capability.storage_index
    assert result.placement[:2] == ["b", "b"] and all(store.share_meta(si, s) is not None for s in (0, 1))


async def test_a_touched_upload_is_not_aborted_to_make_room_and_only_its_uploader_touches_it(
        holder_node, stranger, monkeypatch) -> None:
    """A touch is activity without a block: a full holder aborts the upload left idle for ROOM_IDLE, not the one
    touched; a touch of an upload aborted is 404, of another's upload 403."""
    monkeypatch.setattr(holder_module, "MAX_UPLOADS", 3)
    shares = holder_node.app[NODE].share_holder
    clock = Clock(shares.clock())
    monkeypatch.setattr(shares, "clock", clock)
    files = [EncodedFile(100) for _ in range(2)]
    touched, idle = [await stranger.begin(f.si, 0, f.size, f.segment_size, lease()) for f in files]
    await _begin(shares, "198.51.100.0/24")
    clock.now += holder_module.ROOM_IDLE
    await stranger.touch(touched)
    await _begin(shares, "192.0.2.0/24")
    with pytest.raises(PeerRefused) as err:
        await stranger.touch(idle)
    refused(err, 404, "upload-not-found")
    other = RemoteHolder(PeerClient(Identity.generate(), stranger.client.session, 10.0), stranger.node_id,
                         stranger.url, DEAL_PRICE)
    with pytest.raises(PeerRefused) as err:
        await other.touch(touched)
    refused(err, 403, "forbidden")
    await stranger.put_segments(touched, 0, files[0].blocks[0])
    await stranger.commit(touched, files[0].hashes[0], files[0].manifest.encode())
    status = await (await holder_node.get("/v1/node/status")).json()
    assert status["loops"]["upload-keepalive"]["running"]  # a node's gateway touches the uploads of its puts


async def test_refused_puts_do_not_keep_an_upload_alive(holder_node, stranger) -> None:
    shares = holder_node.app[NODE].share_holder
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    incoming = shares.get(upload, stranger.client.identity.public_key)
    start = incoming.last_activity
    for _ in range(3):  # out of order (past the share's last segment): refused, and no activity
        with pytest.raises(PeerRefused) as err:
            await stranger.put_segments(upload, 3, f.blocks[0][2:])
        refused(err, 409, "segment-out-of-order")
    assert incoming.last_activity == start
    assert await shares.reap(start + holder_module.IDLE_TIMEOUT + 1) == 1
    assert holder_node.app[NODE].gateway.store.reserved == 0


async def test_an_upload_that_trickles_past_its_deadline_is_aborted(holder_node, stranger) -> None:
    shares = holder_node.app[NODE].share_holder
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    incoming = shares.get(upload, stranger.client.identity.public_key)
    await stranger.put_segments(upload, 0, f.blocks[0][:1])  # activity now, but the deadline stands
    assert await shares.reap(incoming.deadline + 1) == 1


async def test_bodies_kept_in_flight_do_not_keep_an_upload_past_its_deadline(holder_node, stranger) -> None:
    """A body waiting its turn (or being read) kept the reaper off its upload: a stranger keeping one such body in
    flight after another held the upload's reservation for ever without staging a block.  Past its deadline the
    upload is aborted all the same, and the body waiting is told it is gone."""
    shares, store = holder_node.app[NODE].share_holder, holder_node.app[NODE].gateway.store
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    incoming = shares.get(upload, stranger.client.identity.public_key)
    waiting = asyncio.ensure_future(stranger.put_segments(upload, 1, f.blocks[0][1:2]))  # segment 0 never comes
    try:
        await eventually_async(lambda: incoming.receiving == 1 and not incoming.lock.locked(), "the body waiting")
        assert await shares.reap(incoming.deadline + 1) == 1
        with pytest.raises(PeerRefused) as err:
            await waiting
        refused(err, 404, "upload-not-found")
    finally:
        waiting.cancel()
    assert (len(shares), store.reserved) == (0, 0)


async def test_a_slow_body_is_cut_off_and_memory_stays_bounded(holder_node, stranger, monkeypatch) -> None:
    from xsc.node.http import shares as share_routes

    monkeypatch.setattr(share_routes, "BODY_SECONDS", 0.5)
    monkeypatch.setattr(share_routes, "MIN_UPLOAD_RATE", 10**12)
    shares = holder_node.app[NODE].share_holder
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    peers = holder_node.app[NODE].peers
    body = f.blocks[0][0]

    async def trickle():
        for i in range(len(body)):
            yield body[i:i + 1]
            await asyncio.sleep(0.01)

    from xsc.identity import sign_request

    path = f"/v1/peer/uploads/{upload}/segments/0"
    headers = sign_request(stranger.client.identity, "PUT", path, body, receiver=peers.identity.id)
    headers["Content-Length"] = str(len(body))  # its length said, its bytes trickled
    async with stranger.client.session.put(peers.url + path, data=trickle(), headers=headers,
                                           ssl=False) as response:  # TLS pinning is not the subject here
        answer = await response.json(content_type=None)
    assert response.status == 408 and answer["code"] == "body-timeout"
    assert _bodies(shares) == (0, 0)


async def test_a_segments_body_of_unsaid_length_is_refused_before_it_is_read(holder_node, stranger) -> None:
    """A body's length is checked against the bound before anything is allocated for it: a chunked one, whose length
    only its end tells, is refused, and the upload goes on."""
    shares = holder_node.app[NODE].share_holder
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    peers = holder_node.app[NODE].peers

    async def chunked():
        yield f.blocks[0][0]

    from xsc.identity import sign_request

    path = f"/v1/peer/uploads/{upload}/segments/0"
    headers = sign_request(stranger.client.identity, "PUT", path, f.blocks[0][0], receiver=peers.identity.id)
    async with stranger.client.session.put(peers.url + path, data=chunked(), headers=headers,
                                           ssl=False) as response:  # TLS pinning is not the subject here
        answer = await response.json(content_type=None)
    assert response.status == 400 and "Content-Length" in answer["detail"]
    assert _bodies(shares) == (0, 0)
    await stranger.put_segments(upload, 0, [f.blocks[0][0]])  # the upload goes on
    assert shares.get(upload, stranger.client.identity.public_key).next_segment == 1


async def test_a_segments_body_cut_short_leaves_the_upload_as_it_was(holder_node, stranger) -> None:
    """A body whose connection ends within it stages nothing and frees its room; the same segment then comes whole."""
    shares = holder_node.app[NODE].share_holder
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    body = b"".join(f.blocks[i][0] for i in range(3))
    writer = await _half_sent(holder_node, stranger, "PUT", f"/v1/peer/uploads/{upload}/segments/0", body)
    incoming = shares.get(upload, stranger.client.identity.public_key)
    await eventually_async(lambda: incoming.receiving == 1, "the body being read")
    writer.close()
    await eventually_async(lambda: incoming.receiving == 0 and _bodies(shares) == (0, 0), "the cut body let go")
    assert incoming.next_segment == 0
    await stranger.put_segments(upload, 0, [f.blocks[i][0] for i in range(3)])
    assert incoming.next_segment == 3


async def test_a_commit_body_counts_as_a_body_in_memory(holder_node, stranger) -> None:
    """A commit's body (up to 4.5 MiB of block hashes for a share of 65,536 segments) was read outside the bodies a
    holder holds in memory, MAX_BUFFERED in all and MAX_BODIES_PER_SENDER from one sender: a stranger's commits sent
    at once were bounded by nothing but its work quota.  It is counted as a segments body is, and let go once read."""
    shares = holder_node.app[NODE].share_holder
    f = EncodedFile(3 * 4096)
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, lease())
    await stranger.put_segments(upload, 0, f.blocks[0])
    incoming = shares.get(upload, stranger.client.identity.public_key)
    body = json.dumps({"block_hashes": [h.hex() for h in f.hashes[0]], "manifest": f.manifest.encode().hex()}).encode()
    writer = await _half_sent(holder_node, stranger, "POST", f"/v1/peer/uploads/{upload}/commit", body)
    await eventually_async(lambda: _bodies(shares) == (1, len(body)) and incoming.receiving == 1, "the commit counted",
                           timeout=5)
    writer.close()
    await eventually_async(lambda: _bodies(shares) == (0, 0), "the cut commit let go")
    await stranger.commit(upload, f.hashes[0], f.manifest.encode())
    assert holder_node.app[NODE].gateway.store.shares_held == 1


async def _half_sent(holder_node, stranger, method: str, path: str, body: bytes) -> asyncio.StreamWriter:
    """The first half of a signed request's body sent to the holder over a connection of its own (plaintext on
    loopback: signed), the rest never: the connection, to close."""
    from xsc.identity import sign_request
    from yarl import URL

    peers = holder_node.app[NODE].peers
    headers = sign_request(stranger.client.identity, method, path, body, receiver=peers.identity.id)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    url = URL(peers.url)
    _, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
                 + body[:len(body) // 2])
    await writer.drain()
    return writer


def _bodies(shares) -> tuple[int, int]:
    """The holder's bodies in flight and the bytes of those with room in memory, as its room for them says."""
    status = shares.bodies.status()
    return status["bodies"], status["body_bytes"]


async def _stalled_bodies(holder_node, address: str, size: int, ids: int = 1) -> list:
    """`ids` fresh strangers at `address` (a loopback address: a network of its own) each begin an upload, then send
    as many segments bodies at once as a holder takes from one sender, each saying `size` bytes and sending none of
    them; answers once the holder has them all in hand: their connections (reader, writer)."""
    from xsc.identity import sign_request
    from yarl import URL

    shares, peers = holder_node.app[NODE].share_holder, holder_node.app[NODE].peers
    url, connections, uploads = URL(peers.url), [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0))) as session:
        for _ in range(ids):
            identity = Identity.generate()
            holder = RemoteHolder(PeerClient(identity, session, 10.0), peers.identity.id, peers.url, DEAL_PRICE)
            upload = await holder.begin(os.urandom(32), 0, 16 * size, 4 * size, lease())  # a share of 4 bodies
            uploads.append(shares.get(upload, identity.public_key))
            path = f"/v1/peer/uploads/{upload}/segments/0"
            for _ in range(wire.MAX_BODIES_PER_SENDER):
                headers = sign_request(identity, "PUT", path, b"", receiver=peers.identity.id)
                head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                reader, writer = await asyncio.open_connection(url.host, url.port, local_addr=(address, 0))
                writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n{head}\r\n".encode())
                connections.append((reader, writer))
    await eventually_async(lambda: all(i.receiving == wire.MAX_BODIES_PER_SENDER for i in uploads),
                           "the strangers' bodies in hand")
    return connections


async def _let_go(connections: list, shares) -> None:
    for _, writer in connections:
        writer.close()
    await eventually_async(lambda: _bodies(shares) == (0, 0), "the strangers' bodies let go")


async def test_the_ids_of_one_network_hold_no_more_than_its_share_of_the_bodies_in_memory(holder_node, stranger,
                                                                                         monkeypatch) -> None:
    """Two stranger ids of one network, each with four bodies that say their length and send nothing, would take all
    the room a holder gives bodies in memory to their deadlines, an honest sender's body waiting for it without end.
    The senders of one network hold MAX_BUFFERED_PER_NETWORK of it at most together, and a body from another network
    is taken while theirs are held."""
    from xsc.node.http import shares as share_routes

    size = 256 * 1024  # the bounds scaled down: 8 such bodies fill the room, 4 fill a network's share
    monkeypatch.setattr(bodies, "MAX_BUFFERED", 8 * size)
    monkeypatch.setattr(bodies, "MAX_BUFFERED_PER_NETWORK", 4 * size)
    monkeypatch.setattr(share_routes, "BODY_STALL", 60.0)  # the strangers' bodies are held throughout
    shares, honest = holder_node.app[NODE].share_holder, stranger
    strangers = await _stalled_bodies(holder_node, "127.0.0.2", size, ids=2)
    try:
        f = EncodedFile(3 * 4096)
        upload = await honest.begin(f.si, 0, f.size, f.segment_size, lease())
        await asyncio.wait_for(honest.put_segments(upload, 0, f.blocks[0]), 10)  # a bound against the hang
        assert shares.get(upload, honest.client.identity.public_key).next_segment == f.count
        assert _bodies(shares) == (8, 4 * size)  # the strangers' bodies still in flight, half of them with room
    finally:
        await _let_go(strangers, shares)


async def test_a_body_that_stalls_is_cut_off_and_its_room_goes_to_a_body_waiting(holder_node, stranger,
                                                                              monkeypatch) -> None:
    """Strangers of two networks fill the room with bodies that send nothing: each is cut off (408) once less than
    MIN_BODY_RATE of it came for BODY_STALL, not at its deadline, and an honest body waiting for its room is taken."""
    from xsc.node.http import shares as share_routes

    size = 256 * 1024
    monkeypatch.setattr(bodies, "MAX_BUFFERED", 8 * size)
    monkeypatch.setattr(bodies, "MAX_BUFFERED_PER_NETWORK", 4 * size)
    monkeypatch.setattr(share_routes, "BODY_STALL", 1.0)
    shares, honest = holder_node.app[NODE].share_holder, stranger
    strangers = [*await _stalled_bodies(holder_node, "127.0.0.2", size),
                 *await _stalled_bodies(holder_node, "127.0.0.3", size)]
    try:
        f = EncodedFile(3 * 4096)
        upload = await honest.begin(f.si, 0, f.size, f.segment_size, lease())
        await asyncio.wait_for(honest.put_segments(upload, 0, f.blocks[0]), 10)  # a bound against the hang
        assert shares.get(upload, honest.client.identity.public_key).next_segment == f.count
        for reader, _ in strangers:
            answer = await asyncio.wait_for(reader.read(4096), 10)
            assert answer.startswith(b"HTTP/1.1 408") and b"body-timeout" in answer and b"less than" in answer
    finally:
        await _let_go(strangers, shares)


async def test_a_body_that_finds_no_room_in_time_is_refused_with_a_503_and_its_upload_goes_on(
        holder_node, stranger, monkeypatch) -> None:
    """A body waits for room ROOM_WAIT at most, not as long as the bodies holding it last, then is 503 storage-busy
    (a gateway drops the share from that holder and its put goes on), and the upload is as it was: the same body
    sent again once there is room is taken."""
    from xsc.node.http import shares as share_routes

    size = 256 * 1024
    monkeypatch.setattr(bodies, "MAX_BUFFERED", 8 * size)
    monkeypatch.setattr(bodies, "MAX_BUFFERED_PER_NETWORK", 4 * size)
    monkeypatch.setattr(bodies, "ROOM_WAIT", 0.5)
    monkeypatch.setattr(share_routes, "BODY_STALL", 60.0)  # the strangers' bodies are held throughout
    shares, honest = holder_node.app[NODE].share_holder, stranger
    strangers = [*await _stalled_bodies(holder_node, "127.0.0.2", size),
                 *await _stalled_bodies(holder_node, "127.0.0.3", size)]
    f = EncodedFile(3 * 4096)
    upload = await honest.begin(f.si, 0, f.size, f.segment_size, lease())
    try:
        with pytest.raises(PeerRefused) as err:
            await asyncio.wait_for(honest.put_segments(upload, 0, f.blocks[0]), 10)  # a bound against the hang
        refused(err, 503, "storage-busy")
        assert "had no room" in str(err.value)
    finally:
        await _let_go(strangers, shares)
    await honest.put_segments(upload, 0, f.blocks[0])
    assert shares.get(upload, honest.client.identity.public_key).next_segment == f.count


@pytest.mark.parametrize("file_size", [40_000, 3_000])  # shares sent in segments bodies; whole, in one request
async def test_a_put_sends_a_body_a_busy_holder_refused_again_after_the_time_it_names(holder_node, node_factory,
                                                                                       monkeypatch, file_size) -> None:
    """Strangers' bodies hold all the room a holder gives bodies in memory: a put's body to it is 503 storage-busy with
    Retry-After.  The put sends it again after that wait (capped), rather than drop its shares there."""
    from xsc.node.http import shares as share_routes

    size = 256 * 1024
    monkeypatch.setattr(bodies, "MAX_BUFFERED", 8 * size)
    monkeypatch.setattr(bodies, "MAX_BUFFERED_PER_NETWORK", 4 * size)
    monkeypatch.setattr(bodies, "ROOM_WAIT", 0.5)
    monkeypatch.setattr(share_routes, "BODY_STALL", 60.0)  # the strangers' bodies are held until let go
    monkeypatch.setattr(remote, "BUSY_WAIT_MOST", 2.0, raising=False)
    shares = holder_node.app[NODE].share_holder
    refused_busy, real_room = asyncio.Event(), shares.bodies.room

    @contextlib.asynccontextmanager
    async def room(*args):
        try:
            async with real_room(*args):
                yield
        except StorageBusy:
            refused_busy.set()
            raise

    monkeypatch.setattr(shares.bodies, "room", room)
    gateway = await node_factory("gateway", storage={"segment_size": 4096}, **QUIET)
    await gateway.app[NODE].peers.add(holder_node.app[NODE].peers.url)
    strangers = [*await _stalled_bodies(holder_node, "127.0.0.2", size),
                 *await _stalled_bodies(holder_node, "127.0.0.3", size)]
    status = await (await holder_node.get("/v1/node/status")).json()
    assert status["share_uploads"] == {"in_progress": 2, "senders": 2, "networks": 2, "bodies": 8,
                                       "body_bytes": 8 * size}
    try:
        putting = asyncio.ensure_future(gateway.post("/v1/store/files", params={"name": "f"}, data=os.urandom(file_size)))
        await asyncio.wait_for(refused_busy.wait(), 10)
    finally:
        await _let_go(strangers, shares)
    response = await putting
    put = await response.json()
    assert response.status == 201 and not put.get("lost"), put
    holder_id = holder_node.app[NODE].peers.identity.id
    on_holder = {s for s, node in enumerate(put["placement"]) if node == holder_id}
    si = Capability.parse(put["capability"]).storage_index
    assert on_holder and {m.share for m in holder_node.app[NODE].gateway.store.share_metas(si)} == on_holder


async def test_a_share_nobody_pays_for_is_not_kept_for_free(holder_node, stranger) -> None:
    store, terms, gc = holder_node.app[NODE].gateway.store, holder_node.app[NODE].terms, holder_node.app[NODE].lease_gc
    f = EncodedFile(5000)
    long_lease = int(time.time()) + MAX_DURATION
    upload = await stranger.begin(f.si, 0, f.size, f.segment_size, long_lease)
    await stranger.put_segments(upload, 0, f.blocks[0])
    await stranger.commit(upload, f.hashes[0], f.manifest.encode())
    assert store.shares_held == 1 and terms.get(f.si, 0)["uploader"] == public_id(stranger.client.identity.public_key)
    await gc.collect(now=time.time() + 1800)  # within the grace: kept
    assert store.shares_held == 1
    await gc.collect(now=time.time() + 3700)  # a payment interval's grace later, never paid: gone
    assert (store.shares_held, store.used, terms.get(f.si, 0)) == (0, 0, None)
    assert gc.counts["unpaid"] == 1


async def test_a_renewal_that_adds_no_time_writes_nothing(holder_node, stranger, monkeypatch) -> None:
    """Each renewal is a synced write, paid for by the time it adds: one asking for a lease no longer than the share
    has (a stranger's own share, renewed again and again) was an fsync a request for nothing.  It is answered with the
    lease as it is and writes nothing; a renewal that adds time still does, and another node's is refused."""
    f = EncodedFile(5000)
    await place(stranger, f, 0)
    held = holder_node.app[NODE].gateway.store.share_meta(f.si, 0).lease_expiry
    synced = record_synced_writes(monkeypatch)
    for shorter in (held, held - 3600, 0):
        assert await stranger.renew(f.si, 0, shorter) == {"lease_expiry": held, "previous": held}
    assert synced == []
    other = RemoteHolder(PeerClient(Identity.generate(), stranger.client.session, 10.0), stranger.node_id,
                         stranger.url, DEAL_PRICE)
    with pytest.raises(PeerRefused) as err:
        await other.renew(f.si, 0, held + 3600)
    refused(err, 403, "forbidden")
    assert synced == []
    assert (await stranger.renew(f.si, 0, held + 3600))["lease_expiry"] == held + 3600
    assert [keys.share(f.si, 0) in written for written in synced] == [True]


async def test_a_period_of_a_share_is_paid_once(holder_node, stranger) -> None:
    """Each storage receipt is an entry on the holder's chain for good (a signature, a synced write): an uploader
    asking for the same paid second again and again, each time under a fresh authorization, would get a receipt
    each time.  A period that ends within what is paid is refused; one that reaches past it is signed (a payer that
    gave up on a payment the holder had countersigned pays again from where its own record ends)."""
    f, payer, path = EncodedFile(5000), Identity.generate(), "/v1/peer/ledger/receipts"
    await place(RemoteHolder(stranger.client, stranger.node_id, stranger.url, DEAL_PRICE, payer.id), f, 0)
    chain, me = holder_node.app[NODE].ledger.store, parse_public_id(stranger.node_id)

    async def claim(start: int, end: int) -> tuple[int, dict]:
        amount = price_storage_period(f.share_bytes, start, end, DEAL_PRICE)
        body = json.dumps(receipt_claim(payer, stranger.node_id, f, start, end, amount)).encode()
        response = await holder_node.post(path, data=body, headers={
            **signed(stranger.client.identity, "POST", path, body, stranger.node_id), "Authorization": ""})
        return response.status, await response.json()

    end = int(time.time())
    status, answer = await claim(end - 2, end)
    assert status == 200 and answer["receipt"], answer
    seq = chain.state(me).seq
    for start, stop in ((end - 2, end), (end - 1, end), (end - 2, end - 1)) * 2:
        status, problem = await claim(start, stop)
        assert status == 403 and "paid already" in problem["detail"], problem
        assert problem["code"] == "claim-refused"  # its payer drops the authorization: it is never countersigned
    assert chain.state(me).seq == seq
    # No misbehaviour (six, past the five strikes that quarantine): a holder killed between counting a period as
    # paid and writing its receipt has an honest payer's retry ask exactly so, once a second.
    assert holder_node.app[NODE].quarantine.active(stranger.client.identity.id) is None
    status, answer = await claim(end, end + 1)
    assert status == 200 and answer["receipt"], answer
    status, answer = await claim(end - 2, end + 2)
    assert status == 200 and answer["receipt"], answer


async def test_a_claim_the_ledger_refuses_leaves_its_period_unpaid(holder_node, stranger) -> None:
    """The holder's check of a storage claim counts its period as paid; a claim the ledger then refuses (its
    authorization expired) was never countersigned, yet its period stood paid: a receipt for it was refused from
    then on (403 paid already), and the share no longer looked unpaid to the lease collector, all for one request
    with a stale authorization.  The ledger's own rules are checked before the claim."""
    f, payer, path = EncodedFile(5000), Identity.generate(), "/v1/peer/ledger/receipts"
    await place(RemoteHolder(stranger.client, stranger.node_id, stranger.url, DEAL_PRICE, payer.id), f, 0)
    chain, me = holder_node.app[NODE].ledger.store, parse_public_id(stranger.node_id)
    seq = chain.state(me).seq

    async def claim(start: int, end: int, expires_in: int) -> tuple[int, dict]:
        amount = price_storage_period(f.share_bytes, start, end, DEAL_PRICE)
        body = json.dumps(receipt_claim(payer, stranger.node_id, f, start, end, amount,
                                        expires_in=expires_in)).encode()
        response = await holder_node.post(path, data=body, headers={
            **signed(stranger.client.identity, "POST", path, body, stranger.node_id), "Authorization": ""})
        return response.status, await response.json()

    end = int(time.time())
    status, problem = await claim(end - 2, end, -1000)
    assert status == 422 and problem["code"] == "authorization-expired", problem
    assert chain.state(me).seq == seq
    status, answer = await claim(end - 2, end, 600)
    assert status == 200 and answer["receipt"], answer


async def test_terms_are_kept_with_the_share_exactly(holder_node, stranger) -> None:
    f = EncodedFile(5000)
    await place(stranger, f, 3)
    raw = holder_node.app[NODE].gateway.store.db.get(keys.holder_terms(f.si, 3))
    assert json.loads(raw)["price"] == DEAL_PRICE


async def test_a_share_of_more_than_65536_segments_is_refused(node_factory) -> None:
    """250k tiny segments made every read of the share load their metadata (RSS 184 -> 888 MiB): a share has at
    most MAX_SEGMENTS_PER_SHARE segments, refused at begin before anything is reserved."""
    node = await node_factory("roomy", **QUIET)
    peers = node.app[NODE].peers
    cap = holder_module.MAX_SEGMENTS_PER_SHARE
    assert cap == 65_536
    async with aiohttp.ClientSession() as session:
        holder = RemoteHolder(PeerClient(Identity.generate(), session, 30.0), peers.identity.id, peers.url, DEAL_PRICE)
        f = EncodedFile(5000, segment_size=4096)
        with pytest.raises(PeerRefused) as err:
            await holder.begin(f.si, 0, (cap + 1) * 4096, 4096, lease())
        refused(err, 400, "invalid-argument")
        assert f"{cap + 1} segments" in str(err.value)
        assert node.app[NODE].gateway.store.reserved == 0 and len(node.app[NODE].share_holder) == 0
        upload = await holder.begin(f.si, 0, cap * 4096, 4096, lease())  # the cap itself is taken
        assert len(node.app[NODE].share_holder) == 1
        await holder.abort(upload)
    assert node.app[NODE].gateway.store.reserved == 0


async def test_a_share_number_of_more_digits_than_int_reads_is_a_400(holder_node) -> None:
    """int() raises on thousands of digits: a stranger's share number of 5,000 zeros in the path was a 500."""
    node_id = holder_node.app[NODE].peers.identity.id
    stranger = Identity.generate()
    for method, tail in (("GET", ""), ("GET", "/blocks?from=0&count=1"), ("DELETE", ""), ("POST", "/renew")):
        path = f"/v1/peer/shares/{'ab' * 32}/{'0' * 5000}{tail}"
        headers = {**signed(stranger, method, path, b"", node_id), "Authorization": ""}
        answer = await holder_node.request(method, path, data=b"", headers=headers)
        assert answer.status == 400 and (await answer.json())["code"] == "invalid-argument", (method, tail)


async def _refused_within_40(node_factory, name: str, f: EncodedFile, ask) -> list:
    """A stranger's asks of the share `f` (placed at a work rate of 20 units a second, a burst of 160) until one is
    refused for its quota: 40 at the price of their headers alone would cost 40 of the burst.  The answers before."""
    node = await node_factory(name, health=QUIET["health"], peers={**QUIET["peers"], "work_rate": 20},
                              storage={"capacity": 64 * 1024**2, "unpaid_grace": 3600})
    peers = node.app[NODE].peers
    async with aiohttp.ClientSession() as session:
        def holder() -> RemoteHolder:
            return RemoteHolder(PeerClient(Identity.generate(), session, 30.0), peers.identity.id, peers.url,
                                DEAL_PRICE)

        await place(holder(), f, 1)
        reader, answers = holder(), []
        while len(answers) < 40:
            try:
                answers.append(await ask(reader))
            except PeerRefused as err:
                refused(err, 429, "quota-exceeded")
                return answers
    pytest.fail(f"40 asks of {name}'s share were never refused")


async def test_reading_a_shares_metadata_costs_its_size(node_factory) -> None:
    """Any key may read a share's metadata (a capability is read from any node), but the answer of a share of
    many segments is its block hashes, ~67 bytes a segment: the reader's work quota pays for its size, so a
    stranger cannot ask for a megabyte of hashes many times a second for the price of a header (a read of the share
    below costs 1 + 33)."""
    f = EncodedFile(2048 * 4096, segment_size=4096)
    answers = await _refused_within_40(node_factory, "read", f, lambda reader: reader.meta(f.si, 1))
    assert answers and len(answers[0]["block_hashes"]) == 2048


async def test_an_audit_costs_the_size_of_its_block(node_factory) -> None:
    """Any key may audit a share, and the answer is its block in hex: a request of a few bytes made the holder read a
    block and write twice its length (~100 ms of the event loop and ~80 MiB for a 64 MiB segment's block) for the
    price of its headers.  The reader's work quota pays for the block's length before it is read (an audit of the
    64 KiB blocks below costs 1 + 16)."""
    f = EncodedFile(2 * 256 * 1024, segment_size=256 * 1024)
    answers = await _refused_within_40(node_factory, "audited", f, lambda reader: reader.audit(f.si, 1, 1, f.manifest))
    assert answers and answers[0][0] == f.blocks[1][1]


async def test_reading_a_shares_blocks_costs_their_length(node_factory) -> None:
    """Any key may read a share's blocks (they are ciphertext, checked by the reader against its capability), but a
    request of a few bytes asks for up to 64 blocks: the reader's work quota pays for the answer's length before a
    block is read, a unit per 64 KiB as a body sent to the holder pays (a read of the 16 blocks of 64 KiB below
    costs 1 + 16)."""
    f = EncodedFile(16 * 256 * 1024, segment_size=256 * 1024)
    answers = await _refused_within_40(node_factory, "blocks", f, lambda reader: reader.blocks(
        f.si, 1, 0, f.count, f.lengths(0, f.count)))
    assert answers and answers[0] == f.blocks[1]


async def test_a_reader_that_takes_no_blocks_is_cut_off(node_factory, monkeypatch) -> None:
    """A reader of a share's blocks that takes none of the answer held its handler, its connection and the blocks
    read for it for as long as it stayed connected.  One that takes nothing for the holder's BODY_STALL is cut."""
    from xsc.identity import sign_request
    from xsc.node.http import shares as share_routes
    from xsc.serve import direct
    from yarl import URL

    monkeypatch.setattr(share_routes, "BODY_STALL", 0.5)
    cut, real_reset = asyncio.Event(), direct._reset

    def reset(transport) -> None:
        cut.set()
        real_reset(transport)

    monkeypatch.setattr(direct, "_reset", reset)
    node = await node_factory("read", **QUIET, storage={"capacity": 64 * 1024**2, "unpaid_grace": 3600})
    peers = node.app[NODE].peers
    f = EncodedFile(32 * 1024**2, segment_size=4 * 1024**2)  # a share of 8 blocks of 1 MiB: more than sockets buffer
    async with aiohttp.ClientSession() as session:
        reader = RemoteHolder(PeerClient(Identity.generate(), session, 30.0), peers.identity.id, peers.url, DEAL_PRICE)
        await place(reader, f, 1)
        path = f"/v1/peer/shares/{f.si.hex()}/1/blocks?from=0&count={f.count}"
        head = "".join(f"{k}: {v}\r\n" for k, v in sign_request(reader.client.identity, "GET", path, b"",
                                                                 receiver=peers.identity.id).items())
        url = URL(peers.url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that takes nothing: a small window
        sock.connect((url.host, url.port))
        try:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
            await asyncio.wait_for(cut.wait(), 20)  # a bound against the hang
        finally:
            sock.close()


async def _stalled_readers(holder_node, address: str, f: EncodedFile, share: int, readers: int) -> list:
    """`readers` fresh strangers at `address` each ask for every block of a share and take none of the answer (their
    receive buffers kept small): their connections (reader, writer)."""
    from xsc.identity import sign_request
    from yarl import URL

    peers = holder_node.app[NODE].peers
    url, connections = URL(peers.url), []
    path = f"{wire.share_path(f.si, share)}/blocks?from=0&count={f.count}"
    for _ in range(readers):
        headers = sign_request(Identity.generate(), "GET", path, b"", receiver=peers.identity.id)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((address, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        connections.append((reader, writer))
    return connections


async def test_readers_that_take_their_blocks_at_a_trickle_hold_no_more_than_their_networks_share_of_memory(
        node_factory, monkeypatch) -> None:
    """Eight readers of one network ask for a share's blocks and take none of them: once the kernel's buffers are
    full, each answer's run of blocks, read from the store, would be held in memory until its reader is cut off, one
    each and as many more readers as they send.  The runs all answers hold are bounded (node-wide, and half of it per
    network): past it their runs wait for room (503 once they waited too long), a reader from another network is
    served meanwhile, and the room is given back as the readers go."""
    from xsc.node.http import shares as share_routes
    from xsc.storage import block_answers

    holder_node = await node_factory("holder", **QUIET, storage={"capacity": 64 * 1024**2})
    f = EncodedFile(16 * 1024**2, 1024**2)  # a share of 4 MiB in 16 blocks: more than the kernel buffers take
    block = len(f.blocks[0][0])  # the bounds scaled down: a run is a block, 4 of them a network's share
    monkeypatch.setattr(block_answers, "READ_RUN", 64 * 1024)
    monkeypatch.setattr(block_answers, "MAX_READ_AHEAD", 8 * block)
    monkeypatch.setattr(block_answers, "MAX_READ_AHEAD_PER_NETWORK", 4 * block)
    monkeypatch.setattr(block_answers, "READ_WAIT", 1.0)
    monkeypatch.setattr(share_routes, "BODY_STALL", 60.0)  # the readers' answers are held throughout
    room = holder_node.app[NODE].share_holder.answers.room
    async with _from_address(holder_node, "127.0.0.1") as honest:
        await place(honest, f, 0)
        readers = await _stalled_readers(holder_node, "127.0.0.2", f, 0, 8)
        try:
            heads = [await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) for reader, _ in readers]
            assert any(h.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in h for h in heads), heads
            assert room.status()["answer_bytes"] <= 4 * block
            blocks = await asyncio.wait_for(honest.blocks(f.si, 0, 0, f.count, f.lengths(0, f.count)), 10)
            assert blocks == f.blocks[0]  # from 127.0.0.1, another network
            assert room.status()["answer_bytes"] <= 4 * block
        finally:
            for _, writer in readers:
                writer.close()
        await eventually_async(lambda: room.status() == {"answer_bytes": 0, "answers_waiting": 0},
                               "the room given back")
