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
    kept = {1: {"checksums": {"crc32": "AAAAAA=="}}, 2: {"checksums": {"crc32": "AAAAAQ=="}}}
    checksums.check_listed([(1, {"crc32": "AAAAAA=="}), (2, {})], kept)
    composite_kind = {"algorithm": "crc32", "type": "COMPOSITE", "default": False}
    checksums.check_listed([(1, {"crc32": "AAAAAA=="}), (2, {"crc32": "AAAAAQ=="})], kept, composite_kind)
    for listed, kind, code in (([(1, {"crc32": "AAAAAQ=="})], None, "InvalidPart"),  # not the part's
                               ([(1, {"sha1": "A" * 27 + "="})], None, "BadDigest"),  # not one the part keeps
                               ([(1, {"crc32": "AAAAAA=="}), (2, {})], composite_kind, "InvalidRequest")):  # missing
        with pytest.raises(S3Error) as info:
            checksums.check_listed(listed, kept, kind)
        assert (info.value.s3_code, info.value.status) == (code, 400), listed
    full = {"algorithm": "crc32", "type": "FULL_OBJECT"}
    checksums.check_listed([(1, {}), (2, {})], kept, {**full, "default": False})  # a FULL_OBJECT one needs none
    checksums.check_none_listed([(1, {}), (3, {})])  # an upload begun without an algorithm: numbers and ETags only
    with pytest.raises(S3Error) as info:
        checksums.check_none_listed([(1, {}), (2, {"sha256": "A" * 43 + "="})])
    assert (info.value.s3_code, info.value.status, info.value.details["PartNumber"]) == ("InvalidPart", 400, "2")
    checksums.check_complete({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-type": "FULL_OBJECT"}, full,
                             "AAAAAA==")
    for headers, code in (({"x-amz-checksum-crc32": "AAAAAQ=="}, "BadDigest"),
                          ({"x-amz-checksum-type": "COMPOSITE"}, "InvalidRequest"),
                          ({"x-amz-checksum-crc32c": "AAAAAA=="}, "BadDigest")):
        with pytest.raises(S3Error) as info:
            checksums.check_complete(headers, full, "AAAAAA==")
        assert info.value.s3_code == code, headers


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
def test_an_upload_without_an_algorithm_gets_s3s_default_and_completes_with_what_listparts_lists(gateway, s3,
                                                                                                  bucket) -> None:
    """boto3's client sends each part a CRC32 of its own: checked and echoed.  The upload is completed with its parts'
    numbers and ETags only: one that lists a part's checksum is InvalidPart, as S3 answers it, and the upload stays
    as it was; ListParts lists no checksum (as S3 lists such an upload), so a Complete copied from it completes."""
    parts = [os.urandom(5 * MiB), b"end"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="plain")["UploadId"]
    sent = [s3.upload_part(Bucket=bucket, Key="plain", UploadId=uid, PartNumber=n, Body=p)
            for n, p in enumerate(parts, 1)]
    assert [s["ChecksumCRC32"] for s in sent] == [checksum_of("crc32", p) for p in parts]
    for field, values in [("ChecksumCRC32", [checksum_of("crc32", p) for p in parts]),
                          ("ChecksumCRC64NVME", [checksum_of("crc64nvme", p) for p in parts])]:
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket=bucket, Key="plain", UploadId=uid, MultipartUpload={"Parts": [
                {"PartNumber": n, "ETag": s["ETag"], field: v} for n, (s, v) in enumerate(zip(sent, values), 1)]})
        assert code_of(info) == ("InvalidPart", 400), field
        assert _absent(s3, bucket, "plain") and _upload_left(s3, bucket, "plain")
    listed = s3.list_parts(Bucket=bucket, Key="plain", UploadId=uid)
    assert "ChecksumAlgorithm" not in listed and "ChecksumType" not in listed
    copied = [{k: v for k, v in p.items() if k == "PartNumber" or k == "ETag" or k.startswith("Checksum")}
              for p in listed["Parts"]]
    assert copied == [{"PartNumber": n, "ETag": s["ETag"]} for n, s in enumerate(sent, 1)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="plain", UploadId=uid, MultipartUpload={"Parts": copied})
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
                        ({"ChecksumType": "COMPOSITE"}, "InvalidRequest"),
                        ({"MpuObjectSize": len(part)}, "InvalidRequest"),
                        # parts that carry a checksum start at 1 and leave none out (an upload without one may)
                        ({"MultipartUpload": {"Parts": [parts[1]]}}, "InvalidPartOrder")]:
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
        {"PartNumber": n, "ETag": p["ETag"], "ChecksumSHA256": p["ChecksumSHA256"]}
        for n, p in ((1, first), (2, last))]})
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert (head["ChecksumSHA256"], head["ChecksumType"]) == (
        composite("sha256", [source[:5 * MiB], source[5 * MiB:]]), "COMPOSITE")
    s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/mp")
    head = s3.head_object(Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    assert (head["ChecksumSHA256"], head["ChecksumType"]) == (checksum_of("sha256", source), "FULL_OBJECT")



@pytest.mark.slow
def test_a_composite_upload_is_completed_with_each_parts_checksum_listed(gateway, s3, bucket) -> None:
    """S3 makes a COMPOSITE checksum of the checksums the client lists: a Complete that lists none is refused, the
    upload left as it was; a FULL_OBJECT one needs none (its CRC is the whole object's)."""
    parts = [os.urandom(5 * MiB), b"end"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32C")["UploadId"]
    sent = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=n, Body=p, ChecksumAlgorithm="CRC32C")
            for n, p in enumerate(parts, 1)]
    listed = [{"PartNumber": n, "ETag": s["ETag"], "ChecksumCRC32C": s["ChecksumCRC32C"]}
              for n, s in enumerate(sent, 1)]
    for unlisted in ([{"PartNumber": n, "ETag": s["ETag"]} for n, s in enumerate(sent, 1)], [listed[0], {
            "PartNumber": 2, "ETag": sent[1]["ETag"]}]):
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": unlisted})
        assert code_of(info) == ("InvalidRequest", 400)
        assert "must include the checksum for each part" in info.value.response["Error"]["Message"]
        assert _absent(s3, bucket, "mp") and _upload_left(s3, bucket, "mp")
    with pytest.raises(ClientError) as info:  # a checksum the part was not sent with
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": [
            {**listed[0], "ChecksumSHA256": checksum_of("sha256", parts[0])}, listed[1]]})
    assert code_of(info) == ("BadDigest", 400) and _upload_left(s3, bucket, "mp")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": listed})
    assert (done["ChecksumCRC32C"], done["ChecksumType"]) == (composite("crc32c", parts), "COMPOSITE")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="full", ChecksumAlgorithm="CRC32C",
                                     ChecksumType="FULL_OBJECT")["UploadId"]
    sent = [s3.upload_part(Bucket=bucket, Key="full", UploadId=uid, PartNumber=n, Body=p, ChecksumAlgorithm="CRC32C")
            for n, p in enumerate(parts, 1)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="full", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": n, "ETag": s["ETag"]} for n, s in enumerate(sent, 1)]})
    assert done["ChecksumCRC32C"] == checksum_of("crc32c", b"".join(parts))


@pytest.mark.slow
def test_a_part_read_by_its_number_is_answered_as_s3_answers_it(gateway, s3, bucket) -> None:
    """GetObject and HeadObject with partNumber: the part's bytes (206), the object's ETag, its parts counted for a
    multipart object only; with x-amz-checksum-mode, a COMPOSITE object's part its own checksum (which boto3 checks
    over the part's bytes), a FULL_OBJECT one's none, bytes that are the whole object the object's."""
    parts = [os.urandom(5 * MiB), b"the last part"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="composite", ChecksumAlgorithm="SHA1")["UploadId"]
    sent = [s3.upload_part(Bucket=bucket, Key="composite", UploadId=uid, PartNumber=n, Body=p, ChecksumAlgorithm="SHA1")
            for n, p in enumerate(parts, 1)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="composite", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": n, "ETag": s["ETag"], "ChecksumSHA1": s["ChecksumSHA1"]} for n, s in enumerate(sent, 1)]})
    for number, part in enumerate(parts, 1):
        got = s3.get_object(Bucket=bucket, Key="composite", PartNumber=number, ChecksumMode="ENABLED")
        assert got["Body"].read() == part and got["ResponseMetadata"]["HTTPStatusCode"] == 206
        head = s3.head_object(Bucket=bucket, Key="composite", PartNumber=number, ChecksumMode="ENABLED")
        for answer in (got, head):
            assert (answer["ChecksumSHA1"], answer["ChecksumType"], answer["PartsCount"], answer["ETag"]) == (
                checksum_of("sha1", part), "COMPOSITE", 2, done["ETag"]), number
    whole = s3.head_object(Bucket=bucket, Key="composite", ChecksumMode="ENABLED")
    assert whole["ChecksumSHA1"] == composite("sha1", parts) and "PartsCount" not in whole
    uid = s3.create_multipart_upload(Bucket=bucket, Key="full")["UploadId"]  # S3's default: FULL_OBJECT CRC64NVME
    sent = [s3.upload_part(Bucket=bucket, Key="full", UploadId=uid, PartNumber=n, Body=p)
            for n, p in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="full", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": n, "ETag": s["ETag"]} for n, s in enumerate(sent, 1)]})
    got = s3.get_object(Bucket=bucket, Key="full", PartNumber=2, ChecksumMode="ENABLED")
    assert got["Body"].read() == parts[1] and got["PartsCount"] == 2 and "ChecksumCRC64NVME" not in got
    s3.put_object(Bucket=bucket, Key="single", Body=b"one part")  # boto3 sends a CRC32 with it
    got = s3.get_object(Bucket=bucket, Key="single", PartNumber=1, ChecksumMode="ENABLED")
    assert (got["Body"].read(), got["ChecksumCRC32"]) == (b"one part", checksum_of("crc32", b"one part"))
    assert "PartsCount" not in got
    ranged = s3.get_object(Bucket=bucket, Key="single", Range="bytes=0-7", ChecksumMode="ENABLED")
    assert ranged["ChecksumCRC32"] == got["ChecksumCRC32"]  # a range that is the whole object
    assert "ChecksumCRC32" not in s3.get_object(Bucket=bucket, Key="single", Range="bytes=1-7", ChecksumMode="ENABLED")
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    for answer in (s3.get_object(Bucket=bucket, Key="empty", PartNumber=1), s3.head_object(Bucket=bucket, Key="empty",
                                                                                          PartNumber=1)):
        assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["ContentLength"]) == (200, 0)
        assert "content-range" not in answer["ResponseMetadata"]["HTTPHeaders"]  # no bytes 0--1/0
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="composite", PartNumber=3)
    assert code_of(info) == ("InvalidPartNumber", 416)
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="composite", PartNumber=1, Range="bytes=0-9")
    assert code_of(info) == ("InvalidRequest", 400)
