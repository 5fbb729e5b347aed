"""The data dir's disk fills up during a put (a small tmpfs as the data dir's disk): the put fails with a
clear error, nothing is published, reads go on; when space returns, the next put works (with or without a
restart).  Garbage collection on a full disk: tests/test_db.py."""

from __future__ import annotations

import errno
import json
import os

import pytest

from tests.support.disks import mount_tmpfs, tmpfs
from tests.support.waiting import eventually
from xsc.devnet import NodeProcess, run_xsc




@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "40m") as disk:
        yield disk


def _fill(node: NodeProcess, tmp_path) -> tuple[str, bytes]:
    """Put a small file (a.bin), then one larger than the disk (b.bin), which fails cleanly: (capability, bytes).
    b.bin is put through stdin, a stream of unknown size that fills the disk as it is written (one of known size
    the disk cannot hold is refused before it is read: test_disk_room.py)."""
    small = os.urandom(200_000)
    (tmp_path / "a.bin").write_bytes(small)
    put = node.xsc("store", "put", str(tmp_path / "a.bin"))
    assert put.returncode == 0, put.stderr
    (tmp_path / "b.bin").write_bytes(os.urandom(60 * 1024**2))  # more than the disk holds
    full = node.xsc("store", "put", "-", input=(tmp_path / "b.bin").read_bytes())
    assert full.returncode != 0 and b"disk is full" in full.stderr, full.stderr
    assert full.stderr.count(b"(") == full.stderr.count(b")") == 1, full.stderr  # one line, its hint in one pair
    return put.stdout.decode().strip().splitlines()[-1], small


@pytest.mark.slow
def test_a_full_disk_fails_a_put_cleanly_and_reads_go_on(small_disk, tmp_path) -> None:
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"]).start()
    try:
        cap, small = _fill(node, tmp_path)
        got = node.xsc("store", "get", cap, "-o", str(tmp_path / "a.out"))
        assert got.returncode == 0 and (tmp_path / "a.out").read_bytes() == small
        listed = node.xsc("store", "ls", "--json")
        assert listed.stdout.count(b"xsc:chk:") == 1  # nothing of the failed put is listed
    finally:
        node.stop()
    # More room, a restart: what the failed put staged is cleaned up, the old file reads, a new put works.
    assert mount_tmpfs(small_disk, "200m", remount=True)
    node.start()
    try:
        (tmp_path / "a.out").unlink()
        assert node.xsc("store", "get", cap, "-o", str(tmp_path / "a.out")).returncode == 0
        assert (tmp_path / "a.out").read_bytes() == small
        again = node.xsc("store", "put", str(tmp_path / "b.bin"), timeout=300)
        assert again.returncode == 0, again.stderr
        status = node.xsc("node", "status", "--json")
        assert b'"used"' in status.stdout
    finally:
        node.stop()


@pytest.mark.slow
def test_when_space_returns_the_next_put_works_without_a_restart(small_disk, tmp_path) -> None:
    """LevelDB refuses every write after a failed background write until it is reopened: the node's database
    reopens itself (xsc/db.py) once there is room, so freeing space is enough."""
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"]).start()
    try:
        cap, small = _fill(node, tmp_path)
        again = node.xsc("store", "put", str(tmp_path / "a.bin"))  # still full: a clean refusal, not a crash
        assert again.returncode != 0 or again.stdout.strip(), again.stderr
        got = node.xsc("store", "get", cap, "-o", str(tmp_path / "a.out"))
        assert got.returncode == 0 and (tmp_path / "a.out").read_bytes() == small  # reads go on
        # Space returns (the node is not restarted): room for b.bin's 90 MiB of blocks twice over, since LevelDB
        # holds a write in its log and in the table it flushes to until the log is dropped.
        assert mount_tmpfs(small_disk, "400m", remount=True)
        after = node.xsc("store", "put", str(tmp_path / "b.bin"), timeout=300)
        assert after.returncode == 0, after.stderr
        cap_b = after.stdout.decode().strip().splitlines()[-1]
        (tmp_path / "b.out").unlink(missing_ok=True)
        assert node.xsc("store", "get", cap_b, "-o", str(tmp_path / "b.out"), timeout=300).returncode == 0
        assert (tmp_path / "b.out").read_bytes() == (tmp_path / "b.bin").read_bytes()
        (tmp_path / "a.out").unlink()
        assert node.xsc("store", "get", cap, "-o", str(tmp_path / "a.out")).returncode == 0
        assert (tmp_path / "a.out").read_bytes() == small
        assert node.alive() and "reopened the database" in node.log.read_text()
    finally:
        node.stop()


@pytest.mark.slow
def test_a_capacity_larger_than_the_disk_is_said_at_the_start_and_in_the_status(small_disk) -> None:
    """storage.capacity is what the node offers and counts free; a data dir's disk smaller than it fills first, so
    the operator is told, in the log as the node starts and beside `free` in `xsc node status`."""
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"]).start()
    try:
        status = json.loads(node.xsc("node", "status", "--json").stdout)["storage"]
        assert 0 < status["disk_free"] <= 40 * 1024**2 < status["free"], status
        shown = node.xsc("node", "status").stdout.decode()
        assert "(but the data dir's disk has" in shown, shown
        assert "storage.capacity leaves 1.0 GiB free, but the data dir's disk has" in node.log.read_text()
    finally:
        node.stop()


@pytest.mark.slow
def test_a_start_on_a_full_disk_is_refused_in_one_line_and_works_once_there_is_room(small_disk, tmp_path) -> None:
    """LevelDB writes its log out as a table as it opens, and the start's recovery deletes what interrupted uploads
    staged: on a disk with no room the node says so in one line (not a traceback), and starts once there is room."""
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"]).start()
    data = os.urandom(300_000)
    (tmp_path / "a.bin").write_bytes(data)
    put = node.xsc("store", "put", str(tmp_path / "a.bin"))
    assert put.returncode == 0, put.stderr
    cap = put.stdout.decode().split()[-1]
    node.kill()  # its records still in LevelDB's logs, to be written out as the next start opens them
    with open(small_disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError) as full:
        while True:
            filler.write(b"\0" * 1024**2)
    assert full.value.errno == errno.ENOSPC
    start = run_xsc("--data-dir", str(node.data_dir), "node", "start", "--listen", f"127.0.0.1:{node.port}",
                    timeout=120)
    said = start.stderr.decode()
    assert start.returncode == 1 and "Traceback" not in said, said
    assert said.strip().splitlines()[-1].startswith("xsc: error: the data dir's disk is full"), said
    (small_disk / "filler").unlink()
    node.start()
    try:
        (tmp_path / "a.out").unlink(missing_ok=True)
        assert node.xsc("store", "get", cap, "-o", str(tmp_path / "a.out")).returncode == 0
        assert (tmp_path / "a.out").read_bytes() == data
    finally:
        node.stop()


@pytest.mark.slow
def test_a_stop_on_a_full_disk_says_so_in_lines_not_tracebacks(small_disk, tmp_path) -> None:
    """What the node writes as it stops (the signed offer that tells peers it leaves, what its services keep) meets
    the full disk: the log says so, and the node stops."""
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"]).start()
    (tmp_path / "a.bin").write_bytes(os.urandom(300_000))
    assert node.xsc("store", "put", str(tmp_path / "a.bin")).returncode == 0
    with open(small_disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
        while True:
            filler.write(b"\0" * 1024**2)
    # Small files, whose blocks ride with the records: a put of them fills what the records' log had left.
    (tmp_path / "small.bin").write_bytes(os.urandom(30_000))
    for _ in range(100):
        if node.xsc("store", "put", str(tmp_path / "small.bin")).returncode != 0:
            break
    else:
        pytest.fail("the records' database kept taking writes on a full disk")
    before = len(node.log.read_text())
    node.stop()
    stopping = node.log.read_text()[before:]
    assert "stopped" in stopping and "Traceback" not in stopping, stopping


def _used(node: NodeProcess) -> int:
    return json.loads(node.xsc("node", "status", "--json").stdout)["storage"]["used"]


@pytest.mark.slow
def test_an_rm_on_a_full_disk_says_what_it_did_and_the_space_comes_back_once_there_is_room(small_disk,
                                                                                            tmp_path) -> None:
    """A removal unlists the file, then deletes its shares' records (their bytes no longer used), then their blocks:
    a full disk may refuse a step.  The user is told what happened (never that nothing was stored), the figures say
    what the records say, the rm they are told to run again finishes the removal, and blocks the disk would not let
    go of are deleted once it has room, without a restart."""
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"],
                       env={"XSC_STORAGE_GC_INTERVAL": "1s"}).start()
    try:
        before = _used(node)
        cap, _ = _fill(node, tmp_path)
        assert _used(node) > before
        removed = node.xsc("store", "rm", cap)
        message = removed.stderr.decode()
        if removed.returncode != 0:
            assert "disk is full" in message and "nothing was stored" not in message, message
            listed = json.loads(node.xsc("store", "ls", "--json").stdout)
            if "no longer listed" in message:
                assert listed == [] and "xsc store rm again" in message, (listed, message)
            else:
                assert "nothing was removed" in message and len(listed) == 1, (listed, message)
            assert mount_tmpfs(small_disk, "200m", remount=True)  # room again, no restart
            again = node.xsc("store", "rm", cap)
            assert again.returncode == 0, again.stderr
        assert _used(node) == before  # its shares' bytes no longer counted
        assert json.loads(node.xsc("store", "ls", "--json").stdout) == []
        gone = node.xsc("store", "rm", cap)
        assert gone.returncode == 1 and b"no file with that capability" in gone.stderr
        assert mount_tmpfs(small_disk, "200m", remount=True)
        if "stay on disk until it has room" in node.log.read_text():
            eventually(lambda: "deleted the staged blocks a full disk had kept" in node.log.read_text(),
                       "the kept blocks deleted once the disk has room")
        assert cap not in node.log.read_text()  # a capability is a secret: the log names it by a prefix at most
        assert node.xsc("store", "put", str(tmp_path / "a.bin")).returncode == 0
    finally:
        node.stop()


@pytest.fixture
def gc_disk(tmp_path, monkeypatch):
    import xsc.db

    # A real disk keeps 1/20 of itself (at most 64 MiB) for deletes; this small one keeps a third, which holds
    # the replay of LevelDB's 32 MiB log as the 64 MiB reserve of a large disk does.
    monkeypatch.setattr(xsc.db, "RESERVE_FRACTION", 3)
    with tmpfs(tmp_path / "gcdisk", "150m") as disk:
        yield disk


@pytest.mark.slow
async def test_lease_gc_on_a_full_disk_frees_space_and_corrupts_nothing(gc_disk) -> None:
    import time

    from tests.support.nodes import node_config, serve
    from xsc.db import RESERVE_NAME
    from xsc.node.appkeys import NODE
    from xsc.storage import Capability

    node = await serve(node_config(gc_disk, "node", storage={"capacity": "1GiB", "gc_grace": 0}))
    try:
        store, collector = node.app[NODE].gateway.store, node.app[NODE].lease_gc
        short = await node.post("/v1/store/files", params={"name": "short", "duration": "60"},
                                data=os.urandom(20 * 1024**2))
        assert short.status == 201, await short.text()
        kept_data = os.urandom(1024**2)
        kept = await node.post("/v1/store/files", params={"name": "kept", "duration": "7200"}, data=kept_data)
        assert kept.status == 201, await kept.text()
        kept_cap = (await kept.json())["capability"]
        # The disk fills up with another program's file, the node holding its reserve (made as it opened its
        # databases on this small disk).  Not with a put that fails: its staged blocks, deleted, are compacted away
        # on the compactor's thread (storage/compactor.py) as the collection runs, which then begins on a disk that
        # is emptying, beside a compaction that takes room of its own.
        assert (gc_disk / "node" / RESERVE_NAME).exists()
        with open(gc_disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError) as full:
            while True:
                filler.write(b"\0" * 1024**2)
        assert full.value.errno == errno.ENOSPC
        used, stat = store.used, os.statvfs(gc_disk)
        free_before = stat.f_bavail * stat.f_frsize

        # The short lease ends: garbage collection on the full disk deletes its shares and gives the space back.
        round_ = await collector.collect(now=time.time() + 120)
        assert round_["shares"] == 6 and store.used < used, round_
        stat = os.statvfs(gc_disk)
        assert stat.f_bavail * stat.f_frsize > free_before + 10 * 1024**2
        got = await node.get(f"/v1/store/files/{kept_cap}")
        assert got.status == 200 and await got.read() == kept_data  # nothing else was touched
        assert len(store.share_metas(Capability.parse(kept_cap).storage_index)) == 6
        again = await node.post("/v1/store/files", params={"name": "again"}, data=os.urandom(1024**2))
        assert again.status == 201, await again.text()  # and the node writes again, without a restart
    finally:
        await node.close()
