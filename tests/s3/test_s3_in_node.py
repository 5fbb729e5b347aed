"""A node that answers S3 itself (`node.s3_listen`): `xsc node start` says where, the address is checked as the
node starts (one in use or not an address: the node does not start, and says why), and a second front is refused.
What it answers is tested with `xsc s3 serve`'s tests, run against both (test_s3_boto3, test_s3_conformance,
test_s3_users, test_s3_crash)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import urllib.error
import urllib.request

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from tests.support.nodes import NodeProcess, free_port, run_xsc, silent_connections  # noqa: E402
from tests.support.s3 import NODE_ENV, Gateway, boto3_client, create_key, sign_headers, store_files  # noqa: E402
from tests.support.waiting import eventually  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_node_start_says_where_it_answers_s3_and_a_put_object_reads_back(tmp_path) -> None:
    s3_port = free_port()
    node = NodeProcess(tmp_path / "node", free_port(), env={**NODE_ENV, "XSC_NODE_S3_LISTEN": f"127.0.0.1:{s3_port}"})
    node.start()
    try:
        assert f"S3 at http://127.0.0.1:{s3_port}" in node.log.read_text()
        s3 = boto3_client(f"http://127.0.0.1:{s3_port}", create_key(node.data_dir))
        s3.create_bucket(Bucket="here")
        s3.put_object(Bucket="here", Key="a", Body=b"served by the node itself")
        assert s3.get_object(Bucket="here", Key="a")["Body"].read() == b"served by the node itself"
        assert [f["name"].startswith("s3:here/a#") for f in store_files(node)] == [True]
    finally:
        node.stop()


def test_an_s3_address_in_use_stops_the_node_with_the_setting_to_change(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_xsc("--data-dir", str(tmp_path / "node"), "node", "start", "--listen", f"127.0.0.1:{free_port()}",
                         env={"XSC_NODE_S3_LISTEN": f"127.0.0.1:{port}"}, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}".encode() in result.stderr and b"node.s3_listen" in result.stderr


def test_an_s3_listen_that_is_not_an_address_is_refused_before_the_node_starts(tmp_path) -> None:
    result = run_xsc("--data-dir", str(tmp_path / "node"), "node", "start", "--listen", f"127.0.0.1:{free_port()}",
                     env={"XSC_NODE_S3_LISTEN": "no-port-here"}, timeout=60)
    assert result.returncode == 1
    assert b"node.s3_listen: not a listen address: 'no-port-here' (use HOST:PORT" in result.stderr


def test_a_node_answers_s3_in_the_region_of_its_setting(tmp_path) -> None:
    """node.s3_region: clients signing for it are served, and told it by GetBucketLocation and HeadBucket; a client
    signing for another is refused naming it (as `xsc s3 serve --region`'s), and so is a CreateBucket constrained to
    another; one's own bucket created again is 409 BucketAlreadyOwnedByYou, as outside us-east-1 on S3; a setting
    that is not a region's name stops the node from starting."""
    import urllib.error

    from botocore.exceptions import ClientError

    from tests.support.s3 import code_of

    refused = run_xsc("--data-dir", str(tmp_path / "bad"), "node", "start", "--listen", f"127.0.0.1:{free_port()}",
                      env={"XSC_NODE_S3_REGION": "EU West"}, timeout=60)
    assert refused.returncode == 1 and b"node.s3_region: must be a region name like us-east-1" in refused.stderr
    assert b"$XSC_NODE_S3_REGION" in refused.stderr, refused.stderr
    gateway = Gateway(tmp_path, env={"XSC_NODE_S3_REGION": "eu-west-1"}, in_node=True).start()
    try:
        here = boto3_client(gateway.front.url, gateway.key, region_name="eu-west-1")
        here.create_bucket(Bucket="regional", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        here.put_object(Bucket="regional", Key="k", Body=b"here")
        assert here.get_bucket_location(Bucket="regional")["LocationConstraint"] == "eu-west-1"
        head = here.head_bucket(Bucket="regional")["ResponseMetadata"]["HTTPHeaders"]
        assert head["x-amz-bucket-region"] == "eu-west-1"
        with pytest.raises(ClientError) as info:
            here.create_bucket(Bucket="elsewhere", CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
        assert code_of(info) == ("IllegalLocationConstraintException", 400)
        with pytest.raises(ClientError) as info:
            here.create_bucket(Bucket="regional")
        assert code_of(info) == ("BucketAlreadyOwnedByYou", 409)
        assert [b["Name"] for b in here.list_buckets()["Buckets"]] == ["regional"]
        documented = boto3_client(gateway.front.url, gateway.key)  # signs for us-east-1
        with pytest.raises(ClientError) as info:
            documented.list_buckets()
        assert code_of(info) == ("AuthorizationHeaderMalformed", 400)
        assert info.value.response["Error"]["Region"] == "eu-west-1"
        url = documented.generate_presigned_url("get_object", Params={"Bucket": "regional", "Key": "k"})
        with pytest.raises(urllib.error.HTTPError) as presigned:
            urllib.request.urlopen(url)
        assert presigned.value.code == 400 and b"<Region>eu-west-1</Region>" in presigned.value.read()
    finally:
        gateway.stop()


def test_a_node_that_answers_s3_itself_refuses_a_second_front_and_its_writes(tmp_path) -> None:
    """One front a node: `xsc s3 serve` stops at once, saying where the node answers S3, and a front's writes of
    files' records and its housekeeping through the user API are refused (409 s3-served-by-node); the reads the CLI
    makes still answer, and so do the writes of records alone it makes (`xsc s3 mb`, `rb`), which store no file."""
    s3_port = free_port()
    node = NodeProcess(tmp_path / "node", free_port(), env={**NODE_ENV, "XSC_NODE_S3_LISTEN": f"127.0.0.1:{s3_port}"})
    node.start()
    try:
        boto3_client(f"http://127.0.0.1:{s3_port}", create_key(node.data_dir)).create_bucket(Bucket="here")
        front = run_xsc("--data-dir", str(node.data_dir), "s3", "serve", "--listen", f"127.0.0.1:{free_port()}",
                        timeout=60)
        assert front.returncode != 0
        assert f"this node answers S3 itself at http://127.0.0.1:{s3_port}".encode() in front.stderr
        for method, path, body in (("POST", "/v1/s3/reconcile", {"caps": []}), ("GET", "/v1/s3/garbage", None),
                                   ("POST", "/v1/s3/expire", {}),
                                   ("PUT", "/v1/s3/buckets/here/object?key=k&user=xsc", {"cap": "x"}),
                                   ("POST", "/v1/s3/garbage/forget", {"caps": []})):
            status, problem = _call(node, method, path, body)
            assert (status, problem["code"]) == (409, "s3-served-by-node"), (path, problem)
        assert _call(node, "PUT", "/v1/s3/buckets/other?user=xsc", None)[0] == 201
        assert _call(node, "DELETE", "/v1/s3/buckets/other?user=xsc", None) == (200, {"deleted": "other"})
        status, listing = _call(node, "GET", "/v1/s3/buckets/here/objects?user=xsc", None)
        assert status == 200 and listing["contents"] == []
    finally:
        node.stop()


def _call(node: NodeProcess, method: str, path: str, body: dict | None) -> tuple[int, dict]:
    request = urllib.request.Request(node.url + path, method=method, headers={
        "Authorization": f"Bearer {node.token}", "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_put_whose_body_stalls_is_answered_request_timeout_and_keeps_nothing(tmp_path) -> None:
    gateway = Gateway(tmp_path, {"XSC_NODE_IDLE_TIMEOUT": "1"}, in_node=True).start()
    try:
        gateway.client().create_bucket(Bucket="slow")
        size = 4 * 1024 * 1024
        headers = sign_headers("PUT", gateway.front.url + "/slow/o", gateway.key, {"Content-Length": str(size)})
        conn = http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=60)
        conn.putrequest("PUT", "/slow/o", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(os.urandom(size // 3))  # then nothing more
        answer = conn.getresponse()
        assert answer.status == 400 and b"<Code>RequestTimeout</Code>" in answer.read()
        conn.close()

        def nothing_kept() -> bool:
            status = json.loads(gateway.node.xsc("node", "status", "--json").stdout)
            return status["storage"]["reserved"] == 0 and not store_files(gateway.node)

        eventually(nothing_kept, "the stalled put's file and reservation to be gone", 60)
        assert gateway.client().list_objects_v2(Bucket="slow")["KeyCount"] == 0
    finally:
        gateway.stop()


async def test_idle_connections_to_the_s3_listener_are_capped_per_address_and_closed(node_factory) -> None:
    """Anyone may connect to the S3 listener: sockets that send nothing are capped per address (503 past it) and
    closed after node.idle_timeout, as on the node's own listener, not kept for aiohttp's hour each until the
    node's descriptors run out."""
    port = free_port()
    await node_factory("s3", node={"s3_listen": f"127.0.0.1:{port}", "max_connections_per_ip": 16,
                                   "idle_timeout": 2})
    answers = await silent_connections(port, 48)
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert len(refused) >= 48 - 16, answers
    assert set(answers) - set(refused) <= {b""}  # the rest closed once idle
    status, _ = await asyncio.to_thread(_get_root, port)
    assert status == 403  # served again: an unsigned request, refused as S3 refuses it


def _get_root(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
