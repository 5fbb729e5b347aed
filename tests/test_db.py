"""The node's database (xsc/db.py): plyvel's interface, and a full disk that it recovers from in place.

The disk tests fill a small real tmpfs (they skip where mounting one needs a root this machine does not give)."""

from __future__ import annotations

import os
import threading

import plyvel
import pytest

from tests.support.disks import tmpfs
from xsc.db import RESERVE_CHECK_SECONDS, RESERVE_NAME, Database, disk_full

MiB = 1024**2


def _open(root, reserve_bytes=None):
    path = root / "db"
    return Database(path, lambda: plyvel.DB(str(path), create_if_missing=True, compression=None,
                                            write_buffer_size=32 * MiB), reserve_dir=root, reserve_bytes=reserve_bytes)


def test_it_behaves_as_plyvel_for_what_the_node_uses(tmp_path):
    db = _open(tmp_path, reserve_bytes=MiB)
    db.put(b"a", b"1", sync=True)
    with db.write_batch(sync=True) as batch:
        batch.put(b"b", b"2")
        batch.put(b"c", b"3")
        batch.delete(b"a")
    with pytest.raises(KeyError):
        with db.write_batch(transaction=True) as batch:
            batch.put(b"d", b"4")
            raise KeyError("a transaction that fails writes nothing")
    assert db.get(b"a") is None and db.get(b"d") is None and db.get(b"x", b"default") == b"default"
    with db.iterator(prefix=b"", include_value=False) as it:
        assert list(it) == [b"b", b"c"]
    snapshot = db.snapshot()
    db.delete(b"b")
    assert snapshot.get(b"b") == b"2" and [k for k, _ in snapshot.iterator()] == [b"b", b"c"]
    snapshot.release()
    assert [k for k, _ in db.iterator()] == [b"c"]  # an abandoned-by-exhaustion iterator closes itself
    assert db._active == 0  # every iterator and snapshot let go of the database
    assert not (tmp_path / RESERVE_NAME).exists()  # a mostly empty disk keeps no reserve
    db.close()


def test_the_disk_is_looked_at_for_the_reserve_once_a_second_not_on_every_write(tmp_path, monkeypatch):
    db = _open(tmp_path, reserve_bytes=MiB)  # a mostly empty disk: no reserve made, so writes would look
    looks = []
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: looks.append(path) or real(path))
    for i in range(100):
        db.put(b"k%d" % i, b"v", sync=True)
    assert len(looks) <= 2  # one look (two statvfs) at most within the second, not two per write
    before = len(looks)
    db._reserve_checked -= RESERVE_CHECK_SECONDS  # a second later
    db.put(b"later", b"v")
    assert len(looks) > before  # looked again
    db.close()


def test_a_reopen_waits_for_an_iterator_in_use(tmp_path):
    db = _open(tmp_path, reserve_bytes=0)
    for i in range(100):
        db.put(b"k%03d" % i, b"v")
    db._failed = plyvel.IOError("as if a write had failed")
    it = db.iterator()
    next(it)
    done = threading.Event()

    def write():
        db.put(b"late", b"1")  # reopens first: must wait until the iterator is closed
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.3)
    rest = list(it)  # the iterator still works while the reopen waits
    assert len(rest) == 99
    writer.join(10)
    assert done.is_set() and db.reopens == 1 and db.get(b"late") == b"1"
    db.close()


def test_a_close_waits_for_an_iterator_in_use_and_a_write_after_it_is_refused(tmp_path):
    # A node's stop closes its databases while a pool thread may still be inside one: LevelDB closed under it is
    # memory freed under a running write (a segfault), so the close waits for it.
    db = _open(tmp_path, reserve_bytes=0)
    for i in range(10):
        db.put(b"k%d" % i, b"v")
    it = db.iterator()
    next(it)
    closer = threading.Thread(target=db.close)
    closer.start()
    with db._gate:
        assert db._gate.wait_for(lambda: db._reopening, timeout=10)  # the close is waiting
    assert not db.closed
    assert len(list(it)) == 9  # the iterator in use is read to its end, which lets the database go
    closer.join(10)
    assert db.closed and not closer.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        db.put(b"late", b"1")


def test_a_write_after_a_failed_one_and_a_close_is_refused_not_reopened(tmp_path):
    db = _open(tmp_path, reserve_bytes=0)
    db._failed = plyvel.IOError("as if a write had failed")
    db.close()
    with pytest.raises(RuntimeError, match="closed"):
        db.put(b"late", b"1")  # a reopen now would leave a database nobody closes (its lock held)
    assert db.closed and db.reopens == 0


def test_a_close_past_its_wait_closes_anyway_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("xsc.db.CLOSE_SECONDS", 0.01)
    db = _open(tmp_path, reserve_bytes=0)
    db.put(b"k", b"v")
    it = db.iterator()  # one nobody closes
    next(it)
    db.close()
    assert db.closed and "1 of its calls, iterators or snapshots in use" in caplog.text
    it.close()  # closing it afterwards is harmless
    assert db._active == 0


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "120m") as disk:
        yield disk


def _free(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.slow
def test_a_full_disk_stops_writes_lets_deletes_free_space_and_writes_resume_when_room_returns(small_disk):
    root = small_disk / "node"
    root.mkdir()
    db = _open(root, reserve_bytes=40 * MiB)  # the replay of a 32 MiB log fits in it
    db.put(b"a", b"kept", sync=True)
    assert (root / RESERVE_NAME).stat().st_size == 40 * MiB  # a small disk: kept from the start
    filler = small_disk / "filler"
    # The database fills the 30 MiB left, under its 32 MiB write buffer: one log, no flush of the memtable under way
    # when the disk fills.  With 50 MiB left, a flush cut short by the full disk can keep two logs, more than the
    # reserve lets LevelDB replay: the likely cause of the one failure of this test, in a loaded CI rehearsal.
    filler.write_bytes(b"\0" * 50 * MiB)
    written = 0
    with pytest.raises(plyvel.Error) as err:
        while True:
            db.put(b"k%06d" % written, os.urandom(256 * 1024))
            written += 1
    assert disk_full(err.value) and written > 10
    with pytest.raises(plyvel.Error):
        db.put(b"more", b"x" * 1000, sync=True)  # still full: adding data fails
    assert db.get(b"a") == b"kept"  # reads go on throughout
    # Garbage collection on the full disk: a batch of deletes goes through (the reserve is given up for it).
    with db.write_batch(sync=True) as batch:
        for i in range(written // 2):
            batch.delete(b"k%06d" % i)
        batch.put(b"used", (123).to_bytes(8, "big"))
    assert not (root / RESERVE_NAME).exists() and db.reopens == 1
    before = _free(small_disk)
    db.compact_range(start=b"k", stop=b"l")  # as lease GC does on a nearly full disk (share_store.reclaim)
    assert _free(small_disk) > before + 10 * MiB  # the deleted blocks' space is back
    # Space returns (the filler goes): the next put works, without a restart.
    filler.unlink()
    db.put(b"after", b"1", sync=True)
    assert db.get(b"a") == b"kept" and db.get(b"k%06d" % (written - 1)) is not None
    assert db.get(b"k000000") is None and db.get(b"used") == (123).to_bytes(8, "big")
    assert sum(1 for _ in db.iterator(prefix=b"k")) == written - written // 2
    db.close()


def test_the_reserve_is_made_as_soon_as_writes_under_way_will_leave_the_disk_getting_full(tmp_path):
    """Uploads together can fill a disk between two once-a-second looks: told what they are about to write, the
    database makes its reserve at once, so that deletes can still free space once the disk is full."""
    with tmpfs(tmp_path / "disk", "150m") as disk:
        db = _open(disk, reserve_bytes=4 * MiB)
        try:
            db.expect(10 * MiB)  # 140 MiB free after it: not getting full
            assert not (disk / RESERVE_NAME).exists()
            db.expect(140 * MiB)  # 10 MiB free after it: under an eighth of the disk
            assert (disk / RESERVE_NAME).stat().st_size == 4 * MiB
        finally:
            db.close()
