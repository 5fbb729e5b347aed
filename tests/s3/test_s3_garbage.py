"""The files a DeleteObjects leaves garbage removed together, through either link of the front (the node's own
process, `xsc s3 serve`'s user API), REMOVED_AT_ONCE at a time however many: a garbage mark that is not a capability
(a record a client of the node's API wrote with any string for its part) holds none of the others back, and is
dropped with one warning (it names no file: nothing can ever be removed for it); a file the node took out of its
listing and could not finish removing is the node's to finish, its mark done with."""

from __future__ import annotations

import contextlib
import logging
import os

import pytest

from xsc.buckets.core.names import DEFAULT_USER
from xsc.buckets.marks import FileMarks
from xsc.client.aio import NodeApi
from xsc.node.appkeys import NODE, TOKEN
from xsc.s3.access import KeyRing
from xsc.s3.remote import RemoteNode
from xsc.s3.server import S3Front
from xsc.storage import Capability


async def _body(data: bytes):
    yield data


def _record(parts: list[tuple[str, int]]) -> dict:
    return {"content_type": "", "metadata": {}, "headers": {}, "etag": "e", "modified": 0.0,
            "parts": [{"cap": cap, "size": size} for cap, size in parts]}


@contextlib.asynccontextmanager
async def _link(node, through: str):
    """The front's link to the in-process `node`: its own (in the node's process), or over its user API."""
    local = node.app[NODE].s3_link
    if through == "node":
        yield local
        return
    api = NodeApi(str(node.make_url("")), node.app[TOKEN])
    await api.start()
    try:
        yield RemoteNode(api)
    finally:
        await api.close()


@pytest.mark.parametrize("through", ["node", "user-api"])
async def test_a_garbage_mark_that_is_no_capability_holds_none_of_the_others_back_and_is_dropped_once(
        node, tmp_path, through, caplog) -> None:
    async with _link(node, through) as link:
        marks = FileMarks(b"s" * 32)
        front = S3Front(link, KeyRing(tmp_path / "keys"), marks)
        await link.create_bucket("held", DEFAULT_USER)
        stored = []
        for n in range(5):
            cap = (await link.put_file(_body(b"x" * (10 + n)), 10 + n, marks.name(f"held/{n}")))["capability"]
            await link.record("held", str(n), DEFAULT_USER, _record([(cap, 10 + n)]))
            stored.append(cap)
        # Whatever a record names is its part: a capability mangled, one with the spaces a copy picks up, anything.
        hostile = ["not a capability", "xsc:chk:abc", stored[0][:-2] + ":3:2:10", "", "x" * 4096]
        await link.record("held", "hostile", DEFAULT_USER, _record([(text, 1) for text in hostile]))
        await link.record("held", "spaced", DEFAULT_USER, _record([(f" {stored[4]}\n", 14)]))
        garbage = await link.delete_objects("held", [*map(str, range(5)), "hostile", "spaced"], DEFAULT_USER)
        assert sorted(garbage) == sorted([*stored, *hostile, f" {stored[4]}\n"])
        with caplog.at_level(logging.WARNING, logger="xsc.s3.writes"):
            await front.writes.collect(garbage)
            assert {f["capability"] for f in await link.files()}.isdisjoint(stored)
            assert await link.garbage() == []  # the others removed; the hostile ones dropped, nothing to remove
            assert await front.writes.collect_all() == 0  # nothing left to try at the next reconciliation
        said = [r.getMessage() for r in caplog.records if r.name == "xsc.s3.writes"]
        assert said == ["dropped 5 garbage marks that named no file (not a capability: nothing to remove)"], said


@pytest.mark.parametrize("through", ["node", "user-api"])
async def test_files_named_by_the_thousands_are_removed_a_thousand_at_a_time(node, through, monkeypatch) -> None:
    """2,500 names (five of them files held, the others capabilities of no file here): three removals of at most
    1,000, as the user API takes them a request, whichever link the front has."""
    storage = node.app[NODE].storage
    real, batches = storage.removals.remove_all, []

    async def removing(caps):
        batches.append(len(caps))
        return await real(caps)

    monkeypatch.setattr(storage.removals, "remove_all", removing)
    async with _link(node, through) as link:
        held = [(await link.put_file(_body(b"y" * (20 + n)), 20 + n, f"many-{n}"))["capability"] for n in range(5)]
        names = [str(Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10)) for _ in range(2495)]
        for at, cap in zip((0, 999, 1000, 1999, 2499), held):
            names.insert(at, cap)
        done = await link.delete_files(names)
    assert batches == [1000, 1000, 500], batches
    assert sorted(done) == sorted(names)  # removed, or held by no one: done with
    assert {f["capability"] for f in await storage.files()}.isdisjoint(held)


@pytest.mark.parametrize("through", ["node", "user-api"])
async def test_a_removal_the_node_could_not_finish_is_its_to_finish_and_the_mark_is_done_with(node, through,
                                                                                             monkeypatch,
                                                                                             caplog) -> None:
    """The records' write of a removal refused by a full disk: the files are out of the listing and the node finishes
    them (every storage.gc_interval); the front is told why, and drops their marks rather than ask again."""
    import plyvel

    storage, store = node.app[NODE].storage, node.app[NODE].gateway.store
    real = store.delete_files

    def full(sis: list[bytes]) -> None:
        raise plyvel.IOError(b"IO error: db/000007.log: No space left on device")

    async with _link(node, through) as link:
        caps = [(await link.put_file(_body(b"z" * (30 + n)), 30 + n, f"unfinished-{n}"))["capability"]
                for n in range(2)]
        monkeypatch.setattr(store, "delete_files", full)
        with caplog.at_level(logging.WARNING):
            assert sorted(await link.delete_files(caps)) == sorted(caps)
    assert await storage.files() == [] and len(store.removals()) == 2
    said = [r.getMessage() for r in caplog.records]
    assert "could not finish removing 2 files yet: the data dir's disk is full" in said, said  # the node's log
    if through == "user-api":  # and the front's, in the node's words
        assert ("the node took 2 files out of its listing and finishes removing them later: the data dir's disk is "
                "full") in said, said
    monkeypatch.setattr(store, "delete_files", real)
    await storage.removals.finish_cut_short()  # a round of the node's storage-strays loop, the disk with room again
    assert store.removals() == []
