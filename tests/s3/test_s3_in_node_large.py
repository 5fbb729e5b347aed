"""Large objects through the node's own S3 listener (`node.s3_listen`), boto3 against a node in this process: a
GetObject of shares all held here is sent as the user API sends the file (serve/direct.send_body), passed to the
socket by its get's threads (gateway_get's `Plaintext.pass_on`), whole, ranged and across a multipart object's parts,
byte-exact; within the gateway's bound on such gets; a damaged share is repaired from the others or, past what the
code can rebuild, cuts the body short and is reported; a client gone mid-get frees the get's threads and its slot.
And a large PutObject, whole or multipart, streams through a node (a process of its own) in bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from boto3.s3.transfer import TransferConfig  # noqa: E402

from xsc.node.appkeys import CONFIG, NODE  # noqa: E402
from xsc.s3.access import KeyRing, key_file  # noqa: E402
from xsc.storage import Capability  # noqa: E402
from xsc.storage.gateway_get import PASSED_ON_AT_ONCE  # noqa: E402

from bench.common import AnonSampler  # noqa: E402
from tests.support.nodes import free_port  # noqa: E402
from tests.support.s3 import Gateway, boto3_client, sign_headers  # noqa: E402
from tests.support.waiting import eventually_async  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MiB = 1024 * 1024
SEG = 256 * 1024  # a 64 MiB object is 256 segments


@pytest.fixture
async def s3_node(node_factory):
    """A node in this process answering S3 itself, its boto3 client (called in a thread: it blocks) and its key."""
    node = await node_factory(node={"s3_listen": f"127.0.0.1:{free_port()}"},
                              storage={"segment_size": SEG, "capacity": 1024 * MiB})
    key = KeyRing(key_file(node.app[CONFIG].data_dir)).create()
    url = f"http://{node.app[CONFIG].node.s3_listen}"
    s3 = boto3_client(url, key)
    await asyncio.to_thread(s3.create_bucket, Bucket="big")
    return node, s3, url, key


def _get(s3, **kwargs) -> bytes:
    return s3.get_object(Bucket="big", **kwargs)["Body"].read()


def _object_cap(node, key: str) -> Capability:
    record = node.app[NODE].s3_link.index.get("big", key)
    return Capability.parse(record["parts"][0]["cap"])


async def test_a_large_get_object_is_passed_on_by_threads_whole_and_ranged_byte_exact(s3_node, passed_on) -> None:
    node, s3, _, _ = s3_node
    data = os.urandom(64 * MiB + 12345)
    await asyncio.to_thread(s3.put_object, Bucket="big", Key="o", Body=data)
    assert await asyncio.to_thread(_get, s3, Key="o") == data
    first, last = 3 * SEG - 7, 40 * SEG + 99
    assert await asyncio.to_thread(_get, s3, Key="o", Range=f"bytes={first}-{last}") == data[first:last + 1]
    assert await asyncio.to_thread(_get, s3, Key="o", Range="bytes=-5000") == data[-5000:]  # within one segment
    await eventually_async(lambda: len(passed_on) == 2, "both large gets' handlers done")
    assert passed_on == [len(data), last - first + 1]  # the last range is one segment: iterated on the loop
    assert node.app[NODE].gateway.passing_on == 0


async def test_a_multipart_object_is_passed_on_part_by_part(s3_node, passed_on) -> None:
    _, s3, _, _ = s3_node
    parts = [os.urandom(5 * MiB + 1), os.urandom(5 * MiB), os.urandom(SEG // 2)]

    def upload() -> None:
        upload_id = s3.create_multipart_upload(Bucket="big", Key="m")["UploadId"]
        done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket="big", Key="m", UploadId=upload_id, PartNumber=n,
                                                         Body=p)["ETag"]} for n, p in enumerate(parts, 1)]
        s3.complete_multipart_upload(Bucket="big", Key="m", UploadId=upload_id, MultipartUpload={"Parts": done})

    await asyncio.to_thread(upload)
    data = b"".join(parts)
    assert await asyncio.to_thread(_get, s3, Key="m") == data
    first, last = 5 * MiB - 100, 10 * MiB + 200
    assert await asyncio.to_thread(_get, s3, Key="m", Range=f"bytes={first}-{last}") == data[first:last + 1]
    # whole: parts 1 and 2 passed on, the last (one segment) iterated; ranged: the end of part 1 (two segments: its
    # last holds one byte) and the whole of part 2 passed on, the start of part 3 (one segment) iterated
    await eventually_async(lambda: len(passed_on) == 4, "the parts' gets done")
    assert passed_on == [len(parts[0]), len(parts[1]), len(parts[0]) - first, len(parts[1])]


async def test_get_objects_share_the_gateways_bound_with_the_user_apis_gets(s3_node, passed_on) -> None:
    """With every slot held (PASSED_ON_AT_ONCE gets passed on at once), a large GetObject is iterated on the loop,
    whole and exact; once a slot is free it is passed on again."""
    node, s3, _, _ = s3_node
    data = os.urandom(8 * MiB)
    await asyncio.to_thread(s3.put_object, Bucket="big", Key="o", Body=data)
    storage, gateway = node.app[NODE].storage, node.app[NODE].gateway
    opened = [(await storage.open(_object_cap(node, "o")))[1] for _ in range(PASSED_ON_AT_ONCE)]
    assert all(p.take_threads() for p in opened)
    assert await asyncio.to_thread(_get, s3, Key="o") == data and passed_on == []
    for p in opened:
        await p.aclose()
    assert await asyncio.to_thread(_get, s3, Key="o") == data
    await eventually_async(lambda: passed_on == [len(data)], "the get passed on once a slot was free")
    await eventually_async(lambda: gateway.passing_on == 0, "its slot back as the get closed")


def _damage(node, cap: Capability, shares: tuple[int, ...], segment: int) -> None:
    store = node.app[NODE].gateway.store
    for share in shares:
        block = bytearray(store.get_block(cap.storage_index, share, segment))
        block[7] ^= 0x10
        store.put_repaired_blocks(cap.storage_index, segment, {share: bytes(block)})


async def _corrupt_shares(node, cap: Capability) -> list[int]:
    check = await (await node.get(f"/v1/store/files/{cap}/check")).json()
    return [s["share"] for s in check["shares"] if s["status"] == "corrupt"]


async def test_a_damaged_share_is_read_around_and_reported_and_too_many_cut_the_body(s3_node, passed_on) -> None:
    node, s3, url, key = s3_node
    data = os.urandom(64 * SEG)
    await asyncio.to_thread(s3.put_object, Bucket="big", Key="o", Body=data)
    cap = _object_cap(node, "o")
    _damage(node, cap, (1,), 20)  # one share bad: the segment is rebuilt from the others, the bytes exact
    assert await asyncio.to_thread(_get, s3, Key="o") == data
    await eventually_async(lambda: _corrupt_shares(node, cap), "share 1 reported corrupt")
    assert await _corrupt_shares(node, cap) == [1]
    _damage(node, cap, (0, 1, 2), 40)  # three bad in one segment: the bytes before it, then the connection cut
    got = await asyncio.to_thread(_raw_get, url, key, "/big/o")
    assert len(got) < len(data) and got == data[:len(got)]

    async def reported() -> bool:
        return await _corrupt_shares(node, cap) == [0, 1, 2]
    await eventually_async(reported, "shares 0, 1, 2 reported corrupt")
    await eventually_async(lambda: passed_on == [len(data), -1], "both gets' handlers done")
    assert node.app[NODE].gateway.passing_on == 0


def _raw_get(url: str, key: dict, path: str) -> bytes:
    """A signed GET read to its end or until the node cuts the connection: the bytes that came."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", path, headers=sign_headers("GET", url + path, key, {}))
    response = conn.getresponse()
    assert response.status == 200
    got = bytearray()
    try:
        while chunk := response.read1(1 << 20):
            got += chunk
    except http.client.IncompleteRead as cut:
        got += cut.partial
    finally:
        conn.close()
    return bytes(got)


def _get_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("xsc-reader", "xsc-sender"))]


async def test_a_client_gone_mid_get_object_frees_its_threads_and_slot(s3_node, passed_on, caplog) -> None:
    """... and is logged as the client's leaving (info), not as an error of the node's."""
    caplog.set_level("INFO", logger="xsc.s3.bodies")
    node, s3, url, key = s3_node
    data = os.urandom(64 * MiB)
    await asyncio.to_thread(s3.put_object, Bucket="big", Key="o", Body=data)

    def get_and_leave() -> bytes:
        host, port = url.removeprefix("http://").split(":")
        headers = sign_headers("GET", url + "/big/o", key, {"Host": f"{host}:{port}"})
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the node's writer waits for room
            sock.settimeout(10)
            sock.connect((host, int(port)))
            sock.sendall(("GET /big/o HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                          + "\r\n").encode())
            head = sock.recv(4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close with a reset
            return head

    assert b" 200 " in await asyncio.to_thread(get_and_leave)

    async def ended() -> bool:
        return _get_threads() == []
    await eventually_async(ended, "the get's threads ended")
    await eventually_async(lambda: passed_on == [-1], "the get's handler done")
    await eventually_async(lambda: node.app[NODE].gateway.passing_on == 0, "its slot back")
    assert await asyncio.to_thread(_get, s3, Key="o") == data
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "xsc.s3.bodies"]
    assert [level for level, _ in said] == ["INFO"] and "big/o cut short: the client went away" in said[0][1], said


class _Stored(NamedTuple):
    s3: object  # a boto3 client of the node's own listener, with a bucket "big"
    src: Path  # a 256 MiB file of random bytes, already stored with `store put`
    digest: str  # its SHA-256
    native_mib: float  # the node's anonymous memory at most during that `store put`
    pid: int  # the node's


@pytest.fixture(scope="module")
def large_file(tmp_path_factory) -> tuple[Path, str]:
    """A 256 MiB file of random bytes and its SHA-256, read by the tests below, each with a node of its own: a node
    that took another test's puts holds more memory than a fresh one's `store put` peak it is measured against."""
    return _random_file(tmp_path_factory.mktemp("large") / "object.bin", 256 * MiB)


@pytest.fixture
def stored_natively(tmp_path, large_file):
    gateway = Gateway(tmp_path, env={"XSC_STORAGE_SEGMENT_SIZE": str(MiB)}, in_node=True).start()
    try:
        s3 = gateway.client()
        s3.create_bucket(Bucket="big")
        src, digest = large_file
        with AnonSampler(gateway.node.pid, interval=0.005) as native:
            assert gateway.node.xsc("store", "put", str(src)).returncode == 0
        yield _Stored(s3, src, digest, native.peak_mib, gateway.node.pid)
    finally:
        gateway.stop()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads a process's memory from /proc")
def test_large_put_objects_whole_and_multipart_stream_in_bounded_memory(stored_natively) -> None:
    """A 256 MiB PutObject, and the same object as a multipart upload (8 MiB parts, one after another), through the
    node's own listener: the node's anonymous memory stays within what a `store put` of the file takes it to (plus
    a few chunks; the object is never held whole: ~140 MiB in all, docs/s3.md), and the object reads back exact.
    (Parts sent at once: the next test.)"""
    s3, src, digest, native_mib, pid = stored_natively
    with AnonSampler(pid, interval=0.005) as whole:
        with src.open("rb") as f:
            s3.put_object(Bucket="big", Key="whole", Body=f)
    with AnonSampler(pid, interval=0.005) as parts:
        s3.upload_file(str(src), "big", "parts", Config=TransferConfig(
            multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, use_threads=False))
    bound = native_mib + 32  # MiB: a put's own buffers and a few of the front's chunks, not the object
    assert whole.peak_mib < bound and parts.peak_mib < bound, (native_mib, whole.peak_mib, parts.peak_mib)
    for key in ("whole", "parts"):
        assert _object_digest(s3, key) == digest


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads a process's memory from /proc")
def test_parts_sent_at_once_share_the_gateways_bound_on_segments_in_flight(stored_natively) -> None:
    """boto3's `upload_file` with its defaults (8 MiB parts, ten at once) of a 256 MiB file to the node's own
    listener: ten puts at once, whose segments in flight are bounded across them by the gateway's budget, so the node
    stays within a lone `store put`'s peak plus what the waiting parts' connections buffer (docs/s3.md, Memory), and
    the object reads back exact."""
    s3, src, digest, native_mib, pid = stored_natively
    config = TransferConfig()
    assert (config.multipart_chunksize, config.max_concurrency) == (8 * MiB, 10)
    with AnonSampler(pid, interval=0.005) as parts:
        s3.upload_file(str(src), "big", "parts", Config=config)
    # A part waits for its turn before it reads its next segment: besides the budget, each of the ten holds what
    # aiohttp buffers of its body (server.READ_BUFFER), and the heap pages freed between them (docs/s3.md, Memory):
    # 22-32 MiB over the lone put, where parts that each had a pipeline of their own reached 53-68 MiB over.
    assert parts.peak_mib < native_mib + 40, (native_mib, parts.peak_mib)
    assert _object_digest(s3, "parts") == digest


def _random_file(path, size: int):
    """A file of `size` random bytes (written 16 MiB at a time) and its SHA-256."""
    sha = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // (16 * MiB)):
            chunk = os.urandom(16 * MiB)
            sha.update(chunk)
            f.write(chunk)
    return path, sha.hexdigest()


def _object_digest(s3, key: str) -> str:
    body, sha = s3.get_object(Bucket="big", Key=key)["Body"], hashlib.sha256()
    while chunk := body.read(4 * MiB):
        sha.update(chunk)
    return sha.hexdigest()
