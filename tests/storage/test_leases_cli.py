"""Leases through the CLI: put --duration, renew, ls, bad durations (the click app in this process against a
node), and a kill -9 of a real node process in the middle of a garbage collection."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from xsc import keys
from xsc.node.datadir import open_db
from xsc.node.appkeys import NODE
from xsc.storage.holder_client import RemoteHolder
from xsc.storage import ShareMeta

from tests.support.peers import api, node_id
from tests.support.waiting import eventually
from tests.support.shares import EncodedFile


PRICE = 1_000_000  # a deal price above any ask: shares placed directly, as a gateway would after matching


def test_put_with_a_duration_renew_and_ls_through_the_cli(cli_node, tmp_path: Path) -> None:
    node = cli_node()
    src = tmp_path / "f.bin"
    src.write_bytes(b"lease me" * 1000)
    start = int(time.time())
    put = node.xsc("store", "put", str(src), "--duration", "2h", "--max-price", "5000", "--json")
    assert put.returncode == 0, put.stderr
    result = json.loads(put.stdout)
    assert start + 7200 <= result["lease_expiry"] <= int(time.time()) + 7200
    cap = result["capability"]

    listed = node.xsc("store", "ls")
    assert listed.returncode == 0 and b"expires" in listed.stdout
    files = json.loads(node.xsc("store", "ls", "--json").stdout)
    assert files[0]["lease_expiry"] == result["lease_expiry"]

    renew = node.xsc("store", "renew", cap, "--duration", "3d")
    assert renew.returncode == 0, renew.stderr
    assert b"every share's lease ends at" in renew.stdout
    shorter = node.xsc("store", "renew", cap, "--duration", "1d")  # never shortened: said, not priced at 0
    assert shorter.returncode == 0 and b"already ends at" in shorter.stdout, shorter.stdout
    said = b" ".join(shorter.stdout.split())  # a sentence piped is wrapped at 80 columns
    assert b"nothing extended, nothing to pay (a lease is never shortened)" in said, shorter.stdout
    files = json.loads(node.xsc("store", "ls", "--json").stdout)
    assert files[0]["lease_expiry"] >= start + 3 * 86400

    for args, words in ((("store", "put", str(src), "--duration", "soon"), "not a duration"),
                        (("store", "put", str(src), "--duration", "30s"), "is not within 1m to 3650d"),
                        (("store", "renew", cap, "--duration", "20000d"), "is not within 1m to 3650d"),
                        (("store", "renew", cap, "--duration", "-1d"), "duration must not be negative: '-1d'"),
                        (("store", "renew", cap, "--duration", "90500ms"), "not a whole number of seconds")):
        bad = node.xsc(*args)
        first, usage = bad.stderr.decode().splitlines()  # a usage error, as every time flag's: exit 2
        assert bad.returncode == 2, first
        assert first.startswith("xsc: usage error: invalid value for '--duration': ") and words in first, first
        assert first.endswith("(e.g. --duration 30d)") and usage.startswith(f"usage: xsc store {args[1]} "), usage
    assert len(json.loads(node.xsc("store", "ls", "--json").stdout)) == 1  # the refused put stored nothing


def _consistent(data_dir: Path, storage_indexes: list[bytes]) -> tuple[int, int]:
    """Check a stopped node's store: the used counter is exactly the bytes of the published shares, each
    share has all its blocks, no block belongs to no share, a manifest is kept while a share needs it.
    Returns (used, shares)."""
    db = open_db(data_dir)
    try:
        metas = {keys.split_share(k): ShareMeta.decode(v) for k, v in db.iterator(prefix=keys.SHARES)}
        assert {si for si, _ in metas} <= set(storage_indexes)
        used = int.from_bytes(db.get(keys.STORAGE_USED) or b"", "big")
        assert used == sum(m.stored_bytes for m in metas.values())
        for si in storage_indexes:
            held = {(s, m) for (i, s), m in metas.items() if i == si}
            blocks = set(db.iterator(prefix=keys.blocks_of(si), include_value=False))
            assert blocks == {keys.block(si, s, i) for s, m in held for i in range(m.segment_count)}
            assert (db.get(keys.manifest(si)) is not None) == bool(held)
        return used, len(metas)
    finally:
        db.close()


@pytest.mark.slow
async def test_a_kill_9_during_garbage_collection_leaves_the_store_exact(node_process, node_factory) -> None:
    # A slow collection (36 blocks/s, four shares of 9 blocks a second) so the kill lands in the middle of it.
    env = {"XSC_STORAGE_GC_INTERVAL": "0.1", "XSC_STORAGE_GC_GRACE": "0", "XSC_STORAGE_GC_RATE": "36",
           "XSC_HEALTH_PROBE_INTERVAL": "3600", "XSC_PEERS_GOSSIP_INTERVAL": "3600"}
    holder = await asyncio.to_thread(node_process, "holder", None, env)
    uploader = await node_factory("uploader", health={"probe_interval": 3600}, peers={"gossip_interval": 3600})
    await uploader.app[NODE].peers.add(holder.url)
    to_holder = RemoteHolder(uploader.app[NODE].peers.client, await asyncio.to_thread(node_id, holder), holder.url, PRICE)
    files = [EncodedFile(8 * 4096) for _ in range(12)]
    lease = int(time.time()) + 3
    for f in files:
        upload = await to_holder.begin(f.si, 0, f.size, f.segment_size, lease)
        await to_holder.put_segments(upload, 0, f.blocks[0])
        await to_holder.commit(upload, f.hashes[0], f.manifest.encode())

    def collected() -> int:
        status, body = api(holder, "GET", "/v1/node/status")
        assert status == 200, body
        return body["lease_gc"]["shares"]

    await asyncio.to_thread(eventually, lambda: collected() >= 3, "the holder to start collecting")
    holder.kill()
    used, shares = _consistent(holder.data_dir, [f.si for f in files])
    assert used == shares * files[0].share_bytes and shares < len(files)

    holder.start()  # the collection goes on after the restart, from a consistent store
    await asyncio.to_thread(eventually, lambda: api(holder, "GET", "/v1/node/status")[1]["storage"]["used"] == 0,
                            "the holder to collect the rest")
    await asyncio.to_thread(holder.stop)  # the uploader, on this loop, answers the holder as it stops
    assert _consistent(holder.data_dir, [f.si for f in files]) == (0, 0)
