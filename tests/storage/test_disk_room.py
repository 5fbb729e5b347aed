"""A node never promises or accepts more than its disk holds (a small tmpfs as the data dir's disk, storage.capacity far
above it): a put whose declared size the disk cannot hold is refused before its body is read, on the node's API (a
JSON problem), on its S3 front (an S3 error) and in the CLI (one line saying what to do); the market offers at most
what the disk can still take; a holder refuses a share it has no room for before its blocks come, and the gateway
places that share on another node.  A put of unknown size meets the full disk as it writes: test_disk_full.py."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import threading

import pytest

from tests.support.disks import tmpfs
from tests.support.nodes import NodeProcess, free_port
from tests.support.peers import FAST, api, joined_at_once, known_ids, node_id, wait_for_storage_offers
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

BIG = 40 * 1024**2  # plaintext: 60 MiB of blocks, more than the disk holds
REFUSED = "not enough room on the data dir's disk: this needs "


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "24m") as disk:
        yield disk


@pytest.fixture
def small_node(small_disk):
    """A node whose data dir is on a 24 MiB disk, with storage.capacity 1 GiB."""
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"]).start()
    try:
        yield node
    finally:
        node.stop()


def _storage(node) -> dict:
    status, body = api(node, "GET", "/v1/node/status")
    assert status == 200, body
    return body["storage"]


def _answer_to_head(node, headers: dict[str, str], body: bytes = b"") -> tuple[bytes, bytes]:
    """A put's head (and the first bytes of its body) sent on a connection of its own: (status line, what followed)
    as the node answered, without the rest of the body ever being sent."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as conn:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{node.port}",
                                                     "Authorization": f"Bearer {node.token}", **headers}.items())
        conn.sendall(f"POST /v1/store/files?name=big HTTP/1.1\r\n{head}\r\n".encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    return status, rest


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_put_the_disk_cannot_hold_is_refused_before_its_body_is_read(small_node) -> None:
    before = _storage(small_node)
    for headers, body in (({"Content-Length": str(BIG), "Expect": "100-continue"}, b""),  # the body is never sent
                          ({"Content-Length": str(BIG)}, os.urandom(64 * 1024))):  # its first 64 KiB only
        status, rest = _answer_to_head(small_node, headers, body)
        assert status == b"HTTP/1.1 507 Insufficient Storage", (status, rest)  # no 100 Continue before it
        problem = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert problem["code"] == "disk-full" and problem["detail"].startswith(REFUSED), problem
        assert problem["hint"] == "free space on that disk, or put it through another node", problem
        assert problem["needed"] > problem["disk_room"] > 0, problem
    after = _storage(small_node)
    assert (after["used"], after["reserved"]) == (before["used"], before["reserved"]) == (0, 0), after
    # a put the disk holds goes through
    small = os.urandom(200_000)
    status, body = _put(small_node, small)
    assert status == 201, body


def _put(node, data: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    try:
        conn.request("POST", "/v1/store/files?name=small", body=data,
                     headers={"Authorization": f"Bearer {node.token}"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_the_cli_refuses_such_a_put_in_one_line_naming_what_to_do(small_node, tmp_path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    put = small_node.xsc("store", "put", str(tmp_path / "big.bin"))
    said = put.stderr.decode().strip().splitlines()
    assert put.returncode == 1 and len(said) == 1, put.stderr
    assert said[0].startswith(f"xsc: error: {REFUSED}60.0 MiB of block space, the disk can take "), said
    assert said[0].endswith(" (free space on that disk, or put it through another node)"), said
    assert _storage(small_node)["used"] == 0


@pytest.mark.parametrize("front", ["in the node", "xsc s3 serve"])
def test_the_s3_front_refuses_such_an_object_at_once_with_an_s3_error(small_disk, front) -> None:
    """Either front asks the node before its 100 Continue (`xsc s3 serve` over GET /v1/store/room), and a put sent
    without one is refused by the node before its body is stored: either way the client is told at once, in an S3
    error, and one that waits for the 100 Continue never sends its body."""
    pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")
    from botocore.exceptions import ClientError

    from tests.support.s3 import FrontProcess, boto3_client, create_key, sign_headers

    port = free_port()
    node = NodeProcess(small_disk / "node", args=["--storage-capacity", "1GiB"],
                       env={"XSC_NODE_S3_LISTEN": f"127.0.0.1:{port}"} if front == "in the node" else {}).start()
    served = FrontProcess(node.data_dir, port).start() if front == "xsc s3 serve" else None
    try:
        key = create_key(node.data_dir)
        s3 = boto3_client(f"http://127.0.0.1:{port}", key)
        s3.create_bucket(Bucket="big-things")
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket="big-things", Key="big", Body=os.urandom(BIG))
        error, meta = refused.value.response["Error"], refused.value.response["ResponseMetadata"]
        assert (error["Code"], meta["HTTPStatusCode"]) == ("InsufficientCapacity", 507), refused.value.response
        assert error["Message"].startswith(REFUSED), error
        assert meta["RetryAttempts"] == 0  # not a 503 an SDK retries: the client is told at once
        # with Expect: 100-continue, the refusal comes instead of the 100: no body is sent
        url = f"http://127.0.0.1:{port}/big-things/big"
        headers = sign_headers("PUT", url, key, {"Content-Length": str(BIG), "Expect": "100-continue",
                                                 "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(("PUT /big-things/big HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                          + "\r\n").encode())
            answer = b""
            while b"</Error>" not in answer and (chunk := conn.recv(65536)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 507 "), answer
        assert b"<Code>InsufficientCapacity</Code>" in answer and REFUSED.encode() in answer, answer
        assert s3.list_objects_v2(Bucket="big-things").get("KeyCount") == 0
        assert _storage(node)["used"] == 0
    finally:
        if served is not None:
            served.stop()
        node.stop()


def test_the_market_offers_no_more_than_the_disk_can_take(small_node) -> None:
    """storage.capacity says 1 GiB; the 24 MiB disk holds less, and less again once another program's file takes some:
    the offer follows, at its next round."""
    def offered() -> int:
        status, body = api(small_node, "GET", "/v1/market/offer")
        assert status == 200, body
        return body["storage"]["capacity"] - body["storage"]["used"]

    room = shutil.disk_usage(small_node.data_dir).free
    assert 0 < offered() <= room < 24 * 1024**2
    with open(small_node.data_dir.parent / "filler", "wb") as filler:
        filler.write(b"\0" * (room // 2))
    eventually(lambda: offered() <= shutil.disk_usage(small_node.data_dir).free, "the offer to shrink with the disk")
    (small_node.data_dir.parent / "filler").unlink()
    eventually(lambda: offered() > room // 2, "the offer to grow again once the disk has room")


def test_a_holder_with_no_room_on_its_disk_refuses_a_share_and_the_gateway_places_it_elsewhere(node_process,
                                                                                              tmp_path) -> None:
    """The holder's disk fills after its offer reached the gateway (another program's file, while the holder is
    stopped, so that its offer cannot follow before the put is placed): its begin of the share is refused before any
    block comes (507 storage-full, its message naming its disk), and the gateway puts the share on another node."""
    slow_probes = {k: v for k, v in FAST.items() if not k.startswith("XSC_HEALTH_PROBE")}  # not down while stopped
    gateway = node_process("g", env=slow_probes)
    with tmpfs(tmp_path / "hdisk", "64m") as disk:
        holder = NodeProcess(disk / "h1", args=["--peer", gateway.url, "--storage-capacity", "1GiB"], env=FAST)
        holder.start()
        try:
            (other,) = joined_at_once(node_process, gateway, ["h2"], FAST)
            ids = {node_id(holder), node_id(other)}
            eventually(lambda: known_ids(gateway) >= ids, "the gateway to know both holders")
            wait_for_storage_offers(gateway, 3)
            data = os.urandom(12 * 1024**2)  # shares of 3 MiB and more
            (tmp_path / "f.bin").write_bytes(data)
            full = node_id(holder)

            holder.send(signal.SIGSTOP)
            try:
                with open(disk / "filler", "wb") as filler:  # the disk keeps 2 MiB free
                    filler.write(b"\0" * (shutil.disk_usage(disk).free - 2 * 1024**2))
                done: list = []
                put = threading.Thread(target=lambda: done.append(gateway.xsc(
                    "store", "put", str(tmp_path / "f.bin"), "--prefer", full, "--json", timeout=300)))
                put.start()
                # the put is placed (on the market's offers as the gateway holds them) once it reserves its own shares
                eventually(lambda: _storage(gateway)["reserved"] > 0, "the gateway to place the put")
            finally:
                holder.send(signal.SIGCONT)
            put.join()
            result = done[0]
            assert result.returncode == 0, result.stderr
            placed = json.loads(result.stdout)
            assert full not in placed["placement"], placed
            said = gateway.log.read_text()
            assert f"node {full} could not take it" in said and REFUSED in said, said[-3000:]
            status = _storage(holder)
            assert (status["used"], status["reserved"]) == (0, 0), status  # nothing of it staged there
            assert gateway.xsc("store", "get", placed["capability"], timeout=120).stdout == data
        finally:
            holder.stop()
