"""Failed authentications at the node's own S3 listener (node.s3_listen): a wrong signature or an unknown access key
counts against its client's address with the user API's failures (node.auth_failure_limit), and past them the address
is answered S3's own 503 SlowDown, with Retry-After, whatever it signs; a client at another address is served.  The
front in its own process (`xsc s3 serve`) counts them alike, at the same limit, in a count of its own."""

from __future__ import annotations

import asyncio
import http.client
import re

import pytest
from aiohttp import ClientSession, TCPConnector

from tests.support.nodes import free_port
from tests.support.s3 import Gateway, boto3_client, code_of, signed_answer
from xsc.node import CONFIG, TOKEN
from xsc.node.auth import FAILURE_BURST
from xsc.s3.access import KeyRing, key_file

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")


async def test_an_address_guessing_s3_keys_is_slowed_down_and_another_address_is_served(node_factory) -> None:
    from botocore.exceptions import ClientError

    port = free_port()
    node = await node_factory(node={"s3_listen": f"127.0.0.1:{port}", "auth_failure_limit": 0.001})  # none forgiven
    base = f"http://127.0.0.1:{port}"
    key = KeyRing(key_file(node.app[CONFIG].data_dir)).create()
    guesses = [boto3_client(base, {**key, "secret_key": "x" * 40}),  # the right key, a wrong secret
               boto3_client(base, {"access_key": "AKIA" + "X" * 16, "secret_key": "x" * 40})]  # a key not here
    right = boto3_client(base, key)
    await asyncio.to_thread(right.create_bucket, Bucket="kept")
    for i in range(FAILURE_BURST):
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(guesses[i % 2].list_buckets)
        assert code_of(refused) == (("SignatureDoesNotMatch", "InvalidAccessKeyId")[i % 2], 403), (i, code_of(refused))
    for client in (*guesses, right):  # past them: S3's throttle, the right key too (a right guess does not get in)
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(client.list_objects_v2, Bucket="kept")
        assert code_of(refused) == ("SlowDown", 503), code_of(refused)
    answer, body = await asyncio.to_thread(signed_answer, http.client.HTTPConnection("127.0.0.1", port, timeout=30),
                                           base, key, "GET", "/kept")
    assert answer.status == 503 and answer.headers["Content-Type"] == "application/xml", answer.status
    assert int(answer.headers["Retry-After"]) >= 1 and b"<Code>SlowDown</Code>" in body, body
    assert re.search(rb"<Message>too many failed authentications from address 127\.0\.0\.1: at most 0\.001 a second",
                     body), body
    # One count an address for all of the node's credentials: its user API refuses that address too.
    assert (await node.get("/v1/node/status")).status == 429

    # Another address is served, its S3 client and its user API alike.
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0))
    answer, body = await asyncio.to_thread(signed_answer, other, base, key, "GET", "/kept")
    assert answer.status == 200 and b"<ListBucketResult" in body, (answer.status, body)
    async with ClientSession(connector=TCPConnector(local_addr=("127.0.0.2", 0))) as elsewhere:
        status = await elsewhere.get(str(node.make_url("/v1/node/status")),
                                     headers={"Authorization": f"Bearer {node.app[TOKEN]}"})
        assert status.status == 200


def test_xsc_s3_serve_slows_down_an_address_guessing_keys_and_serves_another(tmp_path) -> None:
    from botocore.exceptions import ClientError

    gateway = Gateway(tmp_path, {"XSC_NODE_AUTH_FAILURE_LIMIT": "0.001"}).start()  # none forgiven, at the front too
    try:
        base, key = gateway.front.url, gateway.key
        guesses = [boto3_client(base, {**key, "secret_key": "x" * 40}),
                   boto3_client(base, {"access_key": "AKIA" + "X" * 16, "secret_key": "x" * 40})]
        right = gateway.client()
        right.create_bucket(Bucket="kept")
        for i in range(FAILURE_BURST):
            with pytest.raises(ClientError) as refused:
                guesses[i % 2].list_buckets()
            assert code_of(refused) == (("SignatureDoesNotMatch", "InvalidAccessKeyId")[i % 2], 403), (i, code_of(refused))
        for client in (*guesses, right):  # past them: SlowDown, the right key too
            with pytest.raises(ClientError) as refused:
                client.list_objects_v2(Bucket="kept")
            assert code_of(refused) == ("SlowDown", 503), code_of(refused)
        answer, body = signed_answer(http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=30),
                                     base, key, "GET", "/kept")
        assert answer.status == 503 and int(answer.headers["Retry-After"]) >= 1, answer.status
        assert re.search(rb"<Message>too many failed authentications from address 127\.0\.0\.1: at most 0\.001 a "
                         rb"second", body), body
        other = http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=30, source_address=("127.0.0.2", 0))
        answer, body = signed_answer(other, base, key, "GET", "/kept")
        assert answer.status == 200 and b"<ListBucketResult" in body, (answer.status, body)
    finally:
        gateway.stop()
