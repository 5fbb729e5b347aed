"""The checksums current S3 clients send with a body (x-amz-checksum-*, in a header or an aws-chunked trailer, boto3's
CRC32 by default, CRC32C and CRC64NVME in other configurations), and aws-chunked bodies in every streaming mode: each
of S3's five checksums is checked (a wrong one is BadDigest and nothing is stored) and given back when asked for, an
object written without one gets S3's default CRC64NVME, and an algorithm S3 does not know is refused before a byte is
read; the signed-trailer mode's chunks and trailer are checked as the signed mode's are.  The decoder in-process, then
boto3 and raw signed requests against a real node and `xsc s3 serve`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import zlib
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import code_of, store_files  # noqa: E402
from xsc.errors import S3Error  # noqa: E402
from xsc.s3.core import checksums, sigv4  # noqa: E402

MiB = 1024 * 1024
AK, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def checksum_of(algorithm: str, data: bytes) -> str:
    """`data`'s checksum in `algorithm` (S3's name), base64, as S3 spells it: the front's own, held to known values
    in test_crc32c_and_crc64nvme_give_their_known_values."""
    digest = checksums.ALGORITHMS[algorithm.lower()]()
    digest.update(data)
    return base64.b64encode(digest.digest()).decode()


def chunked(data: bytes, mode: str, seed: str = "", key: bytes = b"", amz_date: str = "", scope: str = "", *,
            trailer: str | None = None, tamper: str = "") -> bytes:
    """`data` as an aws-chunked body in `mode`, its chunks (and its trailer, `name:value`) signed from `seed`;
    `tamper`: "chunk" (a byte of the data changed once signed) or "trailer" (the trailer changed once signed)."""
    signed = mode in (sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_PAYLOAD_TRAILER)
    previous, out = seed, bytearray()
    for piece in [data[i:i + 65536] for i in range(0, len(data), 65536)] + [b""]:
        head = f"{len(piece):x}"
        if signed:
            previous = hmac.new(key, "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous,
                                                sigv4.EMPTY_SHA256, hashlib.sha256(piece).hexdigest()]).encode(),
                                hashlib.sha256).hexdigest()
            head += f";chunk-signature={previous}"
        if piece and tamper == "chunk":
            piece, tamper = bytes([piece[0] ^ 1]) + piece[1:], ""
        out += head.encode() + b"\r\n" + piece + (b"\r\n" if piece else b"")
    if trailer is not None:
        out += trailer.encode() + b"\r\n"
        if mode == sigv4.STREAMING_PAYLOAD_TRAILER:
            text = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
                              hashlib.sha256((trailer + "\n").encode()).hexdigest()])
            out += f"x-amz-trailer-signature:{hmac.new(key, text.encode(), hashlib.sha256).hexdigest()}\r\n".encode()
        if tamper == "trailer":
            out = out.replace(trailer.encode(), trailer.encode()[:-4] + b"AAA=")
    return bytes(out + b"\r\n")


def verified(mode: str) -> sigv4.Verified:
    key = sigv4.signing_key(SECRET, "20260101", "us-east-1")
    return sigv4.Verified(AK, mode, key, "20260101T000000Z", "20260101/us-east-1/s3/aws4_request", "ab" * 32)


def decoded(auth: sigv4.Verified, body: bytes, step: int = 4096) -> tuple[bytes, dict]:
    decoder = sigv4.ChunkDecoder(auth)
    out = b"".join(decoder.feed(body[i:i + step]) for i in range(0, len(body), step))
    return out, decoder.finish()


# --- in-process: the decoder and the checksum headers ----------------------------------------------------------------
@pytest.mark.parametrize("step", [1, 7, 70000])
def test_a_signed_trailer_body_is_decoded_and_its_chunks_and_trailer_checked(step: int) -> None:
    auth, data = verified(sigv4.STREAMING_PAYLOAD_TRAILER), os.urandom(150000)
    body = chunked(data, auth.payload_hash, auth.signature, auth.signing_key, auth.amz_date, auth.scope,
                   trailer=f"x-amz-checksum-crc32:{crc32(data)}")
    assert decoded(auth, body, step) == (data, {"x-amz-checksum-crc32": crc32(data)})
    for tamper in ("chunk", "trailer"):
        body = chunked(data, auth.payload_hash, auth.signature, auth.signing_key, auth.amz_date, auth.scope,
                       trailer=f"x-amz-checksum-crc32:{crc32(data)}", tamper=tamper)
        with pytest.raises(S3Error) as info:
            decoded(auth, body, step)
        assert info.value.s3_code == "SignatureDoesNotMatch", tamper
    body = chunked(data, auth.payload_hash, auth.signature, auth.signing_key, auth.amz_date, auth.scope)
    assert decoded(auth, body, step) == (data, {})  # no trailer: nothing to sign


def test_an_unsigned_trailer_body_gives_its_trailer_and_trailers_are_bounded() -> None:
    auth, data = verified(sigv4.STREAMING_UNSIGNED_TRAILER), b"hello trailer"
    body = chunked(data, auth.payload_hash, trailer=f"x-amz-checksum-sha256:{'A' * 43}=")
    assert decoded(auth, body) == (data, {"x-amz-checksum-sha256": "A" * 43 + "="})
    decoder = sigv4.ChunkDecoder(auth)
    decoder.feed(b"0\r\n")
    with pytest.raises(S3Error) as info:
        for _ in range(10):
            decoder.feed(b"x" * 1000)  # a trailer that never ends is refused, not buffered
    assert info.value.status == 400


def test_what_a_write_asks_of_its_checksum_headers() -> None:
    assert checksums.wanted({"Content-Type": "a/b"}) is None
    found = checksums.wanted({"x-amz-checksum-crc32": crc32(b"x"), "x-amz-sdk-checksum-algorithm": "CRC32"})
    assert (found.algorithm, found.expected, found.in_trailer) == ("crc32", crc32(b"x"), False)
    found = checksums.wanted({"x-amz-trailer": "x-amz-checksum-sha1", "x-amz-checksum-mode": "ENABLED"})
    assert (found.algorithm, found.expected, found.in_trailer) == ("sha1", None, True)

    def refused(headers: dict) -> tuple[str, int]:
        with pytest.raises(S3Error) as info:
            checksums.wanted(headers)
        return info.value.s3_code, info.value.status

    found = checksums.wanted({"x-amz-trailer": "x-amz-checksum-crc64nvme"})
    assert (found.algorithm, found.expected, found.in_trailer) == ("crc64nvme", None, True)
    assert checksums.wanted({"x-amz-checksum-crc32c": "AAAAAA=="}).algorithm == "crc32c"
    assert refused({"x-amz-checksum-crc64nvme": "AAAAAA=="}) == ("InvalidRequest", 400)  # four bytes, not eight
    assert refused({"x-amz-checksum-md4": "AAAAAA=="}) == ("InvalidRequest", 400)
    assert refused({"x-amz-checksum-crc32": "AAAA"}) == ("InvalidRequest", 400)  # not four bytes
    assert refused({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": "A" * 27 + "="}) == (
        "InvalidRequest", 400)
    assert refused({"x-amz-sdk-checksum-algorithm": "CRC32"}) == ("InvalidRequest", 400)  # and no value
    assert refused({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-sdk-checksum-algorithm": "SHA1"}) == (
        "InvalidRequest", 400)


def test_crc32c_and_crc64nvme_give_their_known_values_fed_whole_or_in_pieces() -> None:
    """The check values of the CRC catalogue (CRC-32C, CRC-64/NVME) and the NVMe spec's own examples."""
    for algorithm, data, value in [("crc32c", b"123456789", 0xE3069283), ("crc64nvme", b"123456789", 0xAE8B14860A799888),
                                   ("crc32c", b"", 0), ("crc64nvme", bytes(4096), 0x6482D367EB22B64E),
                                   ("crc64nvme", b"\xff" * 4096, 0xC0DDBA7302ECA3AC)]:
        size = checksums.SIZES[algorithm]
        whole, pieces = checksums.ALGORITHMS[algorithm](), checksums.ALGORITHMS[algorithm]()
        whole.update(data)
        for i in range(0, len(data), 7):
            pieces.update(data[i:i + 7])
        assert whole.digest() == pieces.digest() == value.to_bytes(size, "big"), algorithm


def test_a_write_without_a_checksum_takes_s3s_default_and_a_copy_keeps_its_sources() -> None:
    taken = checksums.for_object({"Content-Type": "a/b"})
    assert (taken.algorithm, taken.taken) == ("crc64nvme", True)
    taken.digest.update(b"123456789")
    taken.check({})  # nothing was sent to check it against
    assert taken.value == base64.b64encode((0xAE8B14860A799888).to_bytes(8, "big")).decode()
    sent = checksums.for_object({"x-amz-checksum-crc32": crc32(b"x")})
    assert (sent.algorithm, sent.taken) == ("crc32", False)
    assert checksums.for_copy({}, {"x-amz-checksum-sha1": "A" * 27 + "="}) is None  # the source's, kept
    assert checksums.for_copy({}, {"Cache-Control": "no-cache"}).algorithm == "crc64nvme"
    assert checksums.for_copy({"x-amz-checksum-algorithm": "CRC32C"}, {"x-amz-checksum-sha1": "A" * 27 + "="}
                              ).algorithm == "crc32c"


@pytest.mark.parametrize("payload", ["not a hash", "ab" * 31, "STREAMING-SOMETHING-ELSE",
                                     "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"])
def test_a_payload_hash_s3_does_not_know_is_refused_not_taken_as_unsigned(payload: str) -> None:
    headers = sigv4.sign_headers("PUT", "/b/k", "", "h", {}, AK, SECRET, 1.7e9, payload_hash=payload)
    with pytest.raises(S3Error) as info:
        sigv4.verify(sigv4.SignedRequest("PUT", "/b/k", "", headers), {AK: SECRET}.get, 1.7e9)
    assert (info.value.s3_code, info.value.status) == (
        ("NotImplemented", 501) if "ECDSA" in payload else ("InvalidArgument", 400))


# --- against a real front ---------------------------------------------------------------------------------------------

def _caps(gateway) -> set[str]:
    return {f["capability"] for f in store_files(gateway.node)}


def _absent(s3, bucket: str, key: str) -> bool:
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key=key)
    return code_of(info)[1] == 404


def _raw_put_like(gateway, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """A POST of `body`, its SHA-256 signed."""
    return _raw_put(gateway, path, body, hashlib.sha256(body).hexdigest(), headers, method="POST")


def _raw_put(gateway, path: str, body: bytes, mode: str, headers: dict[str, str], *,
             trailer_of=None, method: str = "PUT") -> tuple[int, bytes]:
    """A PUT signed in `mode` whose aws-chunked body `trailer_of(auth pieces)` makes (or `body` as it is)."""
    url = urlsplit(gateway.front.url + path)
    now = datetime.now(timezone.utc).timestamp()
    signed = sigv4.sign_headers(method, url.path, url.query, url.netloc, headers, gateway.key["access_key"],
                                gateway.key["secret_key"], now, payload_hash=mode)
    if trailer_of is not None:
        amz_date = signed["x-amz-date"]
        scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
        seed = signed["Authorization"].rpartition("Signature=")[2]
        body = trailer_of(seed, sigv4.signing_key(gateway.key["secret_key"], amz_date[:8], "us-east-1"), amz_date,
                          scope)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request(method, url.path + (f"?{url.query}" if url.query else ""), body=body,
                           headers={**signed, "Content-Length": str(len(body))})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
@pytest.mark.parametrize("size", [5, 2 * MiB])  # a small object (one call of the node's) and a streamed one
def test_boto3s_checksum_is_checked_kept_and_given_back_when_asked(gateway, s3, bucket, algorithm, size) -> None:
    data = os.urandom(size)
    sent = s3.put_object(Bucket=bucket, Key=algorithm, Body=data, ChecksumAlgorithm=algorithm)
    value = sent[f"Checksum{algorithm}"]
    assert value == checksum_of(algorithm, data)  # boto3's (awscrt's, for CRC32C and CRC64NVME) and the front's
    got = s3.get_object(Bucket=bucket, Key=algorithm, ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got[f"Checksum{algorithm}"] == value  # boto3 checked the body against it
    assert s3.head_object(Bucket=bucket, Key=algorithm, ChecksumMode="ENABLED")[f"Checksum{algorithm}"] == value
    assert f"Checksum{algorithm}" not in s3.head_object(Bucket=bucket, Key=algorithm)  # not asked for
    ranged = s3.get_object(Bucket=bucket, Key=algorithm, ChecksumMode="ENABLED", Range="bytes=1-3")
    assert ranged["Body"].read() == data[1:4] and f"Checksum{algorithm}" not in ranged  # not the range's
    copied = s3.copy_object(Bucket=bucket, Key=algorithm + "-copy", CopySource=f"{bucket}/{algorithm}")
    assert copied["CopyObjectResult"]["ETag"]
    assert s3.head_object(Bucket=bucket, Key=algorithm + "-copy", ChecksumMode="ENABLED")[
        f"Checksum{algorithm}"] == value  # the same bytes
    other = "SHA256" if algorithm != "SHA256" else "SHA1"
    s3.copy_object(Bucket=bucket, Key=algorithm + "-other", CopySource=f"{bucket}/{algorithm}", ChecksumAlgorithm=other)
    head = s3.head_object(Bucket=bucket, Key=algorithm + "-other", ChecksumMode="ENABLED")
    digest = (hashlib.sha256 if other == "SHA256" else hashlib.sha1)(data).digest()
    assert head[f"Checksum{other}"] == base64.b64encode(digest).decode() and f"Checksum{algorithm}" not in head


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
@pytest.mark.parametrize("size", [5, 2 * MiB])
def test_a_wrong_checksum_is_bad_digest_and_stores_nothing(gateway, s3, bucket, algorithm, size) -> None:
    before = _caps(gateway)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="wrong", Body=os.urandom(size),
                      **{f"Checksum{algorithm}": checksum_of(algorithm, b"other")})
    assert code_of(info) == ("BadDigest", 400)
    assert _absent(s3, bucket, "wrong") and _caps(gateway) == before


@pytest.mark.slow
def test_an_algorithm_s3_does_not_know_is_refused_before_its_body(gateway, s3, bucket) -> None:
    before = _caps(gateway)
    status, answer = _raw_put(gateway, f"/{bucket}/crc", b"body", hashlib.sha256(b"body").hexdigest(),
                              {"x-amz-checksum-crc16": "AAA="})
    assert status == 400 and b"<Code>InvalidRequest</Code>" in answer and b"CRC64NVME" in answer
    status, answer = _raw_put(gateway, f"/{bucket}/crc", b"body", "a body of its own", {})
    assert status == 400 and b"<Code>InvalidArgument</Code>" in answer
    assert _absent(s3, bucket, "crc") and _caps(gateway) == before


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME"])
def test_a_crc32c_or_crc64nvme_trailer_is_checked_and_kept(gateway, s3, bucket, algorithm) -> None:
    data, mode, header = os.urandom(300000), sigv4.STREAMING_UNSIGNED_TRAILER, f"x-amz-checksum-{algorithm.lower()}"
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": header}

    def body(value: str):
        return lambda seed, key, amz_date, scope: chunked(data, mode, trailer=f"{header}:{value}")

    before = _caps(gateway)
    status, answer = _raw_put(gateway, f"/{bucket}/t", b"", mode, headers,
                              trailer_of=body(checksum_of(algorithm, b"other")))
    assert (status, answer.split(b"<Code>")[1][:9]) == (400, b"BadDigest"), answer
    assert _absent(s3, bucket, "t") and _caps(gateway) == before
    status, answer = _raw_put(gateway, f"/{bucket}/t", b"", mode, headers,
                              trailer_of=body(checksum_of(algorithm, data)))
    assert status == 200, answer
    got = s3.get_object(Bucket=bucket, Key="t", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got[f"Checksum{algorithm}"] == checksum_of(algorithm, data)


@pytest.mark.slow
@pytest.mark.parametrize("size", [5, 2 * MiB])
def test_an_object_put_without_a_checksum_gets_s3s_default_crc64nvme(gateway, s3, bucket, size) -> None:
    """boto3 sends a checksum unless told not to: a plain signed PUT sends none, as older clients do."""
    data = os.urandom(size)
    status, answer = _raw_put(gateway, f"/{bucket}/plain", data, hashlib.sha256(data).hexdigest(), {})
    assert status == 200, answer
    head = s3.head_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == checksum_of("CRC64NVME", data) and head["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")
    assert got["Body"].read() == data  # boto3 checks the body against the CRC64NVME given back
    s3.copy_object(Bucket=bucket, Key="plain", CopySource=f"{bucket}/plain", MetadataDirective="REPLACE",
                   Metadata={"m": "v"})  # the same bytes: their checksum, kept
    head = s3.head_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == checksum_of("CRC64NVME", data) and head["Metadata"] == {"m": "v"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", [sigv4.STREAMING_UNSIGNED_TRAILER, sigv4.STREAMING_PAYLOAD_TRAILER])
@pytest.mark.parametrize("size", [5, 2 * MiB])
def test_a_trailer_checksum_is_checked_and_a_tampered_signed_body_refused(gateway, s3, bucket, mode, size) -> None:
    data = os.urandom(size)
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(size),
               "x-amz-trailer": "x-amz-checksum-crc32"}

    def body(trailer: str, tamper: str = ""):
        return lambda seed, key, amz_date, scope: chunked(data, mode, seed, key, amz_date, scope, trailer=trailer,
                                                          tamper=tamper)

    before = _caps(gateway)
    status, answer = _raw_put(gateway, f"/{bucket}/t", b"", mode, headers,
                              trailer_of=body(f"x-amz-checksum-crc32:{crc32(b'other')}"))
    assert (status, answer.split(b"<Code>")[1][:9]) == (400, b"BadDigest"), answer
    if mode == sigv4.STREAMING_PAYLOAD_TRAILER:
        for tamper in ("chunk", "trailer"):
            status, answer = _raw_put(gateway, f"/{bucket}/t", b"", mode, headers,
                                      trailer_of=body(f"x-amz-checksum-crc32:{crc32(data)}", tamper))
            assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in answer, tamper
    assert _absent(s3, bucket, "t") and _caps(gateway) == before
    status, answer = _raw_put(gateway, f"/{bucket}/t", b"", mode, headers,
                              trailer_of=body(f"x-amz-checksum-crc32:{crc32(data)}"))
    assert status == 200, answer
    got = s3.get_object(Bucket=bucket, Key="t", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ChecksumCRC32"] == crc32(data)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_multipart_parts_checksums_are_checked(gateway, s3, bucket, algorithm) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm=algorithm)["UploadId"]
    part, field = os.urandom(5 * MiB), f"Checksum{algorithm}"
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part,
                       **{field: checksum_of(algorithm, b"x")})
    assert code_of(info) == ("BadDigest", 400)
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid).get("Parts", []) == []
    first = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part, ChecksumAlgorithm=algorithm)
    assert first[field] == checksum_of(algorithm, part)
    last = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, Body=b"end", ChecksumAlgorithm=algorithm)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": first["ETag"], field: first[field]},
        {"PartNumber": 2, "ETag": last["ETag"], field: last[field]}]})
    assert s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")["Body"].read() == part + b"end"


@pytest.mark.slow
def test_a_delete_objects_body_not_matching_its_checksum_deletes_nothing(gateway, s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="kept", Body=b"kept")
    body = (b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>kept</Key></Object>'
            b'<Quiet>true</Quiet></Delete>')
    status, answer = _raw_put_like(gateway, f"/{bucket}?delete", body, {"x-amz-checksum-crc32": crc32(b"<Delete/>")})
    assert (status, answer.split(b"<Code>")[1][:9]) == (400, b"BadDigest"), answer
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"kept"
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "kept"}]})  # boto3 sends its CRC32: checked, holds
    assert _absent(s3, bucket, "kept")


@pytest.mark.slow
@pytest.mark.parametrize("declared, sent", [(2 * MiB, 3 * MiB), (2 * MiB, MiB), (100, 150), (100, 50)])
def test_an_aws_chunked_body_not_of_its_declared_length_is_refused_at_once(gateway, s3, bucket, declared,
                                                                           sent) -> None:
    """x-amz-decoded-content-length says what the chunks hold: more is not cut off and stored as if it were all,
    and fewer is refused as the body ends, not once the node has waited idle_timeout for the rest."""
    data = os.urandom(sent)
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(declared)}
    before = _caps(gateway)
    status, answer = _raw_put(gateway, f"/{bucket}/sized", b"", sigv4.STREAMING_PAYLOAD, headers,
                              trailer_of=lambda seed, key, amz_date, scope: chunked(
                                  data, sigv4.STREAMING_PAYLOAD, seed, key, amz_date, scope))
    assert status == 400 and b"<Code>IncompleteBody</Code>" in answer, answer
    assert _absent(s3, bucket, "sized") and _caps(gateway) == before
