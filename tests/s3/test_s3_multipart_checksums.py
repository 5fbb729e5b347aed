"""Multipart objects get S3's whole-object checksums: each part keeps its checksum (in its upload's algorithm, S3's
default CRC64NVME for an upload begun without one) and size, and CompleteMultipartUpload makes the object's of
theirs, COMPOSITE (the checksum of the parts' checksums, "-N") or FULL_OBJECT (the CRC of the whole object, combined
from the parts'), checking the parts' checksums it lists and a whole object's it sends.  The rules and the index's
bounds in-process, then boto3 (its managed transfers, which check a FULL_OBJECT checksum over what they read)
against `xsc s3 serve`."""

from __future__ import annotations

import base64
import os

import plyvel
import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import code_of  # noqa: E402
from xsc.buckets.index import S3Index  # noqa: E402
from xsc.errors import InvalidArgument, InvalidPart, S3Error  # noqa: E402
from xsc.s3.core import checksums, xml  # noqa: E402

MiB = 1024 * 1024


def checksum_of(algorithm: str, data: bytes) -> str:
    digest = checksums.ALGORITHMS[algorithm.lower()]()
    digest.update(data)
    return base64.b64encode(digest.digest()).decode()


def composite(algorithm: str, parts: list[bytes]) -> str:
    """S3's COMPOSITE checksum: the checksum of the parts' checksums, joined as bytes, then "-N"."""
    raw = b"".join(base64.b64decode(checksum_of(algorithm, p)) for p in parts)
    return f"{checksum_of(algorithm, raw)}-{len(parts)}"


def kept_parts(algorithm: str, parts: list[bytes]) -> list[dict]:
    return [{"size": len(p), "checksums": {algorithm: checksum_of(algorithm, p)}} for p in parts]


# --- the rules, in-process ---------------------------------------------------------------------------------------

def test_an_upload_gets_the_checksum_s3_gives_it() -> None:
    def kind(**headers: str) -> tuple[str, str, bool]:
        found = checksums.upload_checksum({f"x-amz-checksum-{k}": v for k, v in headers.items()})
        return found["algorithm"], found["type"], found["default"]

    def refused(**headers: str) -> str:
        with pytest.raises(S3Error) as info:
            kind(**headers)
        return f"{info.value.s3_code} {info.value.status}"

    assert kind() == ("crc64nvme", "FULL_OBJECT", True)
    assert kind(algorithm="CRC32") == ("crc32", "COMPOSITE", False)
    assert kind(algorithm="SHA256") == ("sha256", "COMPOSITE", False)
    assert kind(algorithm="CRC64NVME") == ("crc64nvme", "FULL_OBJECT", False)
    assert kind(algorithm="crc32c", type="full_object") == ("crc32c", "FULL_OBJECT", False)
    assert refused(algorithm="CRC64NVME", type="COMPOSITE") == "InvalidRequest 400"
    assert refused(algorithm="SHA1", type="FULL_OBJECT") == "InvalidRequest 400"
    assert refused(algorithm="CRC32", type="WHOLE") == "InvalidRequest 400"
    assert refused(type="FULL_OBJECT") == "InvalidRequest 400"  # a type without an algorithm


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
def test_a_full_object_crc_combined_of_the_parts_is_the_whole_objects(algorithm) -> None:
    parts = [os.urandom(1000), os.urandom(1), b"", os.urandom(4097)]
    assert checksums.whole({"algorithm": algorithm, "type": "FULL_OBJECT"},
                           kept_parts(algorithm, parts)) == checksum_of(algorithm, b"".join(parts))


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "sha1", "sha256"])
def test_a_composite_checksum_is_the_checksum_of_the_parts_checksums(algorithm) -> None:
    parts = [os.urandom(100), os.urandom(7)]
    assert checksums.whole({"algorithm": algorithm, "type": "COMPOSITE"},
                           kept_parts(algorithm, parts)) == composite(algorithm, parts)
    assert checksums.whole({"algorithm": algorithm, "type": "COMPOSITE"}, [{"size": 3}]) is None  # kept none


def test_complete_lists_and_sends_checksums_held_to_the_parts() -> None:
    body = (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag>"
            b"<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber><ETag>b</ETag></Part>"
            b"</CompleteMultipartUpload>")
    assert xml.parse_complete_checksums(body) == [(1, "a", {"crc32": "AAAAAA=="}), (2, "b", {})]
    checksums.check_listed([(1, {"crc32": "AAAAAA=="}), (2, {})], {1: {"checksums": {"crc32": "AAAAAA=="}}, 2: {}})
    for listed in ([(1, {"crc32": "AAAAAQ=="})], [(1, {"sha1": "A" * 27 + "="})]):
        with pytest.raises(S3Error) as info:
            checksums.check_listed(listed, {1: {"checksums": {"crc32": "AAAAAA=="}}})
        assert info.value.s3_code == "InvalidPart"
    full = {"algorithm": "crc32", "type": "FULL_OBJECT"}
    checksums.check_complete({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-type": "FULL_OBJECT"}, full,
                             "AAAAAA==")
    for headers in ({"x-amz-checksum-crc32": "AAAAAQ=="}, {"x-amz-checksum-type": "COMPOSITE"},
                    {"x-amz-checksum-crc32c": "AAAAAA=="}):
        with pytest.raises(S3Error) as info:
            checksums.check_complete(headers, full, "AAAAAA==")
        assert info.value.s3_code == "BadDigest", headers


# --- the bucket index keeps them, bounded ------------------------------------------------------------------------

@pytest.fixture
def index(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    index = S3Index(db, min_part_size=1)
    index.create_bucket("bkt")
    yield index
    db.close()


def test_the_index_keeps_part_checksums_bounded_and_the_objects_only_if_its_parts_still_hold(index) -> None:
    kind = {"algorithm": "crc32", "type": "COMPOSITE"}
    for bad in ({"algorithm": "md5", "type": "COMPOSITE"}, {"algorithm": "crc32", "type": "x"}, "crc32"):
        with pytest.raises(InvalidArgument):
            index.create_upload("bkt", "k", checksum=bad)
    uid = index.create_upload("bkt", "k", checksum=kind)
    assert index.upload(uid)["checksum"] == {**kind, "default": False}
    for bad in ({"crc32": "A" * 65}, {"crc32": 5}, {"md5": "AAAAAA=="},
                {"crc32": "AAAAAA==", "crc32c": "AAAAAA==", "sha1": "AAAAAA=="}):
        with pytest.raises(InvalidArgument):
            index.put_part(uid, 1, "cap-x", 1, "e1", bad)
    assert index.parts(uid) == []
    index.put_part(uid, 1, "cap-1", 1, "e1", {"crc32": "AAAAAA=="})
    index.put_part(uid, 2, "cap-2", 1, "e2", {"crc32": "AAAAAQ=="})
    assert [p["checksums"] for p in index.parts(uid)] == [{"crc32": "AAAAAA=="}, {"crc32": "AAAAAQ=="}]
    with pytest.raises(InvalidArgument):  # a checksum for each part chosen
        index.complete(uid, [(1, "e1"), (2, "e2")], checksum={"value": "V-2", "parts": ["AAAAAA=="]})
    with pytest.raises(InvalidPart):  # made of a part 2 uploaded again since
        index.complete(uid, [(1, "e1"), (2, "e2")], checksum={"value": "V-2", "parts": ["AAAAAA==", "AAAAAg=="]})
    assert index.upload(uid)["id"] == uid and [p["number"] for p in index.parts(uid)] == [1, 2]
    record, _ = index.complete(uid, [(1, "e1"), (2, "e2")],
                               checksum={"value": "V-2", "parts": ["AAAAAA==", "AAAAAQ=="]})
    assert record["headers"] == {"x-amz-checksum-crc32": "V-2", "x-amz-checksum-type": "COMPOSITE"}
    again, _ = index.complete(uid, [(1, "e1"), (2, "e2")])  # a repeated Complete answers as the first did
    assert again["headers"] == record["headers"]


# --- boto3 against `xsc s3 serve` --------------------------------------------------------------------------------

def _upload_left(s3, bucket: str, key: str) -> bool:
    return any(u["Key"] == key for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _absent(s3, bucket: str, key: str) -> bool:
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key=key)
    return code_of(info)[1] == 404


@pytest.mark.slow
def test_boto3_managed_transfers_get_and_check_whole_object_checksums(gateway, s3, bucket, tmp_path) -> None:
    """upload_file in 5 MiB parts: CRC64NVME (FULL_OBJECT), boto3's own default CRC32 (COMPOSITE), and a whole
    object's CRC32 sent with Complete (FULL_OBJECT); get_object with ChecksumMode checks a FULL_OBJECT one over the
    body, download_file reads the object back whole."""
    data = os.urandom(11 * MiB)
    pieces = [data[:5 * MiB], data[5 * MiB:10 * MiB], data[10 * MiB:]]
    (tmp_path / "up").write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_file(str(tmp_path / "up"), bucket, "nvme", ExtraArgs={"ChecksumAlgorithm": "CRC64NVME"}, Config=config)
    s3.upload_file(str(tmp_path / "up"), bucket, "crc32", Config=config)
    s3.upload_file(str(tmp_path / "up"), bucket, "sent", ExtraArgs={"ChecksumCRC32": checksum_of("crc32", data)},
                   Config=config)
    for key, field, kind, value in [("nvme", "ChecksumCRC64NVME", "FULL_OBJECT", checksum_of("crc64nvme", data)),
                                    ("crc32", "ChecksumCRC32", "COMPOSITE", composite("crc32", pieces)),
                                    ("sent", "ChecksumCRC32", "FULL_OBJECT", checksum_of("crc32", data))]:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert (head[field], head["ChecksumType"], head["ETag"].endswith('-3"')) == (value, kind, True), key
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got["Body"].read() == data and got[field] == value
        s3.download_file(bucket, key, str(tmp_path / "down"), ExtraArgs={"ChecksumMode": "ENABLED"})
        assert (tmp_path / "down").read_bytes() == data
    assert not _upload_left(s3, bucket, "sent")


@pytest.mark.slow
def test_an_upload_without_an_algorithm_gets_s3s_default_and_its_parts_list_theirs(gateway, s3, bucket) -> None:
    """boto3's client sends each part a CRC32 of its own: checked, kept beside the part's CRC64NVME, and listed."""
    parts = [os.urandom(5 * MiB), b"end"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="plain")["UploadId"]
    sent = [s3.upload_part(Bucket=bucket, Key="plain", UploadId=uid, PartNumber=n, Body=p)
            for n, p in enumerate(parts, 1)]
    listed = s3.list_parts(Bucket=bucket, Key="plain", UploadId=uid)
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == ("CRC64NVME", "FULL_OBJECT")
    assert [(p["ChecksumCRC64NVME"], p["ChecksumCRC32"]) for p in listed["Parts"]] == [
        (checksum_of("crc64nvme", p), checksum_of("crc32", p)) for p in parts]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="plain", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": n, "ETag": s["ETag"], "ChecksumCRC32": s["ChecksumCRC32"]} for n, s in enumerate(sent, 1)]})
    whole = checksum_of("crc64nvme", b"".join(parts))
    assert (done["ChecksumCRC64NVME"], done["ChecksumType"]) == (whole, "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts) and got["ChecksumCRC64NVME"] == whole


@pytest.mark.slow
def test_wrong_checksums_are_refused_and_the_upload_left_as_it_was(gateway, s3, bucket) -> None:
    part = os.urandom(5 * MiB)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32",
                                     ChecksumType="FULL_OBJECT")["UploadId"]
    with pytest.raises(ClientError) as info:  # a part's checksum in another algorithm than its upload's
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part, ChecksumAlgorithm="SHA256")
    assert code_of(info) == ("InvalidRequest", 400)
    first = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part, ChecksumAlgorithm="CRC32")
    last = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, Body=b"end", ChecksumAlgorithm="CRC32")
    parts = [{"PartNumber": 1, "ETag": first["ETag"], "ChecksumCRC32": first["ChecksumCRC32"]},
             {"PartNumber": 2, "ETag": last["ETag"], "ChecksumCRC32": last["ChecksumCRC32"]}]
    whole = checksum_of("crc32", part + b"end")
    for wrong, code in [({"MultipartUpload": {"Parts": [parts[0], {**parts[1], "ChecksumCRC32": whole}]}},
                         "InvalidPart"),
                        ({"ChecksumCRC32": checksum_of("crc32", b"other"), "ChecksumType": "FULL_OBJECT"},
                         "BadDigest"),
                        ({"ChecksumType": "COMPOSITE"}, "BadDigest"),
                        ({"MpuObjectSize": len(part)}, "InvalidRequest")]:
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid,
                                         **{"MultipartUpload": {"Parts": parts}, **wrong})
        assert code_of(info) == (code, 400), wrong
        assert _absent(s3, bucket, "mp") and _upload_left(s3, bucket, "mp")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, ChecksumCRC32=whole,
                                        ChecksumType="FULL_OBJECT", MpuObjectSize=len(part) + 3,
                                        MultipartUpload={"Parts": parts})
    assert (done["ChecksumCRC32"], done["ChecksumType"]) == (whole, "FULL_OBJECT")
    assert s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")["Body"].read() == part + b"end"
    with pytest.raises(ClientError) as info:
        s3.create_multipart_upload(Bucket=bucket, Key="no", ChecksumAlgorithm="CRC64NVME", ChecksumType="COMPOSITE")
    assert code_of(info) == ("InvalidRequest", 400)


@pytest.mark.slow
def test_upload_part_copy_takes_the_parts_checksum_and_a_composite_objects_copy_gets_a_whole_one(gateway, s3,
                                                                                                  bucket) -> None:
    source = os.urandom(5 * MiB + 10)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256")["UploadId"]
    first = s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, CopySource=f"{bucket}/src",
                                CopySourceRange=f"bytes=0-{5 * MiB - 1}")["CopyPartResult"]
    assert first["ChecksumSHA256"] == checksum_of("sha256", source[:5 * MiB])
    last = s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, CopySource=f"{bucket}/src",
                               CopySourceRange=f"bytes={5 * MiB}-{5 * MiB + 9}")["CopyPartResult"]
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]
    assert [p["ChecksumSHA256"] for p in listed] == [first["ChecksumSHA256"], last["ChecksumSHA256"]]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 2, "ETag": last["ETag"]}]})
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert (head["ChecksumSHA256"], head["ChecksumType"]) == (
        composite("sha256", [source[:5 * MiB], source[5 * MiB:]]), "COMPOSITE")
    s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/mp")
    head = s3.head_object(Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    assert (head["ChecksumSHA256"], head["ChecksumType"]) == (checksum_of("sha256", source), "FULL_OBJECT")

