"""What S3 tools expect of a front, each as S3 answers it: the routing table walked (every subresource and
header the front does not do is 501 or 400, never another operation), SSE, stored headers, non-ASCII
metadata, conditional reads, copies and writes, repeated Completes, self-copies, part numbers, bucket re-creation,
Expect: 100-continue, listing echoes and ListBuckets pages.  boto3 and signed raw requests against a real
node and a real `xsc s3 serve`, and against a node's own S3 listener."""

from __future__ import annotations

import email.header
import hashlib
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import code_of, store_files  # noqa: E402
from xsc.s3.core import routing  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")


@pytest.fixture(scope="module")
def gateway(both_gateways):
    """Each test once through `xsc s3 serve`, once through the node's own S3 listener."""
    return both_gateways


def signed(gateway, method: str, path: str, body: bytes = b"", headers: dict | None = None,
           key: dict | None = None) -> tuple[int, dict, bytes]:
    """A request signed by botocore, sent over a plain socket (any method, any header): status, headers, body."""
    import urllib.error
    import urllib.request

    key = key or gateway.key
    request = AWSRequest(method=method, url=gateway.front.url + path, data=body, headers=headers or {})
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(key["access_key"], key["secret_key"]), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(prepared.url, data=body or None, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(raw) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _caps(gateway) -> set[str]:
    return {f["capability"] for f in store_files(gateway.node)}


# --- the routing table -----------------------------------------------------------
def test_every_subresource_the_front_does_not_do_is_501_or_400_never_another_operation(gateway, s3, bucket) -> None:
    status, _, body = signed(gateway, "PUT", "/c-no-such-bucket?versioning", b"<VersioningConfiguration/>")
    assert (status, b"<Code>NotImplemented</Code>" in body) == (501, True)
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket="c-no-such-bucket")  # PUT ?versioning did not create it
    assert code_of(info)[1] == 404
    s3.put_object(Bucket=bucket, Key="k", Body=b"the object")
    walked = 0
    for sub in sorted(routing.SUBRESOURCES):
        for method in METHODS:
            for target, path in (("bucket", f"/{bucket}"), ("object", f"/{bucket}/k")):
                if (method, target, frozenset({sub}), False) in routing.TABLE:
                    continue
                status, _, body = signed(gateway, method, f"{path}?{sub}")
                assert status in (400, 501), (method, path, sub, status, body)
                assert method == "HEAD" or b"<Error>" in body
                walked += 1
    assert walked > 300
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"the object"  # nothing acted on it
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    status, _, body = signed(gateway, "PUT", f"/{bucket}/k?uploadId=abc", b"x")  # UploadPart without partNumber
    assert status == 400
    status, _, body = signed(gateway, "PUT", f"/{bucket}/k2?partNumber=1&uploadId=abc", headers={
        "x-amz-copy-source": f"/{bucket}/k"})  # UploadPartCopy, to an upload that is not there
    assert status == 404 and b"<Code>NoSuchUpload</Code>" in body


def test_every_header_the_front_does_not_do_is_501_and_nothing_is_stored(gateway, s3, bucket) -> None:
    for name in routing.NOT_IMPLEMENTED_HEADERS:
        status, _, body = signed(gateway, "PUT", f"/{bucket}/h", b"x", headers={name: "x"})
        assert status == 501 and b"<Code>NotImplemented</Code>" in body, (name, status, body)
    for name, value in (("x-amz-acl", "public-read"), ("x-amz-storage-class", "GLACIER"),
                        ("x-amz-tagging-directive", "REPLACE"), ("If-None-Match", '"an-etag"'),
                        ("If-Match", "*")):
        status, _, body = signed(gateway, "PUT", f"/{bucket}/h", b"x", headers={name: value})
        assert status == 501, (name, status, body)
    status, _, body = signed(gateway, "PUT", f"/{bucket}/h", b"x", headers={"x-amz-metadata-directive": "MOVE"})
    assert status == 400
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    for name, value in (("x-amz-acl", "private"), ("x-amz-storage-class", "STANDARD")):  # true of every object
        status, _, body = signed(gateway, "PUT", f"/{bucket}/h", b"x", headers={name: value})
        assert status == 200, (name, body)


# --- server-side encryption ------------------------------------------------------
def test_sse_s3_is_echoed_and_sse_c_and_kms_are_not_implemented(gateway, s3, bucket) -> None:
    put = s3.put_object(Bucket=bucket, Key="sse", Body=b"secret", ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    copied = s3.copy_object(Bucket=bucket, Key="sse2", CopySource={"Bucket": bucket, "Key": "sse"},
                            ServerSideEncryption="AES256")
    assert copied["ServerSideEncryption"] == "AES256"
    ssec = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key": "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
            "x-amz-server-side-encryption-customer-key-MD5": "0Pv3eQO7sVnUkxsoCJnVPw=="}
    status, _, body = signed(gateway, "PUT", f"/{bucket}/ssec", b"data", headers=ssec)
    assert status == 501 and b"<Code>NotImplemented</Code>" in body
    status, _, body = signed(gateway, "GET", f"/{bucket}/sse", headers=ssec)
    assert status == 501  # a GET with a customer key never returns the data as if it were SSE-C
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="kms", Body=b"x", ServerSideEncryption="aws:kms")
    assert code_of(info) == ("NotImplemented", 501)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="kms", Body=b"x", ServerSideEncryption="DES")
    assert code_of(info) == ("InvalidArgument", 400)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["sse", "sse2"]


# --- stored headers and metadata -------------------------------------------------
STORED = {"CacheControl": "max-age=3600", "ContentDisposition": 'attachment; filename="a.txt"',
          "ContentEncoding": "gzip", "ContentLanguage": "de-CH", "Expires": datetime(2030, 1, 2, 3, 4, 5,
                                                                                      tzinfo=timezone.utc)}


def _stored_of(answer: dict) -> dict:
    return {k: answer.get(k) for k in STORED}


def test_cache_control_expires_and_content_headers_are_stored_and_returned(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="page", Body=b"<html/>", **STORED)
    got = s3.get_object(Bucket=bucket, Key="page")
    assert _stored_of(got) == STORED and got["Body"].read() == b"<html/>"  # the bytes as sent, never decoded
    assert _stored_of(s3.head_object(Bucket=bucket, Key="page")) == STORED
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "page"})
    assert _stored_of(s3.head_object(Bucket=bucket, Key="copied")) == STORED  # COPY keeps them
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource={"Bucket": bucket, "Key": "page"},
                   MetadataDirective="REPLACE", CacheControl="no-store")
    head = s3.head_object(Bucket=bucket, Key="replaced")
    assert head["CacheControl"] == "no-store" and "ContentLanguage" not in head
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp", **STORED)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=b"part")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert _stored_of(s3.head_object(Bucket=bucket, Key="mp")) == STORED


def test_non_ascii_metadata_comes_back_rfc_2047_encoded(s3, bucket) -> None:
    def add_header(request, **kwargs):
        request.headers["x-amz-meta-name"] = "café ünïcode"  # http.client sends it as Latin-1, as boto3 does

    s3.meta.events.register_first("before-sign.s3.PutObject", add_header)
    try:
        s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"plain": "ascii"})
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", add_header)
    metadata = s3.head_object(Bucket=bucket, Key="meta")["Metadata"]
    assert metadata["plain"] == "ascii"
    encoded = metadata["name"]
    assert encoded.startswith("=?UTF-8?") and encoded.isascii()
    assert str(email.header.make_header(email.header.decode_header(encoded))) == "café ünïcode"
    assert s3.get_object(Bucket=bucket, Key="meta")["Metadata"]["name"] == encoded


# --- conditional requests --------------------------------------------------------
def test_if_modified_since_and_if_unmodified_since_on_get_and_head(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    before, after = modified - timedelta(hours=1), modified + timedelta(seconds=1)
    for op in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as info:
            op(Bucket=bucket, Key="c", IfModifiedSince=after)
        assert code_of(info)[1] == 304
        assert op(Bucket=bucket, Key="c", IfModifiedSince=before)["ResponseMetadata"]["HTTPStatusCode"] == 200
        with pytest.raises(ClientError) as info:
            op(Bucket=bucket, Key="c", IfUnmodifiedSince=before)
        assert code_of(info)[1] == 412
        assert op(Bucket=bucket, Key="c", IfUnmodifiedSince=after)["ResponseMetadata"]["HTTPStatusCode"] == 200
    etag = s3.head_object(Bucket=bucket, Key="c")["ETag"]
    # If-Match that holds wins over If-Unmodified-Since that does not (S3's rule), and so does If-None-Match
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=before)["Body"].read()
    assert s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"other"', IfModifiedSince=after)["Body"].read()


def test_copy_source_conditions(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    head = s3.head_object(Bucket=bucket, Key="src")
    etag, modified = head["ETag"], head["LastModified"]
    before, after = modified - timedelta(hours=1), modified + timedelta(seconds=1)
    source = {"Bucket": bucket, "Key": "src"}
    for failing in ({"CopySourceIfMatch": '"nope"'}, {"CopySourceIfNoneMatch": etag},
                    {"CopySourceIfModifiedSince": after}, {"CopySourceIfUnmodifiedSince": before}):
        with pytest.raises(ClientError) as info:
            s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, **failing)
        assert code_of(info) == ("PreconditionFailed", 412), failing
    assert s3.list_objects_v2(Bucket=bucket, Prefix="dst").get("Contents", []) == []
    for holding in ({"CopySourceIfMatch": etag}, {"CopySourceIfNoneMatch": '"nope"'},
                    {"CopySourceIfModifiedSince": before}, {"CopySourceIfUnmodifiedSince": after},
                    {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": before}):
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, **holding)
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"source"


# --- semantics -------------------------------------------------------------------
@pytest.mark.parametrize("size", [12, 2 * 1024 * 1024])  # a small object (one call of the node's) and a streamed one
def test_a_conditional_put_is_written_only_while_its_condition_holds(gateway, s3, bucket, size) -> None:
    first, second = b"1" * size, b"2" * size
    etag = s3.put_object(Bucket=bucket, Key="once", Body=first, IfNoneMatch="*")["ETag"]
    before = _caps(gateway)
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=bucket, Key="once", Body=second, **condition)
        assert code_of(info) == ("PreconditionFailed", 412), condition
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="never", Body=second, IfMatch=etag)
    assert code_of(info) == ("NoSuchKey", 404)
    assert _caps(gateway) == before
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == first
    s3.put_object(Bucket=bucket, Key="once", Body=second, IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == second
    status, _, _ = signed(gateway, "PUT", f"/{bucket}/copy", headers={"x-amz-copy-source": f"/{bucket}/once",
                                                                       "If-None-Match": "*"})
    assert status == 501  # not done for the other writes: said so, not ignored


def test_conditional_puts_at_once_leave_one_object_whole(gateway, s3, bucket) -> None:
    """PutObjects of one new key with If-None-Match: * at once: one is written, each other is refused (412 if the
    winner was there as it began, 409 ConditionalRequestConflict if it came first while its body was on its way),
    and the object is the winner's bytes, whole; a refused one's file is gone from the store by its answer."""
    before = _caps(gateway)
    bodies = [bytes([65 + n]) * (2 * 1024 * 1024) for n in range(4)]

    def put(body: bytes) -> str:
        try:
            return s3.put_object(Bucket=bucket, Key="race", Body=body, IfNoneMatch="*")["ETag"]
        except ClientError as err:
            return err.response["Error"]["Code"]

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(put, bodies))
    won = [n for n, answer in enumerate(answers) if answer.startswith('"')]
    assert len(won) == 1, answers
    assert set(answers) - {answers[won[0]]} <= {"PreconditionFailed", "ConditionalRequestConflict"}, answers
    assert s3.get_object(Bucket=bucket, Key="race")["Body"].read() == bodies[won[0]]
    assert len(_caps(gateway) - before) == 1


def test_a_conditional_complete_makes_the_object_only_while_its_condition_holds(s3, bucket) -> None:
    current = s3.put_object(Bucket=bucket, Key="there", Body=b"there")["ETag"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="there")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="there", UploadId=uid, PartNumber=1, Body=b"new")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": part}]}
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket=bucket, Key="there", UploadId=uid, MultipartUpload=parts, **condition)
        assert code_of(info) == ("PreconditionFailed", 412), condition
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="there", UploadId=uid)["Parts"]] == [1]
    assert s3.get_object(Bucket=bucket, Key="there")["Body"].read() == b"there"
    s3.complete_multipart_upload(Bucket=bucket, Key="there", UploadId=uid, MultipartUpload=parts, IfMatch=current)
    assert s3.get_object(Bucket=bucket, Key="there")["Body"].read() == b"new"
    uid = s3.create_multipart_upload(Bucket=bucket, Key="fresh")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="fresh", UploadId=uid, PartNumber=1, Body=b"fresh")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="fresh", UploadId=uid, IfNoneMatch="*",
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
    assert s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b"fresh"


def test_a_second_complete_of_a_finished_upload_answers_the_same(s3, bucket) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="twice")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="twice", UploadId=uid, PartNumber=1, Body=b"once")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    first = s3.complete_multipart_upload(Bucket=bucket, Key="twice", UploadId=uid, MultipartUpload=parts)
    second = s3.complete_multipart_upload(Bucket=bucket, Key="twice", UploadId=uid, MultipartUpload=parts)
    assert second["ResponseMetadata"]["HTTPStatusCode"] == 200 and second["ETag"] == first["ETag"]
    assert s3.get_object(Bucket=bucket, Key="twice")["Body"].read() == b"once"
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=bucket, Key="other", UploadId=uid, MultipartUpload=parts)
    assert code_of(info) == ("NoSuchUpload", 404)


def test_a_complete_listing_more_parts_than_an_upload_may_have_is_malformed_xml(s3, bucket) -> None:
    """Not the node's own refusal, which told an S3 client to send JSON; the upload stays, to be completed."""
    uid = s3.create_multipart_upload(Bucket=bucket, Key="many")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="many", UploadId=uid, PartNumber=1, Body=b"one")["ETag"]
    listed = {"Parts": [{"PartNumber": n, "ETag": etag} for n in range(1, 10_002)]}
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=bucket, Key="many", UploadId=uid, MultipartUpload=listed)
    assert code_of(info) == ("MalformedXML", 400)
    assert info.value.response["Error"]["Message"] == "a CompleteMultipartUpload lists 1 to 10000 parts, not 10001"
    s3.complete_multipart_upload(Bucket=bucket, Key="many", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key="many")["Body"].read() == b"one"


def test_copy_onto_itself_needs_replace(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="self", Body=b"me", Metadata={"a": "1"})
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"})
    assert code_of(info) == ("InvalidRequest", 400)
    s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"},
                   MetadataDirective="REPLACE", Metadata={"a": "2"})
    got = s3.get_object(Bucket=bucket, Key="self")
    assert got["Metadata"] == {"a": "2"} and got["Body"].read() == b"me"


def test_version_null_is_the_object_and_other_versions_are_refused_as_s3_refuses_them(gateway, s3, bucket) -> None:
    """A bucket never versioned holds one version of each object, null: GetObject, HeadObject, DeleteObject, a copy's
    source and DeleteObjects' VersionId take `versionId=null` as the object.  Another id is a version there is none
    of: an id of S3's shape is 404 NoSuchVersion (its Key and VersionId in the error), another 400 InvalidArgument
    (ArgumentName versionId); a delete of a version there is none of deletes nothing and succeeds, as S3's does."""
    issued = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH"
    for key in ("k", "gone"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"the object")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"the object"
    assert s3.head_object(Bucket=bucket, Key="k", VersionId="null")["ContentLength"] == 10
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k", "VersionId": "null"})
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"the object"
    uid = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    part = s3.upload_part_copy(Bucket=bucket, Key="parts", UploadId=uid, PartNumber=1,
                               CopySource={"Bucket": bucket, "Key": "k", "VersionId": "null"})["CopyPartResult"]
    s3.complete_multipart_upload(Bucket=bucket, Key="parts", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="parts")["Body"].read() == b"the object"
    status, _, body = signed(gateway, "GET", f"/{bucket}/k?versionId={issued}")
    assert status == 404 and b"<Code>NoSuchVersion</Code>" in body
    assert b"<Key>k</Key>" in body and f"<VersionId>{issued}</VersionId>".encode() in body
    for version in ("1", "", "a%2Fb"):
        status, _, body = signed(gateway, "GET", f"/{bucket}/k?versionId={version}")
        assert (status, b"<Code>InvalidArgument</Code>" in body, b"<ArgumentName>versionId</ArgumentName>" in body) \
            == (400, True, True), version
    assert signed(gateway, "HEAD", f"/{bucket}/k?versionId={issued}")[0] == 404
    for version, code in ((issued, ("NoSuchVersion", 404)), ("1", ("InvalidArgument", 400))):
        with pytest.raises(ClientError) as info:
            s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k", "VersionId": version})
        assert code_of(info) == code
    with pytest.raises(ClientError) as info:
        s3.delete_object(Bucket=bucket, Key="k", VersionId="1")
    assert code_of(info) == ("InvalidArgument", 400)
    assert s3.delete_object(Bucket=bucket, Key="k", VersionId=issued)["VersionId"] == issued
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"the object"  # no version of it was deleted
    assert s3.delete_object(Bucket=bucket, Key="gone", VersionId="null")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == ["copy", "k", "parts"]


def test_delete_objects_deletes_an_object_named_with_version_null_and_no_version_there_is_none_of(s3, bucket) -> None:
    """DeleteObjects' `VersionId`: null deletes the object; an id of S3's shape names a version there is none of, so
    nothing is deleted and the key is answered Deleted with its VersionId, as S3 answers it; a malformed id is that
    key's InvalidArgument <Error>.  The object itself stays unless null, or no version, names it."""
    issued = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH"
    for key in ("k", "gone"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"the object")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "k", "VersionId": issued}, {"Key": "k", "VersionId": "1"}, {"Key": "gone", "VersionId": "null"}]})
    assert [(d["Key"], d.get("VersionId")) for d in answer["Deleted"]] == [("k", issued), ("gone", "null")]
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in answer["Errors"]] == [("k", "1", "InvalidArgument")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"the object"


def test_part_number_past_the_last_part_is_invalid_part_number(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="one", Body=b"single part")
    assert s3.get_object(Bucket=bucket, Key="one", PartNumber=1)["Body"].read() == b"single part"
    for op in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as info:
            op(Bucket=bucket, Key="one", PartNumber=2)
        assert code_of(info)[1] == 416
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="one", PartNumber=2)
    assert code_of(info) == ("InvalidPartNumber", 416)


def test_list_multipart_uploads_rolls_keys_up_by_delimiter_and_pages_through_common_prefixes(s3, bucket) -> None:
    """ListMultipartUploads with a delimiter: the keys holding it past the prefix rolled up into CommonPrefixes (a
    common prefix counting as one against MaxUploads), as ListObjects rolls them up; a page that ends at a common
    prefix goes on past it, and boto3's paginator lists each upload and each prefix once."""
    keys = ["a/1", "a/2", "b/x/1", "b/y", "c", "c", "d/"]
    ids = [s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in keys]
    try:
        whole = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
        assert whole["Delimiter"] == "/" and whole["IsTruncated"] is False
        assert [u["UploadId"] for u in whole["Uploads"]] == ids[4:6]
        assert [p["Prefix"] for p in whole["CommonPrefixes"]] == ["a/", "b/", "d/"]
        under = s3.list_multipart_uploads(Bucket=bucket, Prefix="b/", Delimiter="/")
        assert [u["Key"] for u in under["Uploads"]] == ["b/y"]
        assert [p["Prefix"] for p in under["CommonPrefixes"]] == ["b/x/"]
        first = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/", MaxUploads=2)
        assert [p["Prefix"] for p in first["CommonPrefixes"]] == ["a/", "b/"] and "Uploads" not in first
        assert first["IsTruncated"] is True and first["NextKeyMarker"] == "b/"
        rest = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/", KeyMarker="b/")
        assert [u["Key"] for u in rest["Uploads"]] == ["c", "c"]
        assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["d/"]
        uploads, prefixes = [], []
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Delimiter="/",
                                                                        PaginationConfig={"PageSize": 1}):
            assert len(page.get("Uploads", [])) + len(page.get("CommonPrefixes", [])) <= 1
            uploads += [u["UploadId"] for u in page.get("Uploads", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert (uploads, prefixes) == (ids[4:6], ["a/", "b/", "d/"])
        assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == ids
    finally:
        for k, upload in zip(keys, ids):
            s3.abort_multipart_upload(Bucket=bucket, Key=k, UploadId=upload)


def test_list_multipart_uploads_pages_through_more_uploads_than_a_page_holds_each_once(s3, bucket) -> None:
    """More uploads than MaxUploads, several of one key: boto3's paginator lists each once, in key order and a key's in
    the order they began, each page at most MaxUploads long and truncated until the last; a page goes on after the
    marker's own place among its key's uploads, and past every upload of a key marker named without an id."""
    keys = ["m", "k", "m", "l/1", "k", "m", "n", "k"]
    ids = [s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in keys]
    try:
        expected = [upload for _, upload in sorted(zip(keys, ids), key=lambda item: item[0])]
        pages = list(s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket,
                                                                          PaginationConfig={"PageSize": 3}))
        assert [len(page.get("Uploads", [])) for page in pages] == [3, 3, 2]
        assert [page["IsTruncated"] for page in pages] == [True, True, False]
        assert [u["UploadId"] for page in pages for u in page.get("Uploads", [])] == expected
        assert (pages[0]["NextKeyMarker"], pages[0]["NextUploadIdMarker"]) == ("k", expected[2])
        assert (pages[1]["NextKeyMarker"], pages[1]["NextUploadIdMarker"]) == ("m", expected[5])
        middle = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="m", UploadIdMarker=expected[4], MaxUploads=1)
        assert [u["UploadId"] for u in middle["Uploads"]] == [expected[5]] and middle["IsTruncated"] is True
        past = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="m")
        assert [u["Key"] for u in past["Uploads"]] == ["n"] and past["IsTruncated"] is False
    finally:
        for k, upload in zip(keys, ids):
            s3.abort_multipart_upload(Bucket=bucket, Key=k, UploadId=upload)


def test_recreating_ones_own_bucket_answers_200(s3) -> None:
    s3.create_bucket(Bucket="c-again")
    assert s3.create_bucket(Bucket="c-again")["ResponseMetadata"]["HTTPStatusCode"] == 200


def _answer_to_a_put_expecting(gateway, bucket: str, expectation: str) -> bytes:
    """What the front sends back to an unsigned PUT's head, its body held back until the front answers."""
    where = urlsplit(gateway.front.url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(f"PUT /{bucket}/unsigned HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Length: 1000000\r\n"
                     f"Expect: {expectation}\r\n\r\n".encode())
        answer = b""
        while not _whole(answer) and (more := sock.recv(65536)):
            answer += more
    return answer


def _whole(answer: bytes) -> bool:
    """Whether `answer` holds a response's head and as much body as its Content-Length says.  (The front closes
    the connection after such an answer only once it has waited a while for the body it refused.)"""
    head, blank, body = answer.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return bool(blank) and len(lengths) == 1 and len(body) >= int(lengths[0])


def test_an_unsigned_put_with_expect_100_continue_is_refused_before_continue(gateway, bucket) -> None:
    answer = _answer_to_a_put_expecting(gateway, bucket, "100-continue")
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]


def test_an_expectation_other_than_100_continue_is_417_with_an_error_document(gateway, bucket) -> None:
    answer = _answer_to_a_put_expecting(gateway, bucket, "something-else")
    assert answer.startswith(b"HTTP/1.1 417"), answer[:300]
    assert b"<Code>ExpectationFailed</Code>" in answer and b"100-continue" in answer


def test_a_signed_put_with_expect_100_continue_is_told_to_continue(s3, bucket) -> None:
    # botocore sends Expect: 100-continue with bodies of 1 MiB and more
    s3.put_object(Bucket=bucket, Key="big", Body=b"e" * (2 * 1024 * 1024))
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == 2 * 1024 * 1024


def test_a_newline_prefix_is_echoed_and_an_empty_continuation_token_refused(s3, bucket) -> None:
    """An empty continuation token is refused with a bad token's error, as AWS and MinIO refuse it."""
    s3.put_object(Bucket=bucket, Key="\nnewline", Body=b"x")
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    v2 = s3.list_objects_v2(Bucket=bucket, Prefix="\n")
    assert v2["Prefix"] == "\n" and [o["Key"] for o in v2["Contents"]] == ["\nnewline"]
    v1 = s3.list_objects(Bucket=bucket, Prefix="\n")
    assert v1["Prefix"] == "\n" and [o["Key"] for o in v1["Contents"]] == ["\nnewline"]
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="")
    assert code_of(info) == ("InvalidArgument", 400)
    error = info.value.response["Error"]
    assert error["Message"].startswith("The continuation token provided is incorrect"), error
    assert error["ArgumentName"] == "continuation-token", error


def test_an_unknown_encoding_type_is_invalid_argument_and_max_keys_past_1000_is_answered_as_1000(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="a b", Body=b"x")
    for listed in (s3.list_objects_v2, s3.list_objects):
        with pytest.raises(ClientError) as info:
            listed(Bucket=bucket, EncodingType="base64")
        assert code_of(info) == ("InvalidArgument", 400)
        error = info.value.response["Error"]
        assert (error["ArgumentName"], error["ArgumentValue"]) == ("encoding-type", "base64")
        assert error["Message"].startswith("Invalid Encoding Method specified in Request")
        page = listed(Bucket=bucket, MaxKeys=5000)
        assert page["MaxKeys"] == 1000 and [o["Key"] for o in page["Contents"]] == ["a b"]
        assert listed(Bucket=bucket, MaxKeys=7)["MaxKeys"] == 7
    assert s3.list_objects_v2(Bucket=bucket, EncodingType="url")["Contents"][0]["Key"] == "a%20b"  # asked: left so


def test_multipart_listings_percent_encode_their_names_when_asked_as_object_listings_do(gateway, s3, bucket) -> None:
    """ListMultipartUploads and ListParts with encoding-type=url: keys, the prefix and the key markers percent-encoded,
    as S3 answers (boto3 decodes none of these: what it was asked for is left to its caller); another encoding is
    InvalidArgument, as for ListObjects."""
    from urllib.parse import quote

    key = "up load/\u00e9+&"
    encoded = "up%20load/%C3%A9%2B%26"
    ids = [s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in (key, key + "2")]
    try:
        page = s3.list_multipart_uploads(Bucket=bucket, EncodingType="url", Prefix="up load/", MaxUploads=1)
        assert (page["EncodingType"], page["Prefix"], page["NextKeyMarker"]) == ("url", "up%20load/", encoded), page
        assert [u["Key"] for u in page["Uploads"]] == [encoded]
        rest = s3.list_multipart_uploads(Bucket=bucket, EncodingType="url", KeyMarker=key, UploadIdMarker=ids[0])
        assert rest["KeyMarker"] == encoded and [u["Key"] for u in rest["Uploads"]] == [encoded + "2"], rest
        plain = s3.list_multipart_uploads(Bucket=bucket, Prefix="up load/")
        assert [u["Key"] for u in plain["Uploads"]] == [key, key + "2"] and "EncodingType" not in plain
        path = f"/{bucket}/{quote(key, safe='/')}?uploadId={ids[0]}"
        status, _, body = signed(gateway, "GET", path + "&encoding-type=url")
        assert status == 200 and b"<EncodingType>url</EncodingType>" in body, body
        assert f"<Key>{encoded}</Key>".encode() in body, body
        status, _, body = signed(gateway, "GET", path)
        assert status == 200 and b"EncodingType" not in body, body
        assert f"<Key>{key.replace('&', '&amp;')}</Key>".encode() in body, body
        for listing in (path + "&encoding-type=base64", f"/{bucket}?uploads&encoding-type=base64"):
            status, _, body = signed(gateway, "GET", listing)
            assert status == 400 and b"<Code>InvalidArgument</Code>" in body, body
    finally:
        for k, upload in zip((key, key + "2"), ids):
            s3.abort_multipart_upload(Bucket=bucket, Key=k, UploadId=upload)


def _client_for(gateway, region: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=gateway.front.url, aws_access_key_id=gateway.key["access_key"],
                        aws_secret_access_key=gateway.key["secret_key"], region_name=region,
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


def test_a_signature_for_another_region_is_refused_naming_the_region_expected(gateway, s3, bucket) -> None:
    """As S3: 400 AuthorizationHeaderMalformed (a presigned URL: AuthorizationQueryParametersError) naming the region,
    also as <Region>, with which boto3 signs a bucket's requests again by itself; GetBucketLocation is answered
    whatever the region, since a client asks it to learn the region."""
    import urllib.error
    import urllib.request

    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    elsewhere = _client_for(gateway, "eu-west-1")
    with pytest.raises(ClientError) as info:
        elsewhere.list_buckets()
    assert code_of(info) == ("AuthorizationHeaderMalformed", 400)
    error = info.value.response["Error"]
    assert error["Region"] == "us-east-1"
    assert "the region 'eu-west-1' is wrong; expecting 'us-east-1'" in error["Message"], error
    assert "set the client's region to us-east-1" in error["Message"]
    url = elsewhere.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=600)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url)
    assert refused.value.code == 400
    assert b"<Code>AuthorizationQueryParametersError</Code>" in refused.value.read()
    assert elsewhere.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None  # us-east-1's, as S3 spells it
    assert elsewhere.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"  # botocore's redirect, to us-east-1
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


def test_list_buckets_pages(s3, gateway) -> None:
    for name in ("c-page-a", "c-page-b", "c-page-c"):
        s3.create_bucket(Bucket=name)
    seen, token = [], None
    while True:
        page = s3.list_buckets(MaxBuckets=1, Prefix="c-page-", **({"ContinuationToken": token} if token else {}))
        assert len(page["Buckets"]) <= 1 and page["Prefix"] == "c-page-"
        seen += [b["Name"] for b in page["Buckets"]]
        token = page.get("ContinuationToken")
        if not token:
            break
    assert seen == ["c-page-a", "c-page-b", "c-page-c"]
    status, _, body = signed(gateway, "GET", "/?max-buckets=0")
    assert status == 400 and b"<Code>InvalidArgument</Code>" in body


def test_an_empty_list_buckets_token_is_no_token_as_aws_takes_it(s3, gateway) -> None:
    """ListBuckets lists from its first bucket with `continuation-token=` empty, and gives the next page's token, as
    AWS answers it (its API model lets the token be 0 to 1024 characters); ListObjectsV2 refuses an empty one."""
    for name in ("c-empty-a", "c-empty-b"):
        s3.create_bucket(Bucket=name)
    first = s3.list_buckets(MaxBuckets=1, Prefix="c-empty-")
    page = s3.list_buckets(MaxBuckets=1, Prefix="c-empty-", ContinuationToken="")  # botocore sends it, empty
    assert [b["Name"] for b in page["Buckets"]] == ["c-empty-a"] and page["ContinuationToken"], page
    following = s3.list_buckets(MaxBuckets=1, Prefix="c-empty-", ContinuationToken=page["ContinuationToken"])
    assert [b["Name"] for b in following["Buckets"]] == ["c-empty-b"] and "ContinuationToken" not in following
    assert page["ContinuationToken"] == first["ContinuationToken"]  # the same first page, as without a token
    status, _, body = signed(gateway, "GET", "/?continuation-token=&max-buckets=1&prefix=c-empty-")
    assert status == 200 and b"<Name>c-empty-a</Name>" in body and b"<Name>c-empty-b</Name>" not in body, body


def test_a_request_aiohttp_cannot_parse_gets_an_s3_error_and_the_front_keeps_serving(gateway, s3, bucket) -> None:
    where = urlsplit(gateway.front.url)
    for request in (b"DELETE /b HTTP/1.1\r\nHost: f\r\nContent-Length: bL4(\r\n\r\n",
                    b"GET /b HTTP/1.1\r\nHost: f\r\nBad Name: 1\r\n\r\n"):
        with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):  # the front closes the connection after its answer
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and b"Content-Type: application/xml" in head, head
        assert b"<Code>BadRequest</Code>" in body and b"the request is not valid HTTP: " in body, body
    s3.put_object(Bucket=bucket, Key="after", Body=b"served")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"served"
