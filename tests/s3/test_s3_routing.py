"""The routing table and the stored headers, pure: every shape S3 has is one operation or a refusal."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from xsc.errors import S3Error
from xsc.s3.core import headers, routing


def status_of(method: str, bucket: str, key: str, query: dict, hdrs: dict | None = None) -> int | str:
    try:
        return routing.operation(method, bucket, key, query, CIMultiDict(hdrs or {}))
    except S3Error as err:
        return err.status


def test_the_table_names_an_operation_for_each_shape_and_refuses_every_other() -> None:
    assert status_of("PUT", "b", "", {"versioning": ""}) == 501  # never CreateBucket
    assert status_of("PUT", "b", "", {}) == "create_bucket"
    assert status_of("GET", "b", "", {"list-type": "2", "prefix": "a", "X-Amz-Signature": "s"}) == "list_objects"
    assert status_of("PUT", "b", "k", {}, {"x-amz-copy-source": "/b/j"}) == "copy_object"
    assert status_of("PUT", "b", "k", {"uploadId": "u", "partNumber": "1"}) == "upload_part"
    assert status_of("PUT", "b", "k", {"uploadId": "u"}) == 400
    assert status_of("PUT", "b", "k", {"uploadId": "u", "partNumber": "1"}, {"x-amz-copy-source": "/b/j"}) == \
        "upload_part_copy"
    assert status_of("PUT", "b", "k", {}, {"x-amz-copy-source": "/b/j", "x-amz-copy-source-range": "bytes=0-1"}) == 501
    assert status_of("PATCH", "b", "k", {}) == 501
    for method, found in (("GET", "get_object"), ("HEAD", "get_object"), ("DELETE", "delete_object")):
        assert status_of(method, "b", "k", {"versionId": "null"}) == found  # its version judged once its access is
    assert status_of("GET", "b", "k", {"versionId": "null", "tagging": ""}) == 501
    assert status_of("PUT", "", "", {}) == 501
    for sub in routing.SUBRESOURCES:
        for method in ("GET", "HEAD", "PUT", "POST", "DELETE"):
            for bucket, key in (("", ""), ("b", ""), ("b", "k")):
                found = status_of(method, bucket, key, {sub: ""})
                shape = (method, routing.target_of(bucket, key), frozenset({sub}), False)
                expected = (routing.TABLE[shape], 400) if shape in routing.TABLE else (400, 501)
                assert found in expected, shape  # 400: UploadPart without its partNumber


def test_an_operation_the_front_does_not_do_is_named_in_plain_words() -> None:
    for args, said in ((("GET", "b", "k", {"tagging": ""}), "GET of an object with ?tagging"),
                       (("GET", "b", "", {"acl": ""}), "GET of a bucket with ?acl"),
                       (("PUT", "b", "k", {"tagging": ""}, {"x-amz-copy-source": "/b/j"}),
                        "PUT of an object with ?tagging and x-amz-copy-source"),
                       (("PATCH", "", "", {}), "PATCH of a service")):
        with pytest.raises(S3Error) as refused:
            routing.operation(*args[:4], CIMultiDict(args[4] if len(args) > 4 else {}))
        assert refused.value.message == f"{said} is not an operation this gateway implements"


def test_headers_the_front_does_not_do_are_refused() -> None:
    assert status_of("PUT", "b", "k", {}, {"x-amz-server-side-encryption": "AES256"}) == "put_object"
    assert status_of("PUT", "b", "k", {}, {"x-amz-server-side-encryption": "aws:kms"}) == 501
    assert status_of("PUT", "b", "k", {}, {"x-amz-server-side-encryption": "nope"}) == 400
    assert status_of("GET", "b", "k", {}, {"x-amz-server-side-encryption": "AES256"}) == 400
    for name in routing.NOT_IMPLEMENTED_HEADERS:
        assert status_of("GET", "b", "k", {}, {name: "v"}) == 501, name
    assert status_of("PUT", "b", "k", {}, {"x-amz-acl": "private"}) == "put_object"
    assert status_of("PUT", "b", "k", {}, {"x-amz-acl": "public-read"}) == 501


def test_stored_headers_drop_aws_chunked_and_go_back_ascii() -> None:
    kept = headers.stored(CIMultiDict({"Content-Encoding": "aws-chunked,gzip", "Cache-Control": "no-cache",
                                       "Content-Type": "text/plain"}))
    assert kept == {"Content-Encoding": "gzip", "Cache-Control": "no-cache"}
    assert headers.stored(CIMultiDict({"Content-Encoding": "aws-chunked"})) == {}
    assert headers.text_of("caf\udce9") == "café"  # a Latin-1 byte aiohttp kept as a surrogate
    assert headers.wire("plain") == "plain" and headers.wire("\x04x") == "=?UTF-8?Q?=04x?="
    with pytest.raises(S3Error):
        headers.stored(CIMultiDict({"Cache-Control": "x" * 9000}))


def test_read_and_copy_conditions() -> None:
    h = CIMultiDict
    date = "Sun, 01 Jan 2023 00:00:00 GMT"  # 1672531200
    assert headers.read_condition(h({"If-Modified-Since": date}), "e", 1672531200.5) == 304
    assert headers.read_condition(h({"If-Modified-Since": date}), "e", 1672531201) is None
    with pytest.raises(S3Error):
        headers.read_condition(h({"If-Unmodified-Since": date}), "e", 1672531201)
    assert headers.read_condition(h({"If-Match": '"e"', "If-Unmodified-Since": date}), "e", 1672531201) is None
    assert headers.read_condition(h({"If-Modified-Since": "not a date"}), "e", 1) is None
    with pytest.raises(S3Error):
        headers.copy_condition(h({"x-amz-copy-source-if-none-match": '"e"'}), "e", 1)
    headers.copy_condition(h({"x-amz-copy-source-if-match": '"e"', "x-amz-copy-source-if-unmodified-since": date}),
                           "e", 1672531201)
