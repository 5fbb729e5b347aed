"""An object larger than the node's storage.capacity leaves free, through either front: refused at once with an S3
error SDKs do not retry (QuotaExceeded 403, as Ceph's RGW answers a put over a quota), its message the node's, never a
503 a client retries with backoff and that can never succeed; and, asked with `Expect: 100-continue`, refused
instead of the 100 Continue, so the body is never sent.  An object the data dir's disk cannot hold:
tests/storage/test_disk_room.py."""

from __future__ import annotations

import io
import os
import socket
import xml.etree.ElementTree as ET

import pytest

from tests.support.s3 import Gateway, reserved, sign_headers, store_files

pytestmark = pytest.mark.slow

CAPACITY = "8MiB"
BIG = 12 * 1024**2  # its blocks, 18 MiB, more than the capacity
REFUSED = "not enough storage: this needs "


@pytest.fixture(scope="module", params=["front", "in-node"])
def small(request, tmp_path_factory):
    """A node whose storage.capacity is 8 MiB, with `xsc s3 serve` in front of it or its own S3 listener."""
    g = Gateway(tmp_path_factory.mktemp("capacity"), {"XSC_STORAGE_CAPACITY": CAPACITY},
                in_node=request.param == "in-node").start()
    yield g
    g.stop()


def _retrying_client(gateway: Gateway):
    """A boto3 client with the SDK's own retries (legacy mode: four after the first, 503 among what it retries), and
    the requests it sends counted as they go."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=gateway.front.url, aws_access_key_id=gateway.key["access_key"],
                      aws_secret_access_key=gateway.key["secret_key"], region_name="us-east-1",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    sent: list[str] = []
    s3.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    return s3, sent


def test_an_object_over_the_capacity_is_refused_at_once_and_not_retried(small) -> None:
    from botocore.exceptions import ClientError

    s3, sent = _retrying_client(small)
    s3.create_bucket(Bucket="over")
    for body in (os.urandom(BIG), io.BytesIO(os.urandom(BIG))):  # bytes: no Expect; a file: Expect: 100-continue
        sent.clear()
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket="over", Key="big", Body=body)
        error, meta = refused.value.response["Error"], refused.value.response["ResponseMetadata"]
        assert (error["Code"], meta["HTTPStatusCode"]) == ("QuotaExceeded", 403), refused.value.response
        assert error["Message"].startswith(REFUSED) and "storage.capacity" in error["Message"], error
        assert meta["RetryAttempts"] == 0 and sent == ["PUT"], (meta, sent)  # one request, told at once
    upload = s3.create_multipart_upload(Bucket="over", Key="parts")["UploadId"]
    sent.clear()
    with pytest.raises(ClientError) as refused:
        s3.upload_part(Bucket="over", Key="parts", UploadId=upload, PartNumber=1, Body=io.BytesIO(os.urandom(BIG)))
    assert refused.value.response["Error"]["Code"] == "QuotaExceeded" and sent == ["PUT"], refused.value.response
    s3.abort_multipart_upload(Bucket="over", Key="parts", UploadId=upload)
    assert s3.list_objects_v2(Bucket="over")["KeyCount"] == 0
    assert reserved(small.node) == 0 and _stored(small, "over") == []
    s3.put_object(Bucket="over", Key="fits", Body=os.urandom(1024**2))  # what the capacity holds goes in
    assert s3.get_object(Bucket="over", Key="fits")["ContentLength"] == 1024**2


def _expecting(gateway: Gateway, path: str, size: int) -> bytes:
    """A signed PUT of `size` bytes that asks `Expect: 100-continue` and sends none of its body: what the front
    answers, up to the end of its error document (or the connection's end)."""
    url = gateway.front.url + path
    headers = sign_headers("PUT", url, gateway.key, {"Content-Length": str(size), "Expect": "100-continue"})
    with socket.create_connection(("127.0.0.1", gateway.front.port), timeout=60) as conn:
        conn.sendall((f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                      + "\r\n").encode())
        answer = b""
        while b"</Error>" not in answer and not answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n") and \
                (chunk := conn.recv(65536)):
            answer += chunk
    return answer


def _stored(gateway: Gateway, bucket: str) -> list[str]:
    """The names of the store's files that hold objects or parts of `bucket`."""
    return [f["name"] for f in store_files(gateway.node) if f["name"].startswith(f"s3:{bucket}/")]


def test_a_client_that_expects_100_continue_is_refused_instead_and_never_sends_the_body(small) -> None:
    s3 = small.client()
    s3.create_bucket(Bucket="expecting")
    upload = s3.create_multipart_upload(Bucket="expecting", Key="parts")["UploadId"]
    for path in ("/expecting/big", f"/expecting/parts?partNumber=1&uploadId={upload}"):
        answer = _expecting(small, path, BIG)
        assert answer.startswith(b"HTTP/1.1 403 "), answer  # not "HTTP/1.1 100 Continue" first
        document = ET.fromstring(answer.partition(b"\r\n\r\n")[2])
        assert document.tag == "Error" and document.findtext("Code") == "QuotaExceeded", answer
        assert document.findtext("Message").startswith(REFUSED), answer
    assert reserved(small.node) == 0 and _stored(small, "expecting") == []
    s3.abort_multipart_upload(Bucket="expecting", Key="parts", UploadId=upload)
    fits = _expecting(small, "/expecting/small", 1024**2)  # what the node has room for is told to come
    assert fits == b"HTTP/1.1 100 Continue\r\n\r\n", fits
