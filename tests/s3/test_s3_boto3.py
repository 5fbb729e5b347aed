"""boto3 against a real node and a real `xsc s3 serve`, and against a node's own S3 listener: every operation,
ranges, multipart, listing, presigned URLs and every auth failure."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import SEGMENT, boto3_client, code_of, create_key, listing_model, store_files  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # real processes and tools: slow on a loaded machine
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(both_gateways):
    """Each test once through `xsc s3 serve`, once through the node's own S3 listener."""
    return both_gateways


def caps_of(gateway) -> set[str]:
    return {f["capability"] for f in store_files(gateway.node) if f["name"].startswith("s3:")}


# --- buckets ---------------------------------------------------------------------
def test_buckets_create_list_head_delete(s3) -> None:
    s3.create_bucket(Bucket="photos")
    assert "photos" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.head_bucket(Bucket="photos")["ResponseMetadata"]["HTTPStatusCode"] == 200
    s3.create_bucket(Bucket="photos")  # one's own bucket again: 200, as S3 answers in us-east-1
    s3.put_object(Bucket="photos", Key="a", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="photos")
    assert code_of(info) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="photos", Key="a")
    s3.delete_bucket(Bucket="photos")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket="photos")
    assert code_of(info)[1] == 404
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket="photos")
    assert code_of(info) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="Not_Valid")
    assert code_of(info) == ("InvalidBucketName", 400)
    s3.create_bucket(Bucket="located")
    assert s3.get_bucket_location(Bucket="located")["LocationConstraint"] is None


def test_list_buckets_gives_a_bucket_made_when_is_not_known_a_date_clients_parse(gateway, s3, tmp_path) -> None:
    """A bucket imported with no time (made at 0: an export of a record that kept none) is listed `created` null by
    the node, and ListBuckets still gives it a CreationDate boto3 parses: the epoch, as S3 gives every bucket one."""
    export = tmp_path / "untimed.json"
    export.write_text(json.dumps({"version": 1, "buckets": [{"name": "untimed", "created": 0, "objects": {}}]}))
    assert gateway.node.xsc("s3", "import-index", str(export)).returncode == 0
    listed = {b["Name"]: b["CreationDate"] for b in s3.list_buckets()["Buckets"]}
    assert listed["untimed"] == datetime(1970, 1, 1, tzinfo=timezone.utc), listed
    assert all(when > datetime(2000, 1, 1, tzinfo=timezone.utc) for name, when in listed.items() if name != "untimed")
    found = {b["name"]: b for b in json.loads(gateway.node.xsc("s3", "buckets", "--json").stdout)}
    assert found["untimed"]["created"] is None, found


# --- objects ---------------------------------------------------------------------
def test_put_get_head_delete(s3, bucket, gateway) -> None:
    data = os.urandom(3 * SEGMENT + 5)
    put = s3.put_object(Bucket=bucket, Key="dir/file.bin", Body=data, ContentType="image/png",
                        Metadata={"owner": "ana", "Kind": "photo"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/file.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/png" and got["Metadata"] == {"owner": "ana", "kind": "photo"}
    assert got["ContentLength"] == len(data) and got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="dir/file.bin")
    assert head["ContentLength"] == len(data) and head["ETag"] == put["ETag"]
    assert abs(head["LastModified"] - datetime.now(timezone.utc)) < timedelta(minutes=5)
    s3.delete_object(Bucket=bucket, Key="dir/file.bin")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="dir/file.bin")
    assert code_of(info) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="dir/file.bin")
    assert code_of(info)[1] == 404
    s3.delete_object(Bucket=bucket, Key="dir/file.bin")  # deleting what is gone is fine, as in S3
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"x")
    assert code_of(info) == ("NoSuchBucket", 404)


def test_empty_object_and_odd_keys(s3, bucket) -> None:
    for key in ("empty", "sp ace/é+ü%20=&?.txt", "a//b", "trailing/"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"" if key == "empty" else key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == (b"" if key == "empty" else key.encode())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == sorted(keys, key=str.encode) and "sp ace/é+ü%20=&?.txt" in keys


def test_overwrite_is_atomic_and_removes_the_old_file(s3, bucket, gateway) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"old" * 1000)
    before = caps_of(gateway)
    s3.put_object(Bucket=bucket, Key="k", Body=b"new" * 1000)
    after = caps_of(gateway)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new" * 1000
    assert len(before - after) == 1 and len(after - before) == 1  # the old file is gone from the store


def test_delete_objects(s3, bucket, gateway) -> None:
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"d/{i}", Body=b"%d" % i)
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"d/{i}"} for i in (0, 1, 2, 9)]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["d/0", "d/1", "d/2", "d/9"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d/3", "d/4"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d/3"}], "Quiet": True})
    assert "Deleted" not in quiet


def _requests_of(node, method: str) -> float:
    """How many requests of `method` the node has answered (its /metrics, every status)."""
    metrics = urllib.request.Request(node.url + "/metrics", headers={"Authorization": f"Bearer {node.token}"})
    with urllib.request.urlopen(metrics) as response:
        return sum(float(line.split()[-1]) for line in response.read().decode().splitlines()
                   if line.startswith("xsc_http_requests_total{") and f'method="{method}"' in line)


def test_delete_objects_removes_the_objects_files_together_and_refuses_more_than_1000_keys(s3, bucket,
                                                                                            gateway) -> None:
    """A DeleteObjects removes its objects' files from the store before it answers, all of them in one request to the
    node through `xsc s3 serve` (POST /v1/store/remove: no DELETE a file), in the node's process through its own
    listener; a key that does not exist is deleted as S3 deletes it; more than 1,000 keys is MalformedXML, as S3
    answers, and deletes nothing."""
    bodies = {f"many/{n}": os.urandom(100 + n) for n in range(40)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    before, deletes = caps_of(gateway), _requests_of(gateway.node, "DELETE")
    named = [*list(bodies)[:30], "many/none", "nowhere"]
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in named]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == sorted(named) and "Errors" not in answer, answer
    gone = before - caps_of(gateway)
    assert len(gone) == 30 and _requests_of(gateway.node, "DELETE") == deletes  # 30 files, no request a file
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in [*list(bodies)[30:], "gone"]],
                                                     "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet, quiet
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == [] and len(before - caps_of(gateway)) == 40
    for key, body in list(bodies.items())[:2]:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    kept = caps_of(gateway)
    with pytest.raises(ClientError) as info:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in [*bodies, *map(str, range(961))]]})
    assert code_of(info) == ("MalformedXML", 400)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == list(bodies)[:2]
    assert caps_of(gateway) == kept


def test_copy_object(s3, bucket) -> None:
    data = os.urandom(2 * SEGMENT + 1)
    s3.put_object(Bucket=bucket, Key="src", Body=data, ContentType="text/x", Metadata={"a": "1"})
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data and got["Metadata"] == {"a": "1"} and got["ContentType"] == "text/x"
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   Metadata={"b": "2"}, ContentType="text/y")
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data and got["Metadata"] == {"b": "2"} and got["ContentType"] == "text/y"
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "missing"})
    assert code_of(info) == ("NoSuchKey", 404)


def _copied_raw(gateway, bucket: str, source: str) -> tuple[int, bytes]:
    """A CopyObject to BUCKET/raw whose x-amz-copy-source is `source` as it is (signed, as an SDK would sign it)."""
    from tests.support.s3 import sign_headers

    url = f"{gateway.front.url}/{bucket}/raw"
    headers = sign_headers("PUT", url, gateway.key, {"x-amz-copy-source": source, "Content-Length": "0"})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="PUT", headers=headers)) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_copy_source_is_its_url_encoded_bucket_and_key_then_its_version(s3, bucket, gateway) -> None:
    """x-amz-copy-source is BUCKET/KEY URL-encoded, then ?versionId=ID, as S3 reads it: a key's own ? (the SDKs send
    %3F) stays in the key, for a copy and for a part; the separator encoded or not, after a / or not, names the same
    object, and so does its version null (of a version there is none of: NoSuchVersion); a ? sent bare in a key, or no
    key, is refused (400); a .. is a key's."""
    for key in ("what?.txt", "k?versionId=x", "a b+c#d%e"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": key})
        assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == key.encode(), key
    uid = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    part = s3.upload_part_copy(Bucket=bucket, Key="parts", UploadId=uid, PartNumber=1,
                               CopySource={"Bucket": bucket, "Key": "what?.txt"})["CopyPartResult"]
    s3.complete_multipart_upload(Bucket=bucket, Key="parts", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="parts")["Body"].read() == b"what?.txt"
    for source in (f"{bucket}%2Fwhat%3F.txt", f"/{bucket}%2Fwhat%3F.txt", f"%2F{bucket}%2Fwhat%3F.txt",
                   f"{bucket}/k%3FversionId%3Dx", f"{bucket}%2Fwhat%3F.txt?versionId=null"):
        s3.delete_object(Bucket=bucket, Key="raw")
        assert _copied_raw(gateway, bucket, source)[0] == 200, source
        assert s3.get_object(Bucket=bucket, Key="raw")["Body"].read() in (b"what?.txt", b"k?versionId=x"), source
    for source, status, code in ((f"{bucket}%2Fwhat%3F.txt?versionId=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH", 404,
                                  b"NoSuchVersion"),
                                 (f"{bucket}/what?.txt", 400, b"InvalidArgument"),
                                 (bucket, 400, b"InvalidArgument"), (f"{bucket}%2F", 400, b"InvalidArgument"),
                                 (f"{bucket}/..%2F{bucket}%2Fwhat%3F.txt", 404, b"NoSuchKey")):
        answer = _copied_raw(gateway, bucket, source)
        assert (answer[0], b"<Code>" + code + b"</Code>" in answer[1]) == (status, True), (source, answer)


# --- ranges ----------------------------------------------------------------------
RANGE_SIZE = 5 * SEGMENT + 17


@pytest.mark.parametrize("first,last", [
    (0, 0), (0, SEGMENT - 1), (SEGMENT - 1, SEGMENT), (SEGMENT, SEGMENT), (SEGMENT, 2 * SEGMENT - 1),
    (2 * SEGMENT - 3, 4 * SEGMENT + 2), (5 * SEGMENT, RANGE_SIZE - 1), (RANGE_SIZE - 1, RANGE_SIZE - 1),
    (7, RANGE_SIZE + 1000)])
def test_ranged_get_at_segment_edges(s3, gateway, first: int, last: int) -> None:
    name = "ranges"
    try:
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="obj", Body=_range_data())
    except ClientError:
        pass  # made by an earlier case
    got = s3.get_object(Bucket=name, Key="obj", Range=f"bytes={first}-{last}")
    end = min(last, RANGE_SIZE - 1)
    assert got["Body"].read() == _range_data()[first:end + 1]
    assert got["ContentRange"] == f"bytes {first}-{end}/{RANGE_SIZE}"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206


def _range_data() -> bytes:
    return hashlib.shake_256(b"ranges").digest(RANGE_SIZE)


def test_suffix_range_and_invalid_range(s3, bucket) -> None:
    data = os.urandom(SEGMENT + 10)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-20")["Body"].read() == data[-20:]
    assert s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={SEGMENT}-")["Body"].read() == data[SEGMENT:]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(data)}-")
    assert code_of(info) == ("InvalidRange", 416)


# --- listing ---------------------------------------------------------------------
def _many(s3) -> list[str]:
    """331 keys in a bucket of their own (made once per worker)."""
    keys = [f"photos/{y}/{m:02d}/img{i}.jpg" for y in (2023, 2024) for m in range(1, 13) for i in range(12)]
    keys += [f"docs/{i:03d}.txt" for i in range(40)] + ["top.txt", "photos/readme", "zz/é"]
    s3.create_bucket(Bucket="many")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="many", Key=k, Body=k.encode()), keys))
    return keys


LISTINGS = [("", "", 1000), ("", "/", 1000), ("photos/", "/", 1000), ("photos/2024/", "/", 7), ("photos/", "", 50),
            ("docs/0", "", 13), ("", "/", 1), ("photos/20", "/", 1), ("nothing", "/", 10), ("photos/2023/01/", "img1", 2)]


def test_listing_a_few_hundred_keys(s3) -> None:
    """ListObjectsV2 (every prefix, delimiter and page size above, all pages by continuation token),
    ListObjects V1 by markers, StartAfter: each equals the plain definition over the same keys."""
    many = _many(s3)
    assert len(many) > 300
    for prefix, delimiter, page in LISTINGS:
        contents, prefixes = [], []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="many", Prefix=prefix, Delimiter=delimiter,
                                                             PaginationConfig={"PageSize": page})
        for result in pages:
            assert result["KeyCount"] <= page
            contents += [o["Key"] for o in result.get("Contents", [])]
            prefixes += [p["Prefix"] for p in result.get("CommonPrefixes", [])]
        assert (contents, prefixes) == listing_model(many, prefix, delimiter), (prefix, delimiter, page)
    _list_objects_v1_and_start_after(s3, many)


def _list_objects_v1_and_start_after(s3, many: list[str]) -> None:
    contents, prefixes = [], []
    for result in s3.get_paginator("list_objects").paginate(Bucket="many", Delimiter="/", Prefix="photos/2024/",
                                                            PaginationConfig={"PageSize": 5}):
        contents += [o["Key"] for o in result.get("Contents", [])]
        prefixes += [p["Prefix"] for p in result.get("CommonPrefixes", [])]
    assert (contents, prefixes) == listing_model(many, "photos/2024/", "/")
    after = s3.list_objects_v2(Bucket="many", StartAfter="photos/2024/12/img5.jpg", MaxKeys=3)
    assert [o["Key"] for o in after["Contents"]] == ["photos/2024/12/img6.jpg", "photos/2024/12/img7.jpg",
                                                     "photos/2024/12/img8.jpg"]
    assert after["Contents"][0]["Size"] == len("photos/2024/12/img6.jpg")
    assert after["Contents"][0]["ETag"] == f'"{hashlib.md5(b"photos/2024/12/img6.jpg").hexdigest()}"'


# --- multipart -------------------------------------------------------------------
PART = 5 * MiB
MULTIPART_SIZE = 60 * MiB + 12345  # 13 parts: 12 of 5 MiB and a short last one, as the issue asks


def test_multipart_upload_of_a_60_mib_object(s3, bucket, gateway) -> None:
    data = os.urandom(MULTIPART_SIZE)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big.bin", ContentType="video/mp4",
                                        Metadata={"m": "1"})
    uid = upload["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    etags = []
    for number, offset in enumerate(range(0, len(data), PART), start=1):
        etags.append(s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=uid, PartNumber=number,
                                    Body=data[offset:offset + PART])["ETag"])
    listed = s3.list_parts(Bucket=bucket, Key="big.bin", UploadId=uid)["Parts"]
    assert [p["ETag"] for p in listed] == etags and listed[0]["Size"] == PART
    paged = s3.list_parts(Bucket=bucket, Key="big.bin", UploadId=uid, MaxParts=5, PartNumberMarker=5)
    assert [p["PartNumber"] for p in paged["Parts"]] == [6, 7, 8, 9, 10] and paged["IsTruncated"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]})
    md5s = b"".join(hashlib.md5(data[o:o + PART]).digest() for o in range(0, len(data), PART))
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-{len(etags)}"'
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    got = s3.get_object(Bucket=bucket, Key="big.bin")
    assert got["ContentType"] == "video/mp4" and got["Metadata"] == {"m": "1"} and got["ETag"] == done["ETag"]
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(data).digest()
    for first, last in ((PART - 10, PART + 10), (3 * PART - 1, 3 * PART), (0, 2 * PART + 7),
                        (12 * PART, MULTIPART_SIZE - 1), (PART + SEGMENT - 1, PART + SEGMENT)):
        ranged = s3.get_object(Bucket=bucket, Key="big.bin", Range=f"bytes={first}-{last}")["Body"].read()
        assert ranged == data[first:last + 1], (first, last)
    part2 = s3.get_object(Bucket=bucket, Key="big.bin", PartNumber=2)
    assert part2["Body"].read() == data[PART:2 * PART] and part2["PartsCount"] == len(etags)
    copied = s3.copy_object(Bucket=bucket, Key="big-copy", CopySource={"Bucket": bucket, "Key": "big.bin"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_multipart_errors_abort_and_part_replacement(s3, bucket, gateway) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    small = [s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=n, Body=b"x" * 1000)["ETag"]
             for n in (1, 2)]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": small[0]}, {"PartNumber": 2, "ETag": small[1]}]})
    assert code_of(info) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": '"0123"'}]})
    assert code_of(info) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": small[1]}, {"PartNumber": 1, "ETag": small[0]}]})
    assert code_of(info) == ("InvalidPartOrder", 400)
    before = caps_of(gateway)
    again = s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=2, Body=b"y" * 10)["ETag"]
    assert len(caps_of(gateway) - before) == 1 and len(before - caps_of(gateway)) == 1  # the replaced part is gone
    done = s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 2, "ETag": again}]})  # one part: the last may be small; part 1 is unused
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"y" * 10
    assert done["ETag"].endswith('-1"')
    uid2 = s3.create_multipart_upload(Bucket=bucket, Key="aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="aborted", UploadId=uid2, PartNumber=1, Body=b"z" * 100)
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid2)
    for call in (lambda: s3.list_parts(Bucket=bucket, Key="aborted", UploadId=uid2),
                 lambda: s3.upload_part(Bucket=bucket, Key="aborted", UploadId=uid2, PartNumber=1, Body=b"z"),
                 lambda: s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid2)):
        with pytest.raises(ClientError) as info:
            call()
        assert code_of(info) == ("NoSuchUpload", 404)
    names = {f["name"] for f in store_files(gateway.node)}
    assert not any(uid2 in n for n in names)  # the aborted upload's part file is gone
    assert not any(f"{uid}.1" in n for n in names)  # and so is the part Complete did not use


# --- presigned URLs --------------------------------------------------------------
def test_presigned_get_and_put_with_plain_http(s3, bucket) -> None:
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300)
    request = urllib.request.Request(url, data=b"presigned body", method="PUT")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300)
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"presigned body"
    ranged = urllib.request.Request(url, headers={"Range": "bytes=3-7"})
    with urllib.request.urlopen(ranged) as response:
        assert response.status == 206 and response.read() == b"signe"


def _http_error(request) -> tuple[int, bytes]:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    return info.value.code, info.value.read()


def test_an_x_amz_header_the_signature_does_not_cover_is_refused(gateway, s3, bucket) -> None:
    """Whoever holds a presigned PUT cannot add what its signer did not sign: an x-amz-copy-source (which would make
    the PUT a copy of an object the signer may read), metadata, a checksum; nor can an x-amz-* header be added to a
    request signed in its header.  403 AccessDenied naming the headers, as S3 answers, and nothing stored."""
    from tests.support.s3 import sign_headers

    s3.put_object(Bucket=bucket, Key="private", Body=b"the signer's")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "drop"}, ExpiresIn=300)
    for extra in ({"x-amz-copy-source": f"{bucket}/private"}, {"X-Amz-Meta-Owner": "mallory"},
                  {"x-amz-checksum-crc32": "AAAAAA=="}):
        status, body = _http_error(urllib.request.Request(url, data=b"dropped", method="PUT", headers=extra))
        assert status == 403 and b"<Code>AccessDenied</Code>" in body, body
        assert f"<HeadersNotSigned>{next(iter(extra)).lower()}</HeadersNotSigned>".encode() in body, body
    target = f"{gateway.front.url}/{bucket}/drop"
    signed = sign_headers("PUT", target, gateway.key, {})
    status, body = _http_error(urllib.request.Request(target, data=b"dropped", method="PUT",
                                                      headers={**signed, "x-amz-meta-late": "1"}))
    assert status == 403 and b"<HeadersNotSigned>x-amz-meta-late</HeadersNotSigned>" in body, body
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="drop")
    assert code_of(info)[1] == 404
    with urllib.request.urlopen(urllib.request.Request(url, data=b"as signed", method="PUT")) as response:
        assert response.status == 200
    assert s3.get_object(Bucket=bucket, Key="drop")["Body"].read() == b"as signed"


def test_a_response_header_override_holding_crlf_is_a_400(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="typed", Body=b"x")
    for value in ("text/plain\r\nX-Injected: 1", "text/plain\x00"):
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "typed",
                                                              "ResponseContentType": value}, ExpiresIn=300)
        status, body = _http_error(url)
        assert status == 400 and b"InvalidArgument" in body, body
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "typed",
                                                          "ResponseContentType": "text/plain"}, ExpiresIn=300)
    with urllib.request.urlopen(url) as response:
        assert response.headers["Content-Type"] == "text/plain" and response.read() == b"x"


def test_presigned_url_expired_or_tampered(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="p", Body=b"x")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=60)
    past = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y%m%dT%H%M%SZ")
    import re

    expired = re.sub(r"X-Amz-Date=\d{8}T\d{6}Z", f"X-Amz-Date={past}", url)
    status, body = _http_error(expired)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body and b"expired" in body
    tampered = url.replace("/p?", "/other?")
    status, body = _http_error(tampered)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", url).group(1)
    status, body = _http_error(url.replace(signature, "0" * 64))
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body


# --- authentication failures -----------------------------------------------------
def test_unsigned_request_is_access_denied(gateway) -> None:
    status, body = _http_error(gateway.front.url + "/")
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    assert b"xsc s3 keys" not in body, body  # the operator's command, for its log: the sender may be anyone
    status, body = _http_error(urllib.request.Request(gateway.front.url + "/x/y", data=b"z", method="PUT"))
    assert status == 403 and b"<Code>AccessDenied</Code>" in body


def test_wrong_secret_unknown_key_and_removed_key(gateway) -> None:
    wrong = boto3_client(gateway.front.url, {**gateway.key, "secret_key": "not-the-secret"})
    with pytest.raises(ClientError) as info:
        wrong.list_buckets()
    assert code_of(info) == ("SignatureDoesNotMatch", 403)
    unknown = boto3_client(gateway.front.url, {"access_key": "XSCNOSUCHKEY00000000", "secret_key": "s"})
    with pytest.raises(ClientError) as info:
        unknown.list_buckets()
    assert code_of(info) == ("InvalidAccessKeyId", 403)
    other = create_key(gateway.node.data_dir)
    client = boto3_client(gateway.front.url, other)
    client.list_buckets()
    assert gateway.node.xsc("s3", "keys", "rm", other["access_key"]).returncode == 0
    with pytest.raises(ClientError) as info:
        client.list_buckets()
    assert code_of(info) == ("InvalidAccessKeyId", 403)


def _signed(gateway, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            when: datetime | None = None, send: bytes | None = None) -> tuple[int, bytes]:
    """A request signed by botocore (at `when`), sending `send` instead of the body it signed, if given."""
    request = AWSRequest(method=method, url=gateway.front.url + path, data=body, headers=headers or {})
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    auth = S3SigV4Auth(Credentials(gateway.key["access_key"], gateway.key["secret_key"]), "s3", "us-east-1")
    if when is None:
        auth.add_auth(request)
    else:
        import botocore.auth

        real = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda *args, **kwargs: when.replace(tzinfo=None)
        try:
            auth.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = real
    prepared = request.prepare()
    body = body if send is None else send
    raw = urllib.request.Request(prepared.url, data=body or None, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(raw) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_skewed_clock_and_body_not_matching_its_signed_hash(gateway, s3, bucket) -> None:
    status, body = _signed(gateway, "GET", "/", when=datetime.now(timezone.utc) - timedelta(hours=1))
    assert status == 403 and b"<Code>RequestTimeTooSkewed</Code>" in body
    before = caps_of(gateway)
    status, body = _signed(gateway, "PUT", f"/{bucket}/lying", body=b"another body!", send=b"the real body")
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in body
    assert caps_of(gateway) == before  # nothing was stored
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="lying")
    assert code_of(info)[1] == 404


def test_a_large_body_not_matching_its_signed_hash_stores_nothing(gateway, s3, bucket) -> None:
    """Chunks go on to the store as they come while the declared size says more is to come; the last waits for the
    body's checks, so a large body that fails them is never stored whole."""
    signed = os.urandom(3 * 1024 * 1024 + 5)
    sent = signed[:-1] + bytes([signed[-1] ^ 1])  # the same length: only the last byte differs
    before = caps_of(gateway)
    status, body = _signed(gateway, "PUT", f"/{bucket}/lying-large", body=signed, send=sent)
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in body
    assert caps_of(gateway) == before
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="lying-large")
    assert code_of(info)[1] == 404


def test_unknown_operations_are_not_implemented_never_500(gateway, s3, bucket) -> None:
    with pytest.raises(ClientError) as info:
        s3.get_bucket_acl(Bucket=bucket)
    assert code_of(info) == ("NotImplemented", 501)
    with pytest.raises(ClientError) as info:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": []})
    assert code_of(info) == ("NotImplemented", 501)
    for method, path in (("PATCH", f"/{bucket}/k"), ("POST", "/"), ("PUT", "/"), ("POST", f"/{bucket}/k"),
                         ("GET", f"/{bucket}/k?uploadId=..%2F"), ("OPTIONS", f"/{bucket}")):
        status, body = _signed(gateway, method, path)
        assert 400 <= status < 500 or status == 501, (method, path, status, body)
        assert b"<Error>" in body
