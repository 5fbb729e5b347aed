"""Blocks in a database of their own: a staged upload's blocks go to the blocks' LevelDB, a small upload's ride with
the records; a block is read wherever it is (a data dir of one database holds them all with the records); a
publication syncs the blocks before its records; a deletion's blocks, deleted after its records, are deleted again
by `recover` when a crash came between."""

from __future__ import annotations

import os
from contextlib import contextmanager

import plyvel
import pytest

from xsc import keys
from xsc.db import Database, open_database
from xsc.node.datadir import BLOCKS_DIR, DB_DIR, open_blocks, open_db
from xsc.storage import Capability
from xsc.storage.share_store import HELD_UPLOAD, STREAMING_UPLOAD, ShareMeta, ShareStore

SI = bytes(range(32))
BLOCK = 1000


@pytest.fixture
def dbs(tmp_path):
    records, blocks = open_db(tmp_path), open_blocks(tmp_path)
    yield records, blocks
    records.close()
    blocks.close()


def _keys(db: Database, prefix: bytes = b"") -> list[bytes]:
    return list(db.iterator(prefix=prefix, include_value=False))


def _stage(store: ShareStore, si: bytes = SI, segments: int = 3, expected: int | None = None):
    upload = store.begin_upload(si, (0, 1), expected if expected is not None else HELD_UPLOAD + 1)
    for segment in range(segments):
        upload.put_blocks(segment, {s: bytes([s, segment]) * (BLOCK // 2) for s in (0, 1)})
    return upload


def _metas(segments: int = 3) -> list[ShareMeta]:
    return [ShareMeta(s, segments, segments * BLOCK, 2_000_000_000, bytes(32), (bytes(32),) * segments) for s in (0, 1)]


def test_a_staged_upload_writes_its_blocks_apart_and_a_small_one_with_the_records(dbs) -> None:
    records, blocks = dbs
    store = ShareStore(records, 1 << 30, blocks=blocks)
    store.publish(_stage(store), _metas())
    assert len(_keys(blocks, keys.blocks_of(SI))) == 6 and _keys(records, keys.blocks_of(SI)) == []
    small_si = os.urandom(32)
    small = store.begin_upload(small_si, (0,), 100)
    small.put_blocks(0, {0: b"s" * 100})
    store.publish(small, [ShareMeta(0, 1, 100, 2_000_000_000, bytes(32), (bytes(32),))])
    assert _keys(records, keys.blocks_of(small_si)) == [keys.block(small_si, 0, 0)]
    assert _keys(blocks, keys.blocks_of(small_si)) == []
    assert store.get_block(SI, 1, 2) == bytes([1, 2]) * (BLOCK // 2) and store.get_block(small_si, 0, 0) == b"s" * 100
    with store.block_reader(SI) as reader, store.block_reader(small_si) as small_reader:
        assert [reader.get(s, i) for i in range(3) for s in (0, 1)] == \
            [bytes([s, i]) * (BLOCK // 2) for i in range(3) for s in (0, 1)]
        assert small_reader.get(0, 0) == b"s" * 100 and small_reader.get(0, 1) is None


def test_a_publication_makes_the_blocks_durable_before_the_records_that_show_them(dbs, monkeypatch) -> None:
    records, blocks = dbs
    store = ShareStore(records, 1 << 30, blocks=blocks)
    upload = _stage(store)
    order: list[str] = []
    sync, batch = Database.sync, Database.write_batch
    monkeypatch.setattr(Database, "sync", lambda db: (order.append(f"sync {db.path.name}"), sync(db))[1])
    monkeypatch.setattr(Database, "write_batch",
                        lambda db, **kw: (order.append(f"batch {db.path.name} {kw}"), batch(db, **kw))[1])
    store.publish(upload, _metas())
    assert order == [f"sync {BLOCKS_DIR}", f"batch {DB_DIR} {{'sync': True}}"]


def test_blocks_written_before_a_large_upload_are_flushed_into_a_table_of_their_own(dbs, tmp_path) -> None:
    """A table holding the end of one upload and the start of the next would span every file stored between them."""
    records, blocks = dbs
    store = ShareStore(records, 1 << 30, blocks=blocks)
    _stage(store, os.urandom(32))
    tables = lambda: sorted((tmp_path / BLOCKS_DIR).glob("*.ldb"))  # noqa: E731
    assert tables() == []  # still in the memtable
    store.begin_upload(SI, (0,), HELD_UPLOAD + 1)  # a small staged upload: no flush
    assert tables() == []
    store.begin_upload(os.urandom(32), (0,), STREAMING_UPLOAD)
    assert len(tables()) == 1
    store.begin_upload(os.urandom(32), (0,), None)  # of unknown size, nothing written since: nothing to flush
    assert len(tables()) == 1 and len(list((tmp_path / BLOCKS_DIR).glob("*.log"))) == 1


def test_an_interrupted_upload_leaves_no_block_anywhere_after_recover(dbs) -> None:
    records, blocks = dbs
    _stage(ShareStore(records, 1 << 30, blocks=blocks))  # then the node "crashes": a new store on the same disk
    assert ShareStore(records, 1 << 30, blocks=blocks).recover() == 1
    assert _keys(blocks) == [] and _keys(records, keys.UPLOADS) == []


def test_a_deletion_cut_between_its_records_and_its_blocks_is_finished_by_recover(dbs, monkeypatch) -> None:
    records, blocks = dbs
    store = ShareStore(records, 1 << 30, blocks=blocks)
    store.publish(_stage(store), _metas(), b"manifest")
    batch = Database.write_batch

    def crash_on_the_blocks(db, **kw):
        if db is blocks:
            raise KeyboardInterrupt  # a kill -9, as far as this process goes
        return batch(db, **kw)

    monkeypatch.setattr(Database, "write_batch", crash_on_the_blocks)
    with pytest.raises(KeyboardInterrupt):
        store.delete_file(SI)
    monkeypatch.undo()
    assert store.share_metas(SI) == [] and len(_keys(blocks)) == 6  # gone from the listing, blocks still there
    restarted = ShareStore(records, 1 << 30, blocks=blocks)
    assert restarted.recover() == 1
    assert _keys(blocks) == [] and _keys(records, keys.UPLOADS) == [] and restarted.used == 0


def test_files_deleted_together_write_once_each_database_and_a_cut_between_is_finished_by_recover(dbs,
                                                                                                  monkeypatch) -> None:
    """A removal of many files writes their records in one synced batch and then their blocks in one: cut between
    (a kill -9), none is listed, and the restart's recover deletes every block of each, wherever it was."""
    records, blocks = dbs
    store = ShareStore(records, 1 << 30, blocks=blocks)
    staged = [os.urandom(32) for _ in range(3)]
    for si in staged:
        store.publish(_stage(store, si), _metas(), b"manifest", {"storage_index": si.hex()})
    small = os.urandom(32)  # its blocks rode in its publication, with the records
    upload = store.begin_upload(small, (0,), 100)
    upload.put_blocks(0, {0: b"s" * 100})
    store.publish(upload, [ShareMeta(0, 1, 100, 2_000_000_000, bytes(32), (bytes(32),))], b"manifest")
    kept = os.urandom(32)
    store.publish(_stage(store, kept), _metas(), b"manifest")
    order: list[str] = []
    batch = Database.write_batch

    def crash_on_the_blocks(db, **kw):
        order.append(db.path.name)
        if db is blocks:
            raise KeyboardInterrupt  # a kill -9, as far as this process goes
        return batch(db, **kw)

    monkeypatch.setattr(Database, "write_batch", crash_on_the_blocks)
    with pytest.raises(KeyboardInterrupt):
        store.delete_files([*staged, small])
    monkeypatch.undo()
    assert order == [DB_DIR, BLOCKS_DIR]  # one write of the records for all of them, then one of the blocks
    assert all(store.share_metas(si) == [] and store.manifest(si) is None and store.file_record(si) is None
               for si in [*staged, small])
    assert _keys(records, keys.blocks_of(small)) == []
    assert len(_keys(blocks)) == 6 * 4  # the three files' blocks, and the kept one's
    restarted = ShareStore(records, 1 << 30, blocks=blocks)
    assert restarted.recover() == 4  # a staging record per file (where its blocks are is not looked up)
    assert {keys.blocks_of(kept)} == {k[:len(keys.blocks_of(kept))] for k in _keys(blocks)}
    assert len(_keys(blocks)) == 6 and restarted.used == 6 * BLOCK and len(restarted.share_metas(kept)) == 2
    assert _keys(records, keys.UPLOADS) == []


def test_leases_collected_delete_the_blocks_in_both_databases(dbs) -> None:
    records, blocks = dbs
    store = ShareStore(records, 1 << 30, blocks=blocks)
    store.publish(_stage(store), _metas())
    assert store.collect_share(SI, 0, before=2_000_000_001) is not None
    assert {keys.block_share(k) for k in _keys(blocks)} == {1} and _keys(records, keys.UPLOADS) == []
    assert store.collect_file(SI, 2_000_000_001) is None  # no file record: the share goes alone
    assert store.collect_share(SI, 1, before=2_000_000_001) is not None
    assert _keys(blocks) == [] and store.used == 0


def test_a_data_dir_from_before_the_split_is_read_repaired_and_deleted(tmp_path) -> None:
    records = open_database(tmp_path / DB_DIR, reserve_dir=tmp_path)
    before = ShareStore(records, 1 << 30)  # one database: every block with the records
    before.publish(_stage(before), _metas(), b"manifest")
    assert len(_keys(records, keys.blocks_of(SI))) == 6
    blocks = open_blocks(tmp_path)
    try:
        store = ShareStore(records, 1 << 30, blocks=blocks)
        assert store.get_block(SI, 0, 1) == bytes([0, 1]) * (BLOCK // 2)
        with store.block_reader(SI) as reader:  # none in the blocks' database: each read from the records'
            assert [reader.get(s, i) for i in range(3) for s in (0, 1)] == \
                [bytes([s, i]) * (BLOCK // 2) for i in range(3) for s in (0, 1)]
        store.put_repaired_blocks(SI, 1, {0: b"rebuilt"})  # written where blocks are read first
        assert store.get_block(SI, 0, 1) == b"rebuilt"
        with store.block_reader(SI) as reader:
            assert [reader.get(0, i) for i in range(3)] == [bytes([0, 0]) * (BLOCK // 2), b"rebuilt",
                                                             bytes([0, 2]) * (BLOCK // 2)]
        store.delete_file(SI)
        assert _keys(records, keys.blocks_of(SI)) == [] and _keys(blocks) == [] and store.used == 0
    finally:
        blocks.close()
        records.close()


@pytest.mark.slow
def test_a_node_serves_verifies_and_deletes_the_blocks_a_data_dir_of_one_database_holds(node_process, tmp_path) -> None:
    """A data dir of one database, every block with the records: the node reads, verifies and deletes them in
    place."""
    node = node_process()
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "f.bin").write_bytes(data)
    cap = node.xsc("store", "put", str(tmp_path / "f.bin")).stdout.decode().strip().splitlines()[-1]
    assert node.stop() == 0
    moved = _move_blocks(node.data_dir)  # into the records' database, as one database kept them
    assert moved == 6 * 4  # 4 segments of 1 MiB, 6 shares each
    node.start()
    got = node.xsc("store", "get", cap, "-o", str(tmp_path / "g.bin"))
    assert got.returncode == 0 and (tmp_path / "g.bin").read_bytes() == data
    assert node.xsc("store", "verify", cap).stdout.decode().splitlines()[-1] == "6 of 6 shares intact: healthy"
    assert node.xsc("store", "rm", cap).returncode == 0
    assert node.stop() == 0
    si = Capability.parse(cap).storage_index
    for folder in (DB_DIR, BLOCKS_DIR):
        db = plyvel.DB(str(node.data_dir / folder))
        try:
            assert list(db.iterator(prefix=keys.blocks_of(si), include_value=False)) == []
        finally:
            db.close()


def _move_blocks(data_dir) -> int:
    blocks, records = plyvel.DB(str(data_dir / BLOCKS_DIR)), plyvel.DB(str(data_dir / DB_DIR))
    try:
        found = list(blocks.iterator(prefix=keys.blocks_of(b"")))
        with records.write_batch(sync=True) as batch:
            for key, block in found:
                batch.put(key, block)
        with blocks.write_batch(sync=True) as batch:
            for key, _ in found:
                batch.delete(key)
        return len(found)
    finally:
        blocks.close()
        records.close()


class _Full:
    """The blocks' database on a full disk while `full`: every batch written to it is refused, as LevelDB refuses
    one once a write or a flush met ENOSPC."""

    def __init__(self, db: Database) -> None:
        self.db, self.full = db, False

    @contextmanager
    def write_batch(self, **kwargs):
        if not self.full:
            with self.db.write_batch(**kwargs) as batch:
                yield batch
            return
        yield self.db.write_batch()  # never written
        raise plyvel.IOError(b"IO error: blocks/000009.log: No space left on device")

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_a_deletion_whose_blocks_a_full_disk_refuses_goes_on_and_frees_them_once_there_is_room(dbs) -> None:
    """The records say the share is gone, and its bytes are no longer used, from the moment they are written: the
    blocks the disk will not delete yet are kept under their staging record and deleted when it has room."""
    records, blocks = dbs
    full = _Full(blocks)
    store = ShareStore(records, 1 << 30, blocks=full)
    store.publish(_stage(store), _metas())
    used = store.used
    full.full = True
    assert store.delete_share(SI, 0)
    assert store.used == used - _metas()[0].stored_bytes == ShareStore(records, 1 << 30, blocks=blocks).used
    assert store.share_meta(SI, 0) is None and len(_keys(blocks, keys.blocks_of(SI))) == 6  # its blocks still there
    assert store.kept.free() == 0  # still full: kept
    full.full = False
    assert store.kept.free() == 1 and store.kept.free() == 0
    assert [keys.block_share(k) for k in _keys(blocks, keys.blocks_of(SI))] == [1, 1, 1]
    assert _keys(records, keys.UPLOADS) == [] and store.get_block(SI, 1, 2) == bytes([1, 2]) * (BLOCK // 2)
