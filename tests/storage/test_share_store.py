"""The share store's small uploads: their blocks wait in memory and reach the disk in the one synced write that
publishes them, with the file's record and its deals; past the memory bound, uploads are staged as large ones.
Uploads that finish while a publish is written are published together in the next one (group commit)."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import plyvel
import pytest

from xsc import codec, keys
from xsc.db import open_database
from xsc.node import DB
from xsc.storage import Capability
from xsc.errors import StorageFull, UploadNotFound
from xsc.storage.publisher import Publisher
from xsc.storage.share_store import HELD_AT_MOST, HELD_UPLOAD, Publication, ShareMeta, ShareStore

from tests.support.writes import record_synced_writes

SI = bytes(range(32))


@pytest.fixture
def store(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    yield ShareStore(db, 1 << 30)
    db.close()


def _on_disk(store: ShareStore, prefix: bytes) -> list[bytes]:
    return list(store.db.iterator(prefix=prefix, include_value=False))


def test_a_small_upload_writes_nothing_until_it_publishes_then_everything_at_once(store) -> None:
    upload = store.begin_upload(SI, (0, 1), 2 * 100)
    upload.put_blocks(0, {0: b"a" * 100, 1: b"b" * 100})
    assert _on_disk(store, keys.UPLOADS) == [] and _on_disk(store, keys.blocks_of(SI)) == []
    assert store.reserved == 200  # its room is held all the same
    metas = [ShareMeta(s, 1, 100, 2_000_000_000, bytes(32), (bytes(32),)) for s in (0, 1)]
    store.publish(upload, metas, b"manifest", {"name": "small"})
    assert store.get_block(SI, 0, 0) == b"a" * 100 and store.get_block(SI, 1, 0) == b"b" * 100
    assert store.file_record(SI)["name"] == "small" and store.used == 200 and store.reserved == 0


def test_a_small_upload_that_never_publishes_leaves_nothing_and_frees_its_room(store) -> None:
    upload = store.begin_upload(SI, (0,), 100)
    upload.put_blocks(0, {0: b"a" * 100})
    store.abort(upload)
    assert store.reserved == 0 and list(store.db.iterator()) == []


def test_an_upload_over_the_small_size_is_staged_on_disk(store) -> None:
    upload = store.begin_upload(SI, (0,), HELD_UPLOAD + 1)
    assert upload.held is None and len(_on_disk(store, keys.UPLOADS)) == 1
    upload.put_blocks(0, {0: b"a" * 100})
    assert _on_disk(store, keys.blocks_of(SI)) != []
    store.abort(upload)
    assert list(store.db.iterator()) == []


def test_held_uploads_together_keep_at_most_their_bound_in_memory(store) -> None:
    """A stranger's many small uploads (a holder takes them from anyone) cannot fill the node's memory."""
    held = []
    while True:
        upload = store.begin_upload(os.urandom(32), (0,), HELD_UPLOAD)
        if upload.held is None:
            break
        held.append(upload)
    assert len(held) == HELD_AT_MOST // HELD_UPLOAD
    assert len(_on_disk(store, keys.UPLOADS)) == 1  # the next one was staged
    store.abort(held.pop())
    assert store.begin_upload(os.urandom(32), (0,), HELD_UPLOAD).held is not None  # room again


async def test_a_small_put_writes_its_blocks_file_record_and_deals_in_one_synced_write(node_factory,
                                                                                       monkeypatch) -> None:
    node = await node_factory()
    synced = record_synced_writes(monkeypatch)
    resp = await node.post("/v1/store/files", data=os.urandom(1024))
    assert resp.status == 201, await resp.text()
    si = Capability.parse((await resp.json())["capability"]).storage_index
    assert not any(key.startswith(keys.UPLOADS) for keys_ in synced for key in keys_)  # no staging record
    published = [keys_ for keys_ in synced if keys.file(si) in keys_]
    assert len(published) == 1
    assert {keys.storage_deal(si, s) for s in range(6)} <= published[0]
    assert {keys.block(si, s, 0) for s in range(6)} <= published[0]
    assert len(node.app[DB].get(keys.storage_deal(si, 0), b"")) > 0


def _meta(share: int, size: int = 100) -> ShareMeta:
    return ShareMeta(share, 1, size, 2_000_000_000, bytes(32), (bytes(32),))


def _small_upload(store: ShareStore, si: bytes, share: int = 0, size: int = 100):
    upload = store.begin_upload(si, (share,), size)
    upload.put_blocks(0, {share: os.urandom(size)})
    return upload


@pytest.fixture
def publisher(store):
    with ThreadPoolExecutor(1) as pool:
        yield Publisher(store, pool)


async def test_publishes_that_come_during_a_write_are_written_together_in_the_next(store, publisher) -> None:
    files = [os.urandom(32) for _ in range(20)]
    await asyncio.gather(*(publisher.publish(_small_upload(store, si), [_meta(0)], b"m", {"name": si.hex()})
                           for si in files))
    assert publisher.groups == 2  # the first at once, the 19 that came while it was written in one more
    assert all(store.file_record(si)["name"] == si.hex() for si in files)
    assert store.used == 20 * 100 and store.reserved == 0 and store.shares_held == 20


async def test_a_publish_cancelled_while_it_waits_is_never_written(store, publisher) -> None:
    gate = threading.Event()
    publisher.pool.submit(gate.wait)  # the pool's one thread is busy: the first group's write waits for it
    first = asyncio.ensure_future(publisher.publish(_small_upload(store, SI), [_meta(0)], b"m", {"name": "a"}))
    await asyncio.sleep(0)
    other = bytes(32)
    upload = _small_upload(store, other)
    waiting = asyncio.ensure_future(publisher.publish(upload, [_meta(0)], b"m", {"name": "b"}))
    await asyncio.sleep(0)  # it waits for the next group
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.set()
    await first
    store.abort(upload)
    assert store.file_record(other) is None and store.file_record(SI)["name"] == "a"
    assert store.used == 100 and store.reserved == 0


async def test_an_upload_aborted_before_its_group_is_written_fails_alone(store, publisher) -> None:
    aborted, kept = _small_upload(store, SI), _small_upload(store, bytes(32))
    store.abort(aborted)
    outcomes = await asyncio.gather(publisher.publish(aborted, [_meta(0)], b"m", {"name": "gone"}),
                                    publisher.publish(kept, [_meta(0)], b"m", {"name": "kept"}),
                                    return_exceptions=True)
    assert isinstance(outcomes[0], UploadNotFound) and outcomes[1] is None
    assert store.file_record(SI) is None and store.file_record(bytes(32))["name"] == "kept"
    assert store.used == 100


async def test_a_failed_group_write_publishes_none_of_it_and_leaves_each_upload_to_abort(store, publisher,
                                                                                      monkeypatch) -> None:
    uploads = [_small_upload(store, os.urandom(32)) for _ in range(3)]

    class FailingWrites:
        def __init__(self, db) -> None:
            self.db = db

        def __getattr__(self, name: str):
            return getattr(self.db, name)

        def write_batch(self, **kwargs):
            raise plyvel.IOError("disk gone")

    monkeypatch.setattr(store, "db", FailingWrites(store.db))
    outcomes = await asyncio.gather(*(publisher.publish(u, [_meta(0)], b"m", {"name": "x"}) for u in uploads),
                                    return_exceptions=True)
    assert all(isinstance(o, plyvel.IOError) for o in outcomes)
    monkeypatch.undo()
    assert store.used == 0 and store.shares_held == 0 and store.reserved == 300
    for u in uploads:
        store.abort(u)
    assert store.reserved == 0 and list(store.db.iterator()) == []


def test_a_group_that_publishes_one_share_twice_counts_it_once(store) -> None:
    first, second = _small_upload(store, SI, size=100), _small_upload(store, SI, size=300)
    errors = store.publish_all([Publication(first, [_meta(0, 100)]), Publication(second, [_meta(0, 300)])])
    assert errors == [None, None]
    assert store.used == 300 and store.shares_held == 1 and store.share_meta(SI, 0).stored_bytes == 300


@pytest.mark.parametrize("fresh", [False, True])  # fresh: a new storage index, whose publish looks nothing up
def test_a_detached_upload_holds_no_room_until_it_publishes_and_then_counts_like_any_other(store, fresh) -> None:
    upload = store.detached_upload(SI, (0, 1), 200, fresh=fresh)
    upload.put_blocks(0, {0: b"a" * 100, 1: b"b" * 100})
    assert store.reserved == 0 and list(store.db.iterator()) == []  # nothing staged, nothing reserved
    store.publish(upload, [_meta(0), _meta(1)], b"manifest", {"name": "detached"})
    assert store.get_block(SI, 1, 0) == b"b" * 100 and store.used == 200 and store.reserved == 0


def test_a_detached_upload_that_no_longer_fits_is_refused_as_it_publishes_and_writes_nothing(tmp_path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    try:
        store = ShareStore(db, 250)
        first, second = store.detached_upload(SI, (0,), 200), store.detached_upload(bytes(32), (0,), 100)
        first.put_blocks(0, {0: b"a" * 200})
        second.put_blocks(0, {0: b"b" * 100})
        errors = store.publish_all([Publication(first, [_meta(0, 200)]), Publication(second, [_meta(0, 100)])])
        assert errors[0] is None and isinstance(errors[1], StorageFull)
        assert store.used == 200 and store.get_block(bytes(32), 0, 0) is None and store.share_meta(bytes(32), 0) is None
    finally:
        db.close()


class _Rider:
    """Records of another owner's carried by a publication (share_store.Rider): `key` set to what it read there
    plus one, or a refusal."""

    def __init__(self, key: bytes, fail: bool = False) -> None:
        self.key, self.fail, self.lock = key, fail, threading.Lock()
        self.read: bytes | None = None
        self.held = False

    def entries(self, read) -> dict[bytes, bytes | None]:
        self.held = self.lock.locked()
        if self.fail:
            raise RuntimeError("the rider's records could not be made")
        self.read = read(self.key)
        return {self.key: (self.read or b"") + b"+"}


def test_a_riders_records_are_written_in_its_publications_batch_and_see_the_batch_before_them(store) -> None:
    store.db.put(b"x/counter", b"0")
    riders = [_Rider(b"x/counter"), _Rider(b"x/counter"), _Rider(b"x/other", fail=True)]
    uploads = [_small_upload(store, os.urandom(32)) for _ in riders]
    errors = store.publish_all([Publication(u, [_meta(0)], b"m", {"name": "f"}, rider=r)
                                for u, r in zip(uploads, riders)])
    assert errors[:2] == [None, None] and isinstance(errors[2], RuntimeError)  # a rider that fails, fails alone
    assert store.db.get(b"x/counter") == b"0++"  # the second read what the first wrote in the same batch
    assert riders[0].held and riders[1].held  # its owner's lock was held while it read
    assert store.file_record(uploads[2].storage_index) is None and store.used == 200  # its file was not published
    assert not riders[0].lock.locked()


def test_the_tables_a_large_upload_writes_are_moved_down_whole_not_rewritten(tmp_path) -> None:
    """Its staging record sorts below its blocks, so each table LevelDB flushes holds a key range above the last
    one's: it is placed, or moved down, without being merged with the tables before (a rewrite of both)."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True, compression=None, write_buffer_size=1 << 20)
    store = ShareStore(db, 1 << 30)
    upload = store.begin_upload(bytes(32), (0, 1, 2, 3), None)  # the lowest storage index: blocks sort lowest
    assert _on_disk(store, keys.UPLOADS)[0] < keys.block(bytes(32), 0, 0)
    for segment in range(128):  # 32 MiB in 1 MiB tables: more than LevelDB keeps in its first levels
        upload.put_blocks(segment, {s: os.urandom(64 * 1024) for s in range(4)})
    db.close()  # waits for the flushes and compactions under way: the log then says what they did
    log = (tmp_path / "db" / "LOG").read_text()
    assert log.count("Level-0 table") > 2 * 20 and "Compacting" not in log, log


def test_recover_deletes_what_an_upload_staged_under_either_prefix_of_staging_records(store) -> None:
    for prefix, si in ((keys.UPLOADS, SI), (keys.UPLOADS_ABOVE_BLOCKS, bytes(32))):
        record = {"storage_index": si.hex(), "shares": [0, 1], "started": 0}
        store.db.put(prefix + os.urandom(16), codec.dumps(record))
        for s in (0, 1):
            store.db.put(keys.block(si, s, 0), b"staged")
    assert store.recover() == 2
    assert list(store.db.iterator()) == []


class _FailingPuts:
    """The store's database, whose puts fail once `left` more have been written (a disk that fills part-way)."""

    def __init__(self, db) -> None:
        self.db, self.left = db, None

    def put(self, key: bytes, value: bytes, **kwargs) -> None:
        if self.left is not None:
            if self.left == 0:
                raise OSError(28, "No space left on device")
            self.left -= 1
        self.db.put(key, value, **kwargs)

    def __getattr__(self, name):
        return getattr(self.db, name)


@pytest.mark.parametrize("then", ["abort", "recover"])
def test_a_segment_written_in_part_is_deleted_with_the_rest_of_its_upload(tmp_path, then) -> None:
    """A segment's blocks are written one by one: a write that fails part-way leaves the blocks before it, which the
    upload's abort, or the recovery after a crash, deletes with the rest."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    try:
        failing = _FailingPuts(db)
        store = ShareStore(failing, 1 << 30)
        upload = store.begin_upload(SI, (0, 1, 2, 3), None)
        upload.put_blocks(0, {s: b"a" * 100 for s in range(4)})
        failing.left = 2
        with pytest.raises(OSError):
            upload.put_blocks(1, {s: b"b" * 100 for s in range(4)})
        assert [store.get_block(SI, s, 1) for s in range(4)] == [b"b" * 100, b"b" * 100, None, None]
        if then == "abort":
            store.abort(upload)
            assert store.reserved == 0
        else:
            assert ShareStore(db, 1 << 30).recover() == 1
        assert list(db.iterator()) == []
    finally:
        db.close()


def test_a_block_reader_reads_what_get_block_does_and_lets_go_of_the_database_once_released(tmp_path) -> None:
    """Blocks read through one iterator (share_store.BlockReader) in any order: the next share of a segment, one
    sought behind or ahead, one missing (and the block after it), past the file's last block and again after;
    never a block of the file whose keys follow this one's."""
    db = open_database(tmp_path / "db")
    try:
        store = ShareStore(db, 1 << 30)
        after = SI[:-1] + bytes([SI[-1] + 1])  # its blocks sort right after SI's
        for segment in range(3):
            for share in range(6):
                if (share, segment) not in ((2, 1), (5, 2)):
                    db.put(keys.block(SI, share, segment), bytes([share, segment]) * 50)
                db.put(keys.block(after, share, segment), b"not this file's")
        wanted = [(s, 0) for s in range(4)] + [(s, 1) for s in (0, 1, 2, 3, 4)] + [(5, 0), (3, 2), (5, 2), (0, 3),
                                                                               (4, 2), (1, 1), (5, 2)]
        with store.block_reader(SI) as blocks:
            got = [blocks.get(share, segment) for share, segment in wanted]
            assert blocks.get(0, 0) == bytes([0, 0]) * 50 and db.in_use == 1  # its iterator
            blocks.release()
            assert db.in_use == 0
            assert blocks.get(0, 2) == bytes([0, 2]) * 50 and db.in_use == 1  # made again
        assert db.in_use == 0
        assert got == [store.get_block(SI, share, segment) for share, segment in wanted]
        assert got[6] is None and got[7] == bytes([3, 1]) * 50 and got[11] is None
        assert got[-4:] == [None, bytes([4, 2]) * 50, bytes([1, 1]) * 50, None]
    finally:
        db.close()
