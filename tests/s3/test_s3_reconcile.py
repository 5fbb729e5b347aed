"""Reconciliation beside writes: the front removes the files it stored that no record names, and never one whose write
is still under way; writes go on while it runs (`WriteGate.drained`, not a gate that holds them back)."""

from __future__ import annotations

import asyncio

from xsc.buckets.core.names import DEFAULT_USER
from xsc.node.appkeys import NODE
from xsc.s3.access import KeyRing
from xsc.s3.marks import FileMarks
from xsc.s3.server import S3Front, WriteGate


async def test_drained_waits_for_the_writes_under_way_and_holds_none_back() -> None:
    gate = WriteGate()
    ends = {"early": asyncio.Event(), "late": asyncio.Event()}
    begun = {"early": asyncio.Event(), "late": asyncio.Event()}

    async def write(name: str) -> None:
        async with gate.write():
            begun[name].set()
            await ends[name].wait()

    early = asyncio.ensure_future(write("early"))
    await begun["early"].wait()
    drained = asyncio.ensure_future(gate.drained())
    late = asyncio.ensure_future(write("late"))
    await begun["late"].wait()  # a write that begins while reconciliation waits is not held back
    assert not drained.done()
    ends["early"].set()
    await drained  # done although late's write is still under way
    assert not late.done()
    ends["late"].set()
    await late
    await gate.drained()  # nothing under way: at once


async def _body(data: bytes):
    yield data


def _record(cap: str) -> dict:
    return {"content_type": "", "metadata": {}, "headers": {}, "etag": "e", "modified": 0.0,
            "parts": [{"cap": cap, "size": int(cap.rsplit(":", 1)[1])}]}


async def test_a_file_whose_write_is_under_way_is_never_taken_for_an_orphan(node, tmp_path, monkeypatch) -> None:
    link = node.app[NODE].s3_link
    marks = FileMarks(b"s" * 32)
    front = S3Front(link, KeyRing(tmp_path / "keys"), marks)
    await link.create_bucket("kept", DEFAULT_USER)
    orphan = (await link.put_file(_body(b"left by a crash"), 15, marks.name("kept/lost")))["capability"]
    waiting = asyncio.Event()
    drained = front.gate.drained

    async def drained_seen() -> None:
        waiting.set()
        await drained()

    monkeypatch.setattr(front.gate, "drained", drained_seen)
    async with front.gate.write():  # stored, not yet recorded, as reconciliation lists the store
        stored = (await link.put_file(_body(b"under way"), 9, marks.name("kept/k")))["capability"]
        reconciling = asyncio.ensure_future(front.reconcile())
        await waiting.wait()
        async with front.gate.write():  # a write that begins meanwhile goes through
            later = (await link.put_file(_body(b"later"), 5, marks.name("kept/later")))["capability"]
            await link.record("kept", "later", DEFAULT_USER, _record(later))
        assert not reconciling.done()
        await link.record("kept", "k", DEFAULT_USER, _record(stored))
    assert await reconciling == [orphan]
    caps = {f["capability"] for f in await link.files()}
    assert stored in caps and later in caps and orphan not in caps


async def test_names_checked_a_slice_at_a_time_still_keep_a_copied_name_s_files(node, tmp_path, monkeypatch) -> None:
    """The names are checked in slices (the loop serves between them); two files under one name the front gave (a user
    copied it) are neither of them the front's, whichever slices they fall in."""
    import xsc.s3.server as server

    monkeypatch.setattr(server, "MARKS_AT_ONCE", 1)
    link = node.app[NODE].s3_link
    marks = FileMarks(b"s" * 32)
    front = S3Front(link, KeyRing(tmp_path / "keys"), marks)
    copied = marks.name("kept/copied")
    first = (await link.put_file(_body(b"one"), 3, copied))["capability"]
    orphan = (await link.put_file(_body(b"left by a crash"), 15, marks.name("kept/lost")))["capability"]
    second = (await link.put_file(_body(b"two"), 3, copied))["capability"]
    assert await front.reconcile() == [orphan]
    caps = {f["capability"] for f in await link.files()}
    assert {first, second} <= caps and orphan not in caps
