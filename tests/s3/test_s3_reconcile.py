"""Reconciliation beside writes: the front removes the files it stored that no record names, and never one whose write
is still under way; writes go on while it runs (`WriteGate.drained`, not a gate that holds them back)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading

import aiohttp
import pytest

from xsc.config import NodeSection
from xsc.buckets.core.names import DEFAULT_USER, SMALL_OBJECT
from xsc.errors import XscError
from xsc.node.appkeys import NODE
from xsc.s3.access import KeyRing
from xsc.buckets.marks import FileMarks
from xsc.s3.server import S3Front, WriteGate, listen

from tests.support.nodes import free_port
from tests.support.s3 import sign_headers
from tests.support.waiting import eventually_async

MiB = 1024 * 1024


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


@pytest.fixture
async def served_front(node, tmp_path):
    """A front over the node in this process, listening, with its key: (front, link, url, key)."""
    link = node.app[NODE].s3_link
    ring = KeyRing(tmp_path / "keys")
    front = S3Front(link, ring, FileMarks(b"s" * 32))
    port = free_port()
    runner = await listen(front, "127.0.0.1", port, NodeSection())
    await link.create_bucket("gate", DEFAULT_USER)
    yield front, link, f"http://127.0.0.1:{port}", ring.create()
    await runner.cleanup()
    await front.small.close()


async def _send_put(url: str, key: dict, path: str, data: bytes, sent: int,
                    extra: dict[str, str] | None = None) -> asyncio.StreamWriter:
    """A signed PutObject of `data` (with the `extra` headers) whose first `sent` bytes only are written: the open
    connection."""
    return (await _open_put(url, key, path, data, sent, extra))[1]


async def _open_put(url: str, key: dict, path: str, data: bytes, sent: int,
                    extra: dict[str, str] | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host = url.removeprefix("http://")
    headers = sign_headers("PUT", url + path, key, {"Host": host, "Content-Length": str(len(data)), **(extra or {})})
    reader, writer = await asyncio.open_connection(*host.split(":"))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"PUT {path} HTTP/1.1\r\n{head}\r\n".encode() + data[:sent])
    await writer.drain()
    return reader, writer


def _reset(writer: asyncio.StreamWriter) -> None:
    """The client gone at once (a reset, as a killed client's kernel sends)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_client_gone_mid_body_ends_its_write_and_stores_nothing(served_front) -> None:
    front, link, url, key = served_front
    before = {f["capability"] for f in await link.files()}
    writer = await _send_put(url, key, "/gate/half", os.urandom(3 * MiB), MiB)
    await eventually_async(lambda: front.gate.under_way == 1, "the put under way")
    _reset(writer)
    await eventually_async(lambda: front.gate.under_way == 0, "the write ended")
    assert {f["capability"] for f in await link.files()} == before
    with pytest.raises(XscError):
        await link.object("gate", "half", DEFAULT_USER)


@pytest.mark.parametrize("size", [3 * MiB, 4096], ids=["streamed", "small"])
async def test_a_write_whose_handler_is_cancelled_mid_commit_counts_until_its_record_is_written(
        served_front, monkeypatch, size) -> None:
    """The client is killed once its body is in and the record is on its way, then the handler cancelled (as aiohttp
    cancels handlers when the server stops): the node writes the record all the same, so the write counts as under
    way until it has, and a reconciliation meanwhile waits for it rather than removing the object's file."""
    front, link, url, key = served_front
    held, release = threading.Event(), threading.Event()
    if size > SMALL_OBJECT:  # the record's write, in the node's pool: a cancelled caller does not stop it
        put_all = link.index.put_all

        def slow_put_all(*args, **kwargs):
            held.set()
            release.wait(60)
            return put_all(*args, **kwargs)

        monkeypatch.setattr(link.index, "put_all", slow_put_all)
    else:  # a small object's put, stored and recorded at once: by the front's sender, not by the handler
        for name in ("put", "put_group"):
            asked = getattr(link.objects, name)

            async def asking(*args, asked=asked, **kwargs):
                held.set()
                await asyncio.to_thread(release.wait, 60)
                return await asked(*args, **kwargs)

            monkeypatch.setattr(link.objects, name, asking)
    handlers: list[asyncio.Task] = []
    dispatch = front.dispatch

    async def dispatched(call):
        handlers.append(asyncio.current_task())
        return await dispatch(call)

    monkeypatch.setattr(front, "dispatch", dispatched)
    data = os.urandom(size)
    writer = await _send_put(url, key, "/gate/k", data, len(data))
    await asyncio.to_thread(held.wait, 60)
    _reset(writer)
    handler = handlers[0]
    handler.cancel()
    await asyncio.wait([handler])
    assert front.gate.under_way == 1

    waiting, passed = asyncio.Event(), asyncio.Event()
    drained = front.gate.drained

    async def drained_seen() -> None:
        waiting.set()
        await drained()
        passed.set()

    monkeypatch.setattr(front.gate, "drained", drained_seen)
    reconciling = asyncio.ensure_future(front.reconcile())
    await waiting.wait()
    if passed.is_set():  # let by: it judges the files before the record lands
        await reconciling
    release.set()
    await eventually_async(lambda: front.gate.under_way == 0, "the record written")
    await reconciling
    record = await link.object("gate", "k", DEFAULT_USER)
    body = await link.open_file(record["parts"][0]["cap"])
    try:
        assert b"".join([chunk async for chunk in body]) == data
    finally:
        await body.aclose()


async def test_overwrites_of_one_key_beside_reconciliations_leave_the_last_object_whole_and_no_file_behind(
        served_front) -> None:
    """Overwrites of one key, streamed and small, at once, with reconciliations running beside them: each overwrite
    removes the file its key pointed at outside the write gate (`_collect`), and none ever removes the file of a newer
    record, or leaves a file no record names once the writes and a last reconciliation are done."""
    front, link, url, key = served_front
    host = url.removeprefix("http://")
    bodies = [os.urandom(2 * MiB if i % 3 == 0 else 3000 + i) for i in range(24)]
    done = asyncio.Event()

    async def reconciling() -> int:
        rounds = 0
        while not done.is_set():
            await front.reconcile()
            rounds += 1
        return rounds

    async def put(session: aiohttp.ClientSession, data: bytes) -> None:
        headers = sign_headers("PUT", url + "/gate/k", key, {"Host": host, "Content-Length": str(len(data))})
        async with session.put(url + "/gate/k", data=data, headers=headers) as response:
            assert response.status == 200, await response.text()

    reconciler = asyncio.ensure_future(reconciling())
    async with aiohttp.ClientSession() as session:
        for i in range(0, len(bodies), 8):
            await asyncio.gather(*(put(session, data) for data in bodies[i:i + 8]))
    done.set()
    assert await reconciler >= 1
    await front.reconcile()
    record = await link.object("gate", "k", DEFAULT_USER)
    body = await link.open_file(record["parts"][0]["cap"])
    try:
        assert b"".join([chunk async for chunk in body]) in bodies
    finally:
        await body.aclose()
    ours = {f["capability"] for f in await link.files() if front.marks.ours(f.get("name", ""))}
    assert ours == {record["parts"][0]["cap"]}
    assert await link.garbage() == []


@pytest.mark.parametrize("deleted", [True, False], ids=["at-once", "front-gone-first"])
async def test_a_conditional_put_that_loses_its_race_has_its_file_removed_at_once(served_front, monkeypatch,
                                                                                 deleted) -> None:
    """A PutObject with If-None-Match: * whose condition held as it began, and whose body is still on its way when
    another write of the key is recorded, is refused (409) as its record is written: its file, stored by then, is
    removed before the answer.  Its garbage mark is written with the refusal, so a front that cannot remove it (gone
    in between, as after a kill -9) leaves it to its next reconciliation."""
    front, link, url, key = served_front
    host = url.removeprefix("http://")
    before = {f["capability"] for f in await link.files()}
    data = os.urandom(3 * MiB)
    reader, writer = await _open_put(url, key, "/gate/raced", data, MiB, {"If-None-Match": "*"})
    await eventually_async(lambda: front.gate.under_way == 1, "the loser's condition judged and its body on its way")
    won = b"the winner"
    headers = sign_headers("PUT", url + "/gate/raced", key, {"Host": host, "Content-Length": str(len(won)),
                                                              "If-None-Match": "*"})
    async with aiohttp.ClientSession() as session:
        async with session.put(url + "/gate/raced", data=won, headers=headers) as response:
            assert response.status == 200, await response.text()
    if not deleted:
        async def gone(caps: list[str]) -> list[str]:
            raise XscError("the front went away before it removed the file")

        monkeypatch.setattr(link, "delete_files", gone)
    writer.write(data[MiB:])
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert answer.startswith(b"HTTP/1.1 409"), answer
    winner = (await link.object("gate", "raced", DEFAULT_USER))["parts"][0]["cap"]
    if not deleted:
        assert len(await link.garbage()) == 1  # the loser's file, marked
        monkeypatch.undo()
        await front.reconcile()
    assert {f["capability"] for f in await link.files()} == before | {winner}
    assert await link.garbage() == []


async def test_a_part_whose_upload_is_aborted_while_it_comes_has_its_file_removed_at_once(served_front) -> None:
    """An UploadPart whose upload is aborted while its body is on its way is refused (404 NoSuchUpload) as its record
    is written: its file, stored by then, is removed before the answer."""
    front, link, url, key = served_front
    before = {f["capability"] for f in await link.files()}
    upload_id = await link.create_upload("gate", "parted", DEFAULT_USER, "", {}, {})
    data = os.urandom(3 * MiB)
    reader, writer = await _open_put(url, key, f"/gate/parted?partNumber=1&uploadId={upload_id}", data, MiB)
    await eventually_async(lambda: front.gate.under_way == 1, "the part's body on its way")
    assert await link.abort(upload_id, DEFAULT_USER) == []
    writer.write(data[MiB:])
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert answer.startswith(b"HTTP/1.1 404"), answer
    assert {f["capability"] for f in await link.files()} == before
    assert await link.garbage() == []
