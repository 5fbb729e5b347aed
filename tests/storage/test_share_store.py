"""The share store's small uploads: their blocks wait in memory and reach the disk in the one synced write that
publishes them, with the file's record and its deals; past the memory bound, uploads are staged as large ones."""

from __future__ import annotations

import os

import plyvel
import pytest

from xsc import keys
from xsc.db import Database
from xsc.node import DB
from xsc.storage import Capability
from xsc.storage.share_store import HELD_AT_MOST, HELD_UPLOAD, ShareMeta, ShareStore

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
    synced: list[set[bytes]] = []
    batch = Database.write_batch

    def recording(self, **kwargs):
        made = batch(self, **kwargs)
        if kwargs.get("sync"):
            written: set[bytes] = set()
            synced.append(written)
            put = made.put

            def put_and_record(key: bytes, value: bytes) -> None:
                written.add(key)
                put(key, value)

            made.put = put_and_record
        return made

    monkeypatch.setattr(Database, "write_batch", recording)
    resp = await node.post("/v1/store/files", data=os.urandom(1024))
    assert resp.status == 201, await resp.text()
    si = Capability.parse((await resp.json())["capability"]).storage_index
    assert not any(key.startswith(keys.UPLOADS) for keys_ in synced for key in keys_)  # no staging record
    published = [keys_ for keys_ in synced if keys.file(si) in keys_]
    assert len(published) == 1
    assert {keys.storage_deal(si, s) for s in range(6)} <= published[0]
    assert {keys.block(si, s, 0) for s in range(6)} <= published[0]
    assert len(node.app[DB].get(keys.storage_deal(si, 0), b"")) > 0
