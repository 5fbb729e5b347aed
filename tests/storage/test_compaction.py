"""The blocks' database compacted where a large run of blocks was removed (xsc/storage/compactor.py): after uploads
cut short the size of `blocks/` on disk comes back to `used`; ranges noted while one waits are compacted once, small
removals not at all; a kill -9 during a compaction leaves the store readable and exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.nodes import start_xsc
from tests.support.waiting import eventually
from xsc import keys
from xsc.node.datadir import BLOCKS_DIR, open_blocks, open_db
from xsc.storage.compactor import COMPACT_AT_LEAST, Compactor
from xsc.storage.share_store import ShareMeta, ShareStore

MiB = 1024 * 1024
BLOCK = 256 * 1024


def _on_disk(folder: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in folder.iterdir() if f.is_file())


def _status(node) -> dict:
    return json.loads(node.xsc("node", "status", "--json").stdout)["storage"]


def _bytes_received(node) -> float:
    request = urllib.request.Request(node.url + "/metrics", headers={"Authorization": f"Bearer {node.token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        lines = answer.read().decode().splitlines()
    return next(float(line.split()[1]) for line in lines if line.startswith("xsc_storage_bytes_received_total"))


def test_uploads_cut_short_give_their_room_on_disk_back(node_process, tmp_path: Path) -> None:
    node = node_process()
    kept = os.urandom(3 * MiB)
    (tmp_path / "kept.bin").write_bytes(kept)
    cap = node.xsc("store", "put", str(tmp_path / "kept.bin")).stdout.decode().strip().splitlines()[-1]
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(256 * MiB)
    for _ in range(2):
        received = _bytes_received(node)
        put = start_xsc("--data-dir", str(node.data_dir), "--node", node.url, "store", "put", str(big),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(lambda: _bytes_received(node) >= received + 4 * MiB, "the node to take 4 MiB of the put", 60)
        put.kill()  # the uploader's kill -9: its put is cut short, and what it staged removed
        put.wait(60)
        eventually(lambda: _status(node)["reserved"] == 0, "the cut put's removal", 60)
    used = _status(node)["used"]
    # What LevelDB keeps beside the tables (its log, manifest and LOG) is well under a MiB here.
    eventually(lambda: _on_disk(node.data_dir / BLOCKS_DIR) < used + MiB, "blocks/ on disk to come back to used", 60)
    assert node.xsc("store", "get", cap).stdout == kept


def test_a_range_noted_while_it_waits_is_compacted_once_and_a_small_removal_not_at_all(tmp_path: Path) -> None:
    records, blocks = open_db(tmp_path), open_blocks(tmp_path)
    compactor = Compactor(blocks)
    try:
        for si, size in ((b"a" * 32, COMPACT_AT_LEAST), (b"a" * 32, COMPACT_AT_LEAST),
                         (b"b" * 32, COMPACT_AT_LEAST - 1)):  # the last one small: left to LevelDB
            with compactor.removing(keys.blocks_of(si), size):
                pass
        assert compactor.status()["waiting"] == 1 and compactor.status()["waiting_bytes"] == 2 * COMPACT_AT_LEAST
        compactor.start()
        eventually(compactor.idle, "the compactor to be done")
        assert compactor.status()["compactions"] == 1
    finally:
        compactor.stop()
        records.close()
        blocks.close()


def _kept_blocks(segments: int) -> dict[tuple[int, int], bytes]:
    return {(share, segment): bytes([share, segment]) * (BLOCK // 2) for share in (0, 1) for segment in range(segments)}


def _compact_then_wait(root: Path) -> None:
    """In a child process: a kept file, then a large upload staged and aborted, whose compaction the parent kills."""
    records, blocks = open_db(root), open_blocks(root)
    compactor = Compactor(blocks)
    store = ShareStore(records, 1 << 40, blocks=blocks, compactor=compactor)
    kept = store.begin_upload(b"k" * 32, (0, 1), None)
    for (share, segment), block in _kept_blocks(8).items():
        kept.put_blocks(segment, {share: block})
    store.publish(kept, [ShareMeta(s, 8, 8 * BLOCK, 2_000_000_000, bytes(32), (bytes(32),) * 8) for s in (0, 1)])
    cut = store.begin_upload(b"c" * 32, tuple(range(6)), None)
    block = os.urandom(BLOCK)
    for segment in range(64):  # 96 MiB
        cut.put_blocks(segment, dict.fromkeys(range(6), block))
    compactor.start()
    store.abort(cut)
    while not compactor.status()["running"]:
        pass  # the thread has just taken the range: the parent kills this process while it compacts
    sys.stdout.write("c")
    sys.stdout.flush()
    time.sleep(60)


def test_a_kill_9_during_a_compaction_leaves_the_store_readable_and_exact(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", f"from {__name__} import _compact_then_wait as c; "
                              f"from pathlib import Path; c(Path({str(tmp_path)!r}))"], stdout=subprocess.PIPE)
    try:
        assert child.stdout.read(1) == b"c"
    finally:
        child.kill()
        child.wait()
    records, blocks = open_db(tmp_path), open_blocks(tmp_path)
    try:
        store = ShareStore(records, 1 << 40, blocks=blocks)
        assert store.recover() == 0 and store.used == 2 * 8 * BLOCK
        assert {(keys.block_share(k), keys.block_segment(k)): v
                for k, v in blocks.iterator(prefix=keys.blocks_of(b""))} == _kept_blocks(8)
        assert list(records.iterator(prefix=keys.blocks_of(b""))) == []
    finally:
        records.close()
        blocks.close()
