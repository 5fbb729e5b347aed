"""Placing a share on another node and reading, auditing and deleting it there (signed peer requests)."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc import keys
from xsc.errors import BadRequest, PeerRefused, PeerUnreachable, StorageFull
from xsc.identity import sign_request
from xsc.storage import holder_client as remote_holder
from xsc.storage.core import wire
from xsc.node.appkeys import IDENTITY, NODE
from xsc.node.datadir import open_db
from xsc.storage.holder_client import RemoteHolder
from xsc.storage.core.wire import check_audit, proof_sides
from xsc.storage import block_answers, holder as holder_module
from xsc.storage.holder import IDLE_TIMEOUT
from xsc.storage.core.wire import block_lengths, body_parts, split_blocks
from xsc.storage.core import layout
from xsc.storage.core.manifest import decode_manifest
from xsc.storage.core.merkle import block_hash, proof

from tests.support.peers import api, node_id
from tests.support.waiting import eventually_async
from tests.support.shares import (DEAL_PRICE, SEGMENT, SHARE, EncodedFile, holder_net, lease, nothing_staged,
                                  place, refused)

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


@pytest.fixture
async def net(node_factory):
    return await holder_net(node_factory)


async def test_a_share_is_placed_read_audited_and_deleted_by_its_uploader_only(net) -> None:
    store, from_a, from_c = net["store"], net["from_a"], net["from_c"]
    f = EncodedFile(3 * SEGMENT + 1000)  # 4 segments, the last one short
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    assert store.reserved == f.share_bytes and store.used == 0  # reserved whole before any block arrives
    await from_a.put_segments(upload, 0, f.blocks[SHARE][:2])
    await from_a.put_segments(upload, 2, f.blocks[SHARE][2:])
    await from_a.commit(upload, f.hashes[SHARE], f.manifest.encode())
    assert (store.used, store.reserved, store.shares_held) == (f.share_bytes, 0, 1)

    # Any node may read and audit the share: the reader checks everything against the capability.
    meta = await from_c.meta(f.si, SHARE)
    assert meta["uploader"] == net["a"].app[NODE].peers.identity.id
    assert (meta["segment_count"], meta["stored_bytes"]) == (4, f.share_bytes)
    assert meta["block_hashes"] == f.hashes[SHARE]
    assert decode_manifest(meta["manifest"], f.manifest.digest()) == f.manifest
    assert await from_c.blocks(f.si, SHARE, 1, 3, f.lengths(1, 3)) == f.blocks[SHARE][1:]
    assert await from_c.blocks(f.si, SHARE, 0, 4, f.lengths(0, 4)) == f.blocks[SHARE]
    for segment in range(4):
        block, path = await from_c.audit(f.si, SHARE, segment, f.manifest)
        assert block == f.blocks[SHARE][segment]
        assert check_audit(block, path, f.manifest.share_root(SHARE), segment, 4)
    # An answer for another block than the one asked, or against another share's root, fails.
    block, path = await from_c.audit(f.si, SHARE, 0, f.manifest)
    assert not check_audit(block, path, f.manifest.share_root(SHARE), 1, 4)
    assert not check_audit(block, path, f.manifest.share_root(SHARE + 1), 0, 4)

    # The uploader may place more shares of its file here; nobody else may, nor the same share twice.
    await place(from_a, f, SHARE + 1)
    assert store.used == 2 * f.share_bytes
    with pytest.raises(PeerRefused) as err:
        await from_c.begin(f.si, 4, f.size, f.segment_size, lease())
    refused(err, 409, "share-exists")
    with pytest.raises(PeerRefused) as err:
        await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    refused(err, 409, "share-exists")

    # Only the uploader may delete; deleting frees exactly the share's bytes.
    with pytest.raises(PeerRefused) as err:
        await from_c.delete(f.si, SHARE)
    refused(err, 403, "forbidden")
    assert store.used == 2 * f.share_bytes
    await from_a.delete(f.si, SHARE)
    assert (store.used, store.shares_held) == (f.share_bytes, 1)
    with pytest.raises(PeerRefused) as err:
        await from_c.meta(f.si, SHARE)
    refused(err, 404, "share-not-found")
    assert store.manifest(f.si) is not None  # share 3 still needs it
    await from_a.delete(f.si, SHARE + 1)
    assert (store.used, store.shares_held, store.manifest(f.si)) == (0, 0, None)
    assert nothing_staged(store, f.si)


async def test_commits_that_do_not_check_out_are_refused_and_leave_nothing_staged(net) -> None:
    store, from_a, from_c = net["store"], net["from_a"], net["from_c"]
    f = EncodedFile(4 * SEGMENT)  # 4 full segments
    blocks, hashes, manifest = f.blocks[SHARE], f.hashes[SHARE], f.manifest.encode()
    wrong_hash = [*hashes[:2], block_hash(b"other"), hashes[3]]
    other_root = list(f.manifest.share_roots)
    other_root[SHARE] = f.manifest.share_roots[SHARE + 1]
    wrong_root = replace(f.manifest, share_roots=tuple(other_root)).encode()
    damaged = [*blocks[:3], bytes([blocks[3][0] ^ 1]) + blocks[3][1:]]

    async def send(batches, commit_hashes=hashes, commit_manifest=manifest) -> tuple[str, PeerRefused]:
        upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
        for first, part in batches:
            await from_a.put_segments(upload, first, part)
        with pytest.raises(PeerRefused) as err:
            await from_a.commit(upload, commit_hashes, commit_manifest)
        assert nothing_staged(store, f.si) and store.used == 0
        with pytest.raises(PeerRefused) as gone:  # aborted: the upload is no more
            await from_a.put_segments(upload, 0, blocks[:1])
        refused(gone, 404, "upload-not-found")
        return upload, err

    whole = [(0, blocks)]
    refused((await send(whole, commit_hashes=wrong_hash))[1], 409, "share-mismatch")
    refused((await send([(0, damaged)]))[1], 409, "share-mismatch")
    _, err = await send(whole, commit_manifest=wrong_root)
    refused(err, 409, "share-mismatch")
    assert "root" in str(err.value)
    refused((await send(whole, commit_manifest=b"{}"))[1], 400, "invalid-argument")
    _, err = await send([(0, blocks[:2])])
    refused(err, 409, "upload-incomplete")
    assert "2 of 4" in str(err.value)
    # Out of order (staged already, or past the share's end): refused (the uploader may go on from the segment
    # expected), then the commit fails.
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    await from_a.put_segments(upload, 0, blocks[:1])
    for first in (4, 0):
        with pytest.raises(PeerRefused) as err:
            await from_a.put_segments(upload, first, blocks[3:4])
        refused(err, 409, "segment-out-of-order")
        assert err.value.details["peer_status"] == 409 and "segment 1 is next" in str(err.value)
    with pytest.raises(PeerRefused) as err:
        await from_a.commit(upload, hashes, manifest)
    refused(err, 409, "upload-incomplete")
    assert nothing_staged(store, f.si)

    # A body that does not split into whole blocks is refused (400) and stages nothing; one longer than the
    # whole share is refused from its length (413), before it is read.
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    for body in ([blocks[0][:-1]], [blocks[0] + b"x"]):  # short, long
        with pytest.raises(PeerRefused) as err:
            await from_a.put_segments(upload, 0, body)
        refused(err, 400, "bad-request")
    with pytest.raises(PeerRefused) as err:
        await from_a.put_segments(upload, 0, [*blocks, blocks[3]])  # a block too many
    refused(err, 413, "payload-too-large")
    # Only the uploader may send to, commit or abort its upload.
    for attempt in (from_c.put_segments(upload, 0, blocks[:1]), from_c.commit(upload, hashes, manifest),
                    from_c.abort(upload)):
        with pytest.raises(PeerRefused) as err:
            await attempt
        refused(err, 403, "forbidden")
    await from_a.put_segments(upload, 0, blocks[:2])
    assert store.reserved == f.share_bytes
    await from_a.abort(upload)
    assert nothing_staged(store, f.si)

    # An upload left idle is aborted by the holder.
    holder = net["b"].app[NODE].share_holder
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    await from_a.put_segments(upload, 0, blocks[:3])
    assert await holder.reap() == 0
    assert await holder.reap(holder.clock() + IDLE_TIMEOUT + 1) == 1
    assert nothing_staged(store, f.si) and len(holder) == 0

    # After all that, the share still goes through, and the capacity is exact.
    await place(from_a, f)
    assert (store.used, store.reserved) == (f.share_bytes, 0)


async def test_a_body_sent_ahead_waits_its_turn_and_one_whose_turn_never_comes_is_refused(net, monkeypatch) -> None:
    store, from_a = net["store"], net["from_a"]
    f = EncodedFile(4 * SEGMENT)
    blocks, hashes, manifest = f.blocks[SHARE], f.hashes[SHARE], f.manifest.encode()
    # Segments 2-3 sent before 1 (on another connection): staged after it, and the share commits.
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    await from_a.put_segments(upload, 0, blocks[:1])
    later = asyncio.ensure_future(from_a.put_segments(upload, 2, blocks[2:]))
    incoming = next(iter(net["b"].app[NODE].share_holder._incoming.values()))
    await eventually_async(lambda: incoming.receiving == 1 and not incoming.lock.locked(), "the later body waiting")
    assert not later.done() and incoming.next_segment == 1
    await from_a.put_segments(upload, 1, blocks[1:2])
    await later
    await from_a.commit(upload, hashes, manifest)
    assert store.share_meta(f.si, SHARE) is not None
    await from_a.delete(f.si, SHARE)

    # A body whose turn does not come in time is refused, and the upload goes on from the segment expected.
    monkeypatch.setattr(holder_module, "TURN_WAIT", 0.2)
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    with pytest.raises(PeerRefused) as err:
        await from_a.put_segments(upload, 2, blocks[2:])
    refused(err, 409, "segment-out-of-order")
    assert "segment 0 is next" in str(err.value)
    await from_a.put_segments(upload, 0, blocks)
    await from_a.commit(upload, hashes, manifest)
    await from_a.delete(f.si, SHARE)

    # One waiting when its upload is aborted is told at once that the upload is gone.
    monkeypatch.setattr(holder_module, "TURN_WAIT", 60.0)
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    waiting = asyncio.ensure_future(from_a.put_segments(upload, 3, blocks[3:]))
    incoming = next(iter(net["b"].app[NODE].share_holder._incoming.values()))
    await eventually_async(lambda: incoming.receiving == 1 and not incoming.lock.locked(), "the body waiting")
    await from_a.abort(upload)
    with pytest.raises(PeerRefused) as err:
        await waiting
    refused(err, 404, "upload-not-found")
    assert nothing_staged(store, f.si)


def test_a_body_may_run_ahead_of_its_turn_by_a_few_bodies_only() -> None:
    """A sender may have MAX_BODIES_PER_SENDER bodies in flight: one may run that many bodies ahead, never past the
    share's end, never behind."""
    from types import SimpleNamespace
    from xsc.errors import SegmentOutOfOrder
    gib, mib = 1024**3, 1024**2
    incoming = SimpleNamespace(size=gib, segment_size=mib, segment_count=1024, next_segment=10)
    block = block_lengths(gib, mib, 0, 1)[0]
    most = (wire.MAX_BODIES_PER_SENDER - 1) * wire.put_limit(gib, mib) // block  # segments ahead at most
    holder = holder_module.ShareHolder.__new__(holder_module.ShareHolder)
    for first in (10, 11, 10 + most):
        holder.check_order(incoming, first)
    for first in (9, 0, 11 + most, 1024):
        with pytest.raises(SegmentOutOfOrder):
            holder.check_order(incoming, first)


async def test_bad_requests_are_refused_with_problems(net) -> None:
    a, b, store, from_a = net["a"], net["b"], net["store"], net["from_a"]
    f = EncodedFile(2 * SEGMENT + 5)
    await place(from_a, f)
    si = f.si.hex()
    b_url, b_id = b.app[NODE].peers.url, b.app[NODE].peers.identity.id

    async def ask(method: str, path: str, status: int, code: str, **kwargs) -> None:
        with pytest.raises(PeerRefused) as err:
            await a.app[NODE].peers.request(b_url, method, path, to=b_id, max_size=1 << 20, **kwargs)
        refused(err, status, code)

    begin = {"size": 10, "segment_size": SEGMENT, "lease_expiry": lease(), "price": DEAL_PRICE}
    other = os.urandom(32).hex()
    await ask("POST", f"/v1/peer/shares/{si[:-1]}/0/uploads", 400, "invalid-argument", json=begin)
    await ask("POST", f"/v1/peer/shares/{si.upper()}/0/uploads", 400, "invalid-argument", json=begin)
    for share in ("6", "-1", "x", "01a"):
        await ask("GET", f"/v1/peer/shares/{si}/{share}", 400, "invalid-argument")
    for bad in ({**begin, "size": "10"}, {**begin, "size": -1}, {**begin, "segment_size": 100},
                {**begin, "lease_expiry": int(time.time()) - 1}, {**begin, "size": True}, {}):
        await ask("POST", f"/v1/peer/shares/{other}/0/uploads", 400, "invalid-argument", json=bad)
    await ask("POST", f"/v1/peer/shares/{other}/0/uploads", 400, "invalid-argument", data=b"not json")
    await ask("POST", f"/v1/peer/shares/{other}/0/uploads", 507, "storage-full", json={**begin, "size": 2**45})
    # Nothing is stored for another node without a priced deal at or above the holder's ask.
    await ask("POST", f"/v1/peer/shares/{other}/0/uploads", 403, "deal-refused", json={**begin, "price": None})
    await ask("POST", f"/v1/peer/shares/{other}/0/uploads", 403, "deal-refused", json={**begin, "price": 1})
    await ask("GET", f"/v1/peer/shares/{other}/0", 404, "share-not-found")
    await ask("GET", f"/v1/peer/shares/{si}/{SHARE + 1}/blocks?from=0&count=1", 404, "share-not-found")
    for query, status, code in (("from=x&count=1", 400, "invalid-argument"), ("count=1", 400, "invalid-argument"),
                                ("from=0&count=0", 400, "invalid-argument"), ("from=0&count=65", 400,
                                                                               "invalid-argument"),
                                ("from=0&count=1.5", 400, "invalid-argument"),
                                ("from=-1&count=1", 400, "invalid-argument"), ("from=0&count=-1", 400,
                                                                                "invalid-argument"),
                                (f"from={'9' * 20}&count=1", 400, "invalid-argument"),
                                (f"from={2**63 - 1}&count=64", 416, "range-not-satisfiable"),
                                ("from=2&count=2", 416, "range-not-satisfiable"),
                                ("from=3&count=1", 416, "range-not-satisfiable")):
        await ask("GET", f"/v1/peer/shares/{si}/{SHARE}/blocks?{query}", status, code)
    for body, status, code in (({"segment": 3}, 416, "range-not-satisfiable"), ({"segment": "1"}, 400,
                                                                                  "invalid-argument"),
                               ({}, 400, "invalid-argument")):
        await ask("POST", f"/v1/peer/shares/{si}/{SHARE}/audit", status, code, json=body)
    await ask("PUT", "/v1/peer/uploads/00ff/segments/0", 404, "upload-not-found", data=b"x")
    await ask("POST", "/v1/peer/uploads/00ff/commit", 404, "upload-not-found", json={})
    await ask("DELETE", "/v1/peer/uploads/00ff", 404, "upload-not-found")
    upload = await from_a.begin(bytes.fromhex(other), 0, 10, SEGMENT, lease())
    await ask("PUT", f"/v1/peer/uploads/{upload}/segments/x", 400, "invalid-argument", data=b"x")
    # A body other than the one signed is not the uploader's: refused, and the upload goes on untouched.
    path = f"/v1/peer/uploads/{upload}/segments/0"
    length = block_lengths(10, SEGMENT, 0, 1)[0]
    response = await b.put(path, data=b"b" * length,
                           headers=sign_request(a.app[IDENTITY], "PUT", path, b"a" * length, receiver=b_id))
    assert response.status == 401 and (await response.json())["code"] == "bad-signature"
    with store.db.iterator(prefix=keys.blocks_of(bytes.fromhex(other))) as staged:
        assert list(staged) == []
    await from_a.put_segments(upload, 0, [b"a" * length])
    await from_a.abort(upload)

    # Requests without a signature never reach the handlers (b's test client sends its API token only).
    for method, path in (("GET", f"/v1/peer/shares/{si}/{SHARE}"), ("DELETE", f"/v1/peer/shares/{si}/{SHARE}"),
                         ("POST", f"/v1/peer/shares/{other}/0/uploads"),
                         ("PUT", f"/v1/peer/uploads/{upload}/segments/0")):
        response = await b.request(method, path, data=b"{}")
        assert response.status == 401 and (await response.json())["code"] == "unsigned-request"
    assert (store.shares_held, store.used) == (1, f.share_bytes) and nothing_staged(store, bytes.fromhex(other))


@pytest.mark.slow
async def test_a_holder_killed_mid_upload_keeps_nothing_staged(node_factory, node_process) -> None:
    a = await node_factory("a", **QUIET)
    proc = node_process("holder")
    holder = RemoteHolder(a.app[NODE].peers.client, node_id(proc), proc.url, DEAL_PRICE)
    f = EncodedFile(5 * SEGMENT)
    upload = await holder.begin(f.si, SHARE, f.size, f.segment_size, lease())
    await holder.put_segments(upload, 0, f.blocks[SHARE][:3])
    assert api(proc, "GET", "/v1/node/status")[1]["storage"]["reserved"] == f.share_bytes
    proc.kill()
    proc.start()
    storage = api(proc, "GET", "/v1/node/status")[1]["storage"]
    assert (storage["used"], storage["reserved"], storage["shares"]) == (0, 0, 0)
    with pytest.raises(PeerRefused) as err:
        await holder.put_segments(upload, 3, f.blocks[SHARE][3:])
    refused(err, 404, "upload-not-found")
    # The restarted holder (same id) takes the share afresh.
    await place(holder, f)
    assert (await holder.meta(f.si, SHARE))["block_hashes"] == f.hashes[SHARE]
    await holder.delete(f.si, SHARE)
    proc.stop()
    db = open_db(proc.data_dir)
    try:
        assert list(db.iterator(prefix=keys.blocks_of(f.si))) == []
        assert list(db.iterator(prefix=keys.UPLOADS)) == []
        assert db.get(keys.STORAGE_USED) == bytes(8)
    finally:
        db.close()


async def test_blocks_bigger_than_a_buffered_request_stream_both_ways(net, monkeypatch) -> None:
    store, from_a, from_c = net["store"], net["from_a"], net["from_c"]
    f = EncodedFile(5 * 1024**2 + 123, segment_size=1024**2)  # 6 blocks of 256 KiB per share
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    await from_a.put_segments(upload, 0, f.blocks[SHARE])  # one body of 1.5 MiB, more than a buffered request
    await from_a.commit(upload, f.hashes[SHARE], f.manifest.encode())
    assert await from_c.blocks(f.si, SHARE, 0, 6, f.lengths(0, 6)) == f.blocks[SHARE]
    block, path = await from_c.audit(f.si, SHARE, 5, f.manifest)
    assert check_audit(block, path, f.manifest.share_root(SHARE), 5, 6)

    # A holder takes a bounded body per request (always room for one block); the client sends batches under it.
    monkeypatch.setattr(wire, "MAX_PUT_BYTES", 300 * 1024)
    upload = await from_a.begin(f.si, SHARE + 1, f.size, f.segment_size, lease())
    with pytest.raises(PeerRefused) as err:
        await from_a.put_segments(upload, 0, f.blocks[SHARE + 1][:2])
    refused(err, 413, "payload-too-large")
    monkeypatch.setattr(remote_holder, "MAX_PUT_BYTES", 300 * 1024)
    await from_a.put_segments(upload, 0, f.blocks[SHARE + 1])
    await from_a.commit(upload, f.hashes[SHARE + 1], f.manifest.encode())
    assert (store.used, store.reserved) == (2 * f.share_bytes, 0)


async def test_a_range_is_read_in_runs_of_blocks_and_a_block_missing_in_it_cuts_the_answer(net, monkeypatch) -> None:
    # Each run of one block here (the store is read one trip per READ_RUN bytes): the answer is the same.
    monkeypatch.setattr(block_answers, "READ_RUN", 1)
    store, from_a, from_c = net["store"], net["from_a"], net["from_c"]
    f = EncodedFile(4 * SEGMENT + 100)  # the last block shorter
    await place(from_a, f, SHARE)
    assert await from_c.blocks(f.si, SHARE, 0, 5, f.lengths(0, 5)) == f.blocks[SHARE]
    assert await from_c.blocks(f.si, SHARE, 4, 1, f.lengths(4, 1)) == f.blocks[SHARE][4:]
    monkeypatch.setattr(block_answers, "READ_RUN", 2 * len(f.blocks[SHARE][0]) + 1)  # runs of three blocks
    assert await from_c.blocks(f.si, SHARE, 1, 4, f.lengths(1, 4)) == f.blocks[SHARE][1:]
    # A block missing, or not of its length, after the answer began (in the first run, or a later one): the answer
    # (its length said before the blocks were read) is cut short.
    for damage in (lambda key: store.db.put(key, b"x"), store.db.delete):
        damage(keys.block(f.si, SHARE, 3))
        for run in (1, 10 * len(f.blocks[SHARE][0])):
            monkeypatch.setattr(block_answers, "READ_RUN", run)
            with pytest.raises((PeerRefused, PeerUnreachable)):  # cut: as a short body, or a closed connection
                await from_c.blocks(f.si, SHARE, 0, 5, f.lengths(0, 5))
    # Missing as the first block asked: a 404 before any answer.
    with pytest.raises(PeerRefused) as err:
        await from_c.blocks(f.si, SHARE, 3, 2, f.lengths(3, 2))
    refused(err, 404, "share-not-found")


# --- pure parts --------------------------------------------------------------------------
@given(size=st.integers(0, 40_000), segment_size=st.integers(4096, 9000), data=st.data())
def test_a_run_of_blocks_splits_back_exactly(size: int, segment_size: int, data) -> None:
    count = layout.segment_count(size, segment_size)
    first = data.draw(st.integers(0, count - 1))
    n = data.draw(st.integers(1, count - first))
    lengths = block_lengths(size, segment_size, first, n)
    assert sum(block_lengths(size, segment_size, 0, count)) == layout.share_bytes(size, segment_size)
    blocks = [bytes([i % 256]) * length for i, length in enumerate(lengths)]
    assert split_blocks(b"".join(blocks), size, segment_size, first) == blocks
    # ... and so does the body as the chunks it arrived in, cut anywhere; a block that is one whole chunk is kept as
    # it is
    body = b"".join(blocks)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(body)), max_size=6))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    assert split_blocks(chunks, size, segment_size, first) == blocks
    assert all(a is b for a, b in zip(split_blocks(blocks, size, segment_size, first), blocks))
    # A body read into the parts body_parts names is its blocks, each passed on as the buffer it was read into; what
    # follows the share's last block (a commit's JSON), or a block cut short, is one part more
    assert body_parts(size, segment_size, first, sum(lengths)) == lengths
    read = [bytearray(block) for block in blocks]
    assert all(a is b for a, b in zip(split_blocks(read, size, segment_size, first), read))
    if first + n == count:
        assert body_parts(size, segment_size, first, sum(lengths) + 7) == [*lengths, 7]
    else:
        assert body_parts(size, segment_size, first, sum(lengths) + 1) == [*lengths, 1]
    assert body_parts(size, segment_size, count, 5) == [5]  # past the last segment: one part, which split refuses
    cut = data.draw(st.integers(1, sum(lengths) - 1)) if sum(lengths) > 1 else None
    if cut is not None and cut not in {sum(lengths[:i]) for i in range(1, n)}:
        with pytest.raises(BadRequest, match="split"):
            split_blocks(b"".join(blocks)[:cut], size, segment_size, first)


@given(count=st.integers(1, 300), data=st.data())
def test_proof_sides_are_the_sides_of_the_merkle_path(count: int, data) -> None:
    index = data.draw(st.integers(0, count - 1))
    hashes = [block_hash(i.to_bytes(4, "big")) for i in range(count)]
    assert [left for left, _ in proof(hashes, index)] == proof_sides(index, count)


@asynccontextmanager
async def _answering(bodies: list[bytes], chunk: int):
    """A RemoteHolder whose holder answers each blocks request with the next of `bodies` and its length, as a holder
    does, written `chunk` bytes at a time (the reader sees chunks that need not fall on the blocks' bounds)."""
    from aiohttp import web

    answers = iter(bodies)

    async def answer(request: web.Request) -> web.StreamResponse:
        body = next(answers)
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), chunk):
            await response.write(body[start:start + chunk])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/peer/shares/{si}/{share}/blocks", answer)
    async with _holder_serving(app) as holder:
        yield holder


@pytest.mark.parametrize("extra, message", [(b"z", "a body of 301 bytes where the 2 blocks asked make 300"),
                                            (-1, "a body of 299 bytes where the 2 blocks asked make 300"),
                                            (-300, "a body of 0 bytes where the 2 blocks asked make 300")])
async def test_a_reader_refuses_an_answer_longer_or_shorter_than_the_blocks_asked(extra, message) -> None:
    blocks = [b"a" * 100, b"b" * 200]
    body = b"".join(blocks) + extra if isinstance(extra, bytes) else b"".join(blocks)[:len(b"".join(blocks)) + extra]
    async with _answering([body, b"".join(blocks)], 64) as holder:
        with pytest.raises(PeerRefused, match=message):
            await holder.blocks(b"\x01" * 32, SHARE, 0, 2, [100, 200])
        assert await holder.blocks(b"\x01" * 32, SHARE, 0, 2, [100, 200]) == blocks


@pytest.mark.parametrize("chunk", [1, 7, 50, 100, 150, 350, 4096])
async def test_a_reader_cuts_the_blocks_out_of_chunks_of_any_size(chunk: int) -> None:
    # Chunks smaller than a block, ending on a block's bound or within one, and one holding every block.
    blocks = [bytes([i]) * length for i, length in enumerate([100, 250, 100, 50])]
    async with _answering([b"".join(blocks)], chunk) as holder:
        got = await holder.blocks(b"\x01" * 32, SHARE, 0, 4, [len(b) for b in blocks])
    assert got == blocks and len({id(b) for b in got}) == len(blocks)  # a buffer of its own each


async def test_the_last_blocks_and_the_commit_in_one_request_and_each_bad_one_refused_and_aborted(net) -> None:
    store, from_a = net["store"], net["from_a"]
    f = EncodedFile(3 * SEGMENT + 1000)  # 4 segments, the last one short
    blocks, hashes, manifest = f.blocks[SHARE], f.hashes[SHARE], f.manifest.encode()
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    await from_a.put_segments(upload, 0, blocks[:1])
    await from_a.commit(upload, hashes, manifest, first=1, blocks=blocks[1:])
    assert (store.used, store.reserved, store.shares_held) == (f.share_bytes, 0, 1)
    assert await from_a.blocks(f.si, SHARE, 0, 4, f.lengths(0, 4)) == blocks
    await from_a.delete(f.si, SHARE)

    commit = remote_holder.dumps({"block_hashes": [h.hex() for h in hashes], "manifest": manifest.hex()})
    wrong = remote_holder.dumps({"block_hashes": [h.hex() for h in reversed(hashes)], "manifest": manifest.hex()})

    async def last(body: list[bytes]) -> PeerRefused:
        """Segment 0 sent, then `body` as segments 1.. with the commit: refused, and the upload aborted."""
        upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
        await from_a.put_segments(upload, 0, blocks[:1])
        with pytest.raises(PeerRefused) as err:
            await from_a.client.request(from_a.url, "PUT", f"/v1/peer/uploads/{upload}/segments/1?commit",
                                        data=body, to=from_a.node_id, max_size=1 << 20)
        assert nothing_staged(store, f.si) and store.used == 0
        with pytest.raises(PeerRefused) as gone:
            await from_a.put_segments(upload, 1, blocks[1:2])
        refused(gone, 404, "upload-not-found")
        return err.value

    refused(await last(blocks[1:3]), 400, "bad-request")  # it ends within the blocks
    refused(await last([*blocks[1:], b"not json"]), 400, "invalid-argument")
    refused(await last([*blocks[1:], wrong]), 409, "share-mismatch")
    too_long = b" " * (wire.commit_limit(f.count) + 1)  # within the body's limit, past the commit's
    refused(await last([*blocks[1:], too_long]), 413, "payload-too-large")
    refused(await last([*blocks[1:], commit[:-1]]), 400, "invalid-argument")  # cut short
    await place(from_a, f)  # after all that, the share still goes through
    assert (store.used, store.reserved) == (f.share_bytes, 0)


async def test_a_commit_sent_twice_publishes_once_and_one_before_any_block_publishes_nothing(net) -> None:
    """Two commits of one upload at once: one publishes the share, the other finds the upload gone (404), and the
    share's bytes are counted once.  A commit before any block is refused and aborts the upload."""
    store, from_a = net["store"], net["from_a"]
    f = EncodedFile(3 * SEGMENT)
    blocks, hashes, manifest = f.blocks[SHARE], f.hashes[SHARE], f.manifest.encode()
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    with pytest.raises(PeerRefused) as err:
        await from_a.commit(upload, hashes, manifest)
    refused(err, 409, "upload-incomplete")
    assert nothing_staged(store, f.si) and (store.used, store.reserved) == (0, 0)
    upload = await from_a.begin(f.si, SHARE, f.size, f.segment_size, lease())
    await from_a.put_segments(upload, 0, blocks)
    answers = await asyncio.gather(from_a.commit(upload, hashes, manifest), from_a.commit(upload, hashes, manifest),
                                   return_exceptions=True)
    assert sorted(map(type, answers), key=str) == sorted([type(None), PeerRefused], key=str), answers
    refused(next(a for a in answers if a is not None), 404, "upload-not-found")
    assert (store.used, store.reserved, store.shares_held) == (f.share_bytes, 0, 1)


@given(st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=16), st.data())
def test_a_last_body_is_cut_into_its_blocks_and_its_commit_however_it_arrived(blocks, tail, data) -> None:
    body = blocks + tail
    cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=6)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    kept, commit = wire.cut_commit(chunks, len(blocks))
    assert b"".join(bytes(c) for c in kept) == blocks and commit == tail
    with pytest.raises(BadRequest):
        wire.cut_commit(chunks, len(body))  # no commit after the blocks


async def test_a_peer_told_storage_full_is_told_to_place_the_share_elsewhere_and_the_user_to_free_space(net) -> None:
    a, b = net["a"], net["b"]
    begin = {"size": 2**45, "segment_size": SEGMENT, "lease_expiry": lease(), "price": DEAL_PRICE}
    sender = a.app[IDENTITY]
    with pytest.raises(StorageFull) as full:
        await b.app[NODE].share_holder.begin_upload(sender.public_key, sender.id, os.urandom(32), 0, begin)
    assert "another node" in full.value.hint and "xsc store rm" not in full.value.hint
    assert full.value.details["needed"] > full.value.details["free"]
    with pytest.raises(StorageFull) as own:  # the node's own put: its user can free space or grow the store
        b.app[NODE].store.check_fits(2**45)
    assert "xsc store rm" in own.value.hint


@settings(deadline=None)
@given(segment_count=st.integers(1, 5000), data=st.data())
def test_an_honest_audit_answer_fits_its_bound(segment_count: int, data) -> None:
    from xsc.codec import dumps
    from xsc.storage.core.manifest import Manifest

    segment_size = data.draw(st.sampled_from([wire.MIN_SEGMENT_SIZE, 1024**2, wire.MAX_SEGMENT_SIZE]))
    size = (segment_count - 1) * segment_size + data.draw(st.integers(1, segment_size))
    manifest = Manifest(size=size, segment_size=segment_size, k=4, m=2, segment_count=segment_count,
                        share_roots=("00" * 32,) * 6, ciphertext_hash="00" * 32)
    segment = data.draw(st.integers(0, segment_count - 1))
    length = block_lengths(size, segment_size, segment, 1)[0]
    hashes = [bytes(32)] * segment_count
    path = [[left, h.hex()] for left, h in proof(hashes, segment)]
    answer = len(dumps({"block": "", "proof": path})) + 2 * length  # the block in hex, without making 32 MB of it
    assert answer <= wire.audit_answer_bound(manifest, segment) <= 2 * length + 64 * 1024


@asynccontextmanager
async def _audited(body: bytes):
    """A RemoteHolder whose holder answers every audit, and every ask for a share's metadata, with `body`."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/peer/shares/{si}/{share}/audit", answer)
    app.router.add_get("/v1/peer/shares/{si}/{share}", answer)
    async with _holder_serving(app) as holder:
        yield holder


@asynccontextmanager
async def _holder_serving(app):
    """A RemoteHolder of a holder that is `app`, served on a free port."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from xsc.identity import Identity
    from xsc.net.peer_client import PeerClient

    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield RemoteHolder(PeerClient(Identity.generate(), session, 10.0, tls=False), "x" * 52,
                               str(server.make_url("")))
    finally:
        await server.close()


async def test_an_audit_answered_too_long_or_too_deep_to_parse_is_refused_and_counts_against_the_holder() -> None:
    from xsc.codec import dumps
    from xsc.storage.audits import is_verdict

    f = EncodedFile(3 * SEGMENT + 1000)  # blocks of 1 KiB: an honest answer is a few KiB
    padded = dumps({"block": f.blocks[SHARE][1].hex(), "proof": [], "padding": "0" * (8 * 1024**2)})
    deep = b"[" * 2000 + b"]" * 2000  # within the bound, deeper than the parser recurses
    for body, said in ((padded, "with more than"), (deep, "not JSON")):
        async with _audited(body) as holder:
            with pytest.raises(PeerRefused, match=said) as refused_audit:
                await holder.audit(f.si, SHARE, 1, f.manifest)
        assert is_verdict(refused_audit.value)


async def test_a_shares_metadata_longer_than_an_honest_one_or_of_another_count_is_refused(net) -> None:
    from xsc.codec import dumps

    f = EncodedFile(3 * SEGMENT + 1000)  # 4 segments
    meta = {"segment_count": 4, "stored_bytes": f.share_bytes, "lease_expiry": lease(), "uploader": "x",
            "block_hashes": [h.hex() for h in f.hashes[SHARE]], "manifest": f.manifest.encode().hex()}
    async with _audited(dumps(meta)) as holder:
        assert (await holder.meta(f.si, SHARE, 4))["block_hashes"] == f.hashes[SHARE]
        with pytest.raises(PeerRefused, match="not one per segment"):
            await holder.meta(f.si, SHARE, 5)
    many = {**meta, "segment_count": 200_000, "block_hashes": [f.hashes[SHARE][0].hex()] * 200_000}  # 13 MB
    async with _audited(dumps(many)) as holder:
        with pytest.raises(PeerRefused, match="with more than"):
            await holder.meta(f.si, SHARE, 4)
    # An honest holder's answer, read by a reader that knows the file, fits.
    await place(net["from_a"], f)
    assert (await net["from_c"].meta(f.si, SHARE, f.count))["block_hashes"] == f.hashes[SHARE]
