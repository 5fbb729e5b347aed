"""Bucket names and keys from S3 clients are checked before they reach the node's API (a real front and node):
a name that is not a bucket name is 400 on every operation, never another bucket, and every path the front
sends the node is percent-encoded segment by segment."""

from __future__ import annotations

import http.client

import pytest

from tests.support.s3 import sign_headers
from xsc.buckets.core import names
from xsc.errors import InvalidArgument, InvalidBucketName
from xsc.s3 import remote


def _raw(gateway, method: str, path: str) -> tuple[int, bytes]:
    headers = sign_headers(method, gateway.front.url + path, gateway.key, {"Content-Length": "0"})
    conn = http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("method, path", [("DELETE", "/victimb%3F/x"), ("GET", "/victimb%3F/k1"),
                                          ("GET", "/%2E%2E/k1"), ("GET", "/%2E%2E"),
                                          ("PUT", "/victimb%23/x"), ("DELETE", "/victimb%3F"),
                                          ("PUT", "/victimb%0A"), ("GET", "/victimb%0A/x")])
def test_a_name_that_is_not_a_bucket_name_is_400_and_touches_no_bucket(gateway, method, path) -> None:
    s3 = gateway.client()
    s3.create_bucket(Bucket="victimb")
    s3.put_object(Bucket="victimb", Key="x", Body=b"still here")
    s3.put_object(Bucket="victimb", Key="k1", Body=b"k1")
    status, body = _raw(gateway, method, path)
    assert status == 400 and b"<Code>InvalidBucketName</Code>" in body, (status, body)
    assert s3.get_object(Bucket="victimb", Key="x")["Body"].read() == b"still here"
    assert "victimb" in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_every_value_in_a_node_path_stays_one_segment() -> None:
    for value in ("victimb?", "../x", "a/b", "a#b", "a b", "%3F", "\u00e9"):
        encoded = remote._segment(value)
        assert "/" not in encoded and "?" not in encoded and "#" not in encoded
    for value in ("", ".", ".."):  # a URL resolves these away: another path
        with pytest.raises(InvalidArgument):
            remote._segment(value)


@pytest.mark.parametrize("path", ["/names-nul/a%00b", "/names-nul?prefix=a%00", "/names-nul?list-type=2&start-after=%01",
                                  "/names-nul?delimiter=%1F"])
def test_a_key_or_prefix_holding_a_control_character_is_400_and_listings_stay_well_formed(gateway, path) -> None:
    s3 = gateway.client()
    s3.create_bucket(Bucket="names-nul")
    s3.put_object(Bucket="names-nul", Key="a\nb", Body=b"newlines are fine")  # XML carries LF
    status, body = _raw(gateway, "PUT" if "?" not in path else "GET", path)
    assert status == 400 and b"<Code>InvalidArgument</Code>" in body and b"U+00" in body, (status, body)
    listed = s3.list_objects_v2(Bucket="names-nul")  # parsed by botocore: well-formed
    assert [o["Key"] for o in listed["Contents"]] == ["a\nb"]


def test_a_name_with_a_final_line_break_is_neither_a_bucket_name_nor_a_user_name() -> None:
    """A pattern's `$` matches before a final newline: `victimb\n` passed for a bucket and `ana\n` for a user."""
    for check, name in ((names.check_bucket, "victimb\n"), (names.check_user, "ana\n")):
        with pytest.raises((InvalidArgument, InvalidBucketName)):
            check(name)
    assert names.check_bucket("victimb") == "victimb" and names.check_user("ana") == "ana"


def _signed_as_sent(gateway, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A request signed as an SDK signs it, over the path and query as sent (botocore's signer), not as decoded."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=gateway.front.url + path, data=b"",
                         headers={"Host": f"127.0.0.1:{gateway.front.port}", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
                                  **headers})
    S3SigV4Auth(Credentials(gateway.key["access_key"], gateway.key["secret_key"]), "s3", "us-east-1").add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in request.headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("method, path, headers", [
    ("PUT", "/names-utf8/caf%E9", {}),  # a Latin-1 file name, encoded byte by byte
    ("GET", "/names-utf8/%C0%AE%C0%AE", {}),  # an overlong "..", which UTF-8 forbids
    ("GET", "/names-utf8?list-type=2&prefix=caf%E9", {}),
    ("PUT", "/names-utf8/copy", {"x-amz-copy-source": "names-utf8/caf%E9"}),
    ("PUT", "/names-utf8/copy", {"x-amz-copy-source": "names-utf8/caf%FF"})])
def test_a_name_that_is_not_utf8_once_decoded_is_invalid_uri_and_never_another_key(gateway, method, path,
                                                                                  headers) -> None:
    """Its bytes are not read as U+FFFD, which made `caf%E9` and `caf%FF` one key (a copy from either copied the object
    named with U+FFFD) and refused an SDK's request as SignatureDoesNotMatch, its signature made over what it sent."""
    s3 = gateway.client()
    s3.create_bucket(Bucket="names-utf8")
    s3.put_object(Bucket="names-utf8", Key="caf\ufffd", Body=b"another key")
    status, body = _signed_as_sent(gateway, method, path, headers)
    assert status == 400 and b"<Code>InvalidURI</Code>" in body and b"not UTF-8" in body, (status, body)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="names-utf8")["Contents"]] == ["caf\ufffd"]


@pytest.mark.parametrize("source", ["/./k1", "/../k1", "%2E%2E/k1", "/./k1?versionId=v", "/../k1?versionId=v"])
def test_a_copy_source_whose_bucket_is_a_dot_segment_is_invalid_bucket_name_and_reaches_no_other_path(gateway,
                                                                                                      source) -> None:
    """Sent as it was, the node's API resolved it against the path before it: `.` asked of a bucket named `object`,
    `..` of a path of the node's API that is no bucket's, whose 404 the client was told."""
    s3 = gateway.client()
    s3.create_bucket(Bucket="names-dots")
    s3.put_object(Bucket="names-dots", Key="k1", Body=b"k1")
    path = "/names-dots/copy"
    headers = sign_headers("PUT", gateway.front.url + path, gateway.key, {"Content-Length": "0",
                                                                          "x-amz-copy-source": source})
    conn = http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=30)
    try:
        conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        status, body = response.status, response.read()
    finally:
        conn.close()
    assert status == 400 and b"<Code>InvalidBucketName</Code>" in body and b"/v1/" not in body, (status, body)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="names-dots")["Contents"]] == ["k1"]


def test_a_name_past_any_users_or_buckets_is_quoted_back_cut() -> None:
    """A 5,000-character user or bucket name, or a list where a name was wanted, is refused in one short line."""
    for refused, given, error in ((names.check_user, "u" * 5000, InvalidArgument),
                                  (names.check_user, ["u"] * 5000, InvalidArgument),
                                  (names.check_bucket, "b" * 5000, InvalidBucketName)):
        with pytest.raises(error) as caught:
            refused(given)
        assert len(caught.value.message) < 200 and "…" in caught.value.message, caught.value.message[:300]
