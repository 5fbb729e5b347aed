"""SigV4 verification: the worked examples of the S3 API reference, and botocore's signatures of any request."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from xsc.errors import S3Error
from xsc.s3.core import sigv4

AK, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime(2013, 5, 24, tzinfo=timezone.utc).timestamp()


def secret_of(key: str) -> str | None:
    return SECRET if key == AK else None


def test_the_s3_reference_get_object_example() -> None:
    signature = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    headers = {"Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9",
               "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20130524T000000Z",
               "Authorization": f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
                                f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={signature}"}
    verified = sigv4.verify(sigv4.SignedRequest("GET", "/test.txt", "", headers), secret_of, WHEN)
    assert verified.access_key == AK and verified.payload_hash == sigv4.EMPTY_SHA256
    with pytest.raises(S3Error) as info:
        sigv4.verify(sigv4.SignedRequest("GET", "/test.txt", "", {**headers, "Range": "bytes=0-10"}), secret_of, WHEN)
    assert info.value.s3_code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as info:
        sigv4.verify(sigv4.SignedRequest("GET", "/test.txt", "", headers), secret_of, WHEN + 3600)
    assert info.value.s3_code == "RequestTimeTooSkewed"
    with pytest.raises(S3Error) as info:
        sigv4.verify(sigv4.SignedRequest("GET", "/test.txt", "", headers), lambda k: None, WHEN)
    assert info.value.s3_code == "InvalidAccessKeyId"


def test_the_s3_reference_presigned_url_example() -> None:
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
             "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    request = sigv4.SignedRequest("GET", "/test.txt", query, {"Host": "examplebucket.s3.amazonaws.com"})
    assert sigv4.verify(request, secret_of, WHEN + 100).presigned
    with pytest.raises(S3Error) as info:
        sigv4.verify(request, secret_of, WHEN + 86401)
    assert info.value.s3_code == "AccessDenied" and "expired" in info.value.message


def test_the_s3_reference_chunked_upload_example() -> None:
    headers = {"Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
               "x-amz-content-sha256": sigv4.STREAMING_PAYLOAD, "Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": "66560", "Content-Length": "66824",
               "Authorization": f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders="
                                "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                                "x-amz-decoded-content-length;x-amz-storage-class,"
                                "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"}
    verified = sigv4.verify(sigv4.SignedRequest("PUT", "/examplebucket/chunkObject.txt", "", headers), secret_of, WHEN)
    body = (b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
            + b"a" * 65536 + b"\r\n"
            + b"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
            + b"a" * 1024 + b"\r\n"
            + b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n")
    assert len(body) == 66824
    for step in (1, 7, 4096, len(body)):  # however the body arrives
        decoder = sigv4.ChunkDecoder(verified)
        out = b"".join(decoder.feed(body[i:i + step]) for i in range(0, len(body), step))
        assert out == b"a" * 66560 and decoder.done
    decoder = sigv4.ChunkDecoder(verified)
    with pytest.raises(S3Error) as info:
        decoder.feed(body.replace(b"a" * 1024, b"b" * 1024))
    assert info.value.s3_code == "SignatureDoesNotMatch"


def test_a_chunk_over_the_bound_is_refused_from_its_header_before_its_data() -> None:
    """An aws-chunked body declaring one 300 MiB chunk with a bad signature: refused (400) as soon as its header
    is read, with nothing of its data buffered (the decoder buffered it all before checking the signature)."""
    decoder = sigv4.ChunkDecoder(None)
    assert decoder.feed(b"1000000;chunk-signature=" + b"0" * 64 + b"\r\n") == b""  # 16 MiB: taken
    decoder = sigv4.ChunkDecoder(None)
    with pytest.raises(S3Error) as info:
        decoder.feed(b"12c00000;chunk-signature=" + b"0" * 64 + b"\r\n" + b"a" * 1024)
    assert info.value.status == 400 and info.value.s3_code == "InvalidArgument"


def test_a_signature_for_another_region_is_refused_in_its_form_naming_the_region_expected() -> None:
    header_form = sigv4.verify(sigv4.SignedRequest("GET", "/b", "", sigv4.sign_headers(
        "GET", "/b", "", "h", {}, AK, SECRET, WHEN, region="eu-west-1", payload_hash=sigv4.EMPTY_SHA256)), secret_of, WHEN)
    presigned = sigv4.verify(sigv4.SignedRequest("GET", "/test.txt", (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
        "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
        {"Host": "examplebucket.s3.amazonaws.com"}), secret_of, WHEN + 100)
    sigv4.check_region(header_form, "eu-west-1")
    sigv4.check_region(presigned, "us-east-1")
    for verified, code, signed_for in ((header_form, "AuthorizationHeaderMalformed", "eu-west-1"),
                                       (presigned, "AuthorizationQueryParametersError", "us-east-1")):
        with pytest.raises(S3Error) as info:
            sigv4.check_region(verified, "garage")
        assert (info.value.s3_code, info.value.status, info.value.details["Region"]) == (code, 400, "garage")
        assert f"the region {signed_for!r} is wrong; expecting 'garage'" in info.value.message


def test_refusals_name_what_is_wrong() -> None:
    def refused(headers: dict, query: str = "") -> str:
        with pytest.raises(S3Error) as info:
            sigv4.verify(sigv4.SignedRequest("GET", "/", query, headers), secret_of, WHEN)
        return info.value.s3_code

    assert refused({}) == "AccessDenied"
    assert refused({}, "AWSAccessKeyId=x&Signature=y&Expires=1") == "AccessDenied"
    assert refused({"Authorization": "AWS x:y"}) == "InvalidRequest"
    assert refused({"Authorization": "AWS4-HMAC-SHA256 Credential=a/b"}) == "AuthorizationHeaderMalformed"
    assert refused({}, "X-Amz-Credential=x") == "AuthorizationQueryParametersError"


def test_a_request_signed_both_in_its_header_and_in_its_query_is_refused_as_s3_refuses_it() -> None:
    """A presigned URL sent with another signature in its header is not judged by that header alone (which, covering
    the query, let it through; not covering it, answered SignatureDoesNotMatch)."""
    query = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AK}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    headers = sigv4.sign_headers("GET", "/test.txt", query, "examplebucket.s3.amazonaws.com", {}, AK, SECRET, WHEN)
    with pytest.raises(S3Error) as info:
        sigv4.verify(sigv4.SignedRequest("GET", "/test.txt", query, headers), secret_of, WHEN)
    assert (info.value.s3_code, info.value.status) == ("InvalidArgument", 400)
    assert info.value.message.startswith("Only one auth mechanism allowed")


def test_a_header_sent_twice_in_any_case_is_signed_as_its_values_joined_in_order() -> None:
    from multidict import CIMultiDict

    request = sigv4.SignedRequest("PUT", "/b/k", "", CIMultiDict([("Host", "h"), ("X-Amz-Meta-A", " 1  2 "),
                                                                   ("x-amz-meta-a", "3"), ("X-AMZ-DATE", "d")]))
    assert sigv4.canonical_headers(request, ["host", "x-amz-meta-a"]) == "host:h\nx-amz-meta-a:1 2,3\n"
    assert request.header("X-Amz-Meta-A") == " 1  2 " and request.header("x-amz-date") == "d"
    assert request.header("authorization") is None
    with pytest.raises(S3Error) as info:
        sigv4.canonical_headers(request, ["host", "x-amz-content-sha256"])
    assert info.value.s3_code == "SignatureDoesNotMatch"


PATH_CHARS = st.text(st.sampled_from("abcXYZ019-_.~ /+=&?%é☃:@!$'()*,;"), min_size=1, max_size=30)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(key=PATH_CHARS, query=st.dictionaries(st.sampled_from(["prefix", "delimiter", "max-keys", "uploads",
                                                              "list-type", "x y", "é"]),
                                             st.text(st.sampled_from("ab/ +=&é%"), max_size=8), max_size=4),
       meta=st.text(st.sampled_from("ab  c\t"), max_size=10), secret=st.text(min_size=1, max_size=40),
       body=st.binary(max_size=100))
def test_any_request_botocore_signs_verifies(key: str, query: dict, meta: str, secret: str, body: bytes) -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    pytest.importorskip("botocore")
    request = AWSRequest(method="PUT", url="http://127.0.0.1:9000/bucket/" + _quote(key), params=query, data=body,
                         headers={"x-amz-meta-note": meta, "Content-Type": "text/plain"})
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials("AKXSC", secret), "s3", "eu-west-3").add_auth(request)
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    headers = {"Host": url.netloc, **dict(prepared.headers)}
    signed = sigv4.SignedRequest("PUT", url.path, url.query, headers)
    verified = sigv4.verify(signed, lambda k: secret if k == "AKXSC" else None, datetime.now(timezone.utc).timestamp())
    assert verified.payload_hash == hashlib.sha256(body).hexdigest()
    with pytest.raises(S3Error):
        sigv4.verify(signed, lambda k: secret + "x", datetime.now(timezone.utc).timestamp())


def _quote(key: str) -> str:
    from urllib.parse import quote

    return quote(key, safe="/~")


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 31)))
def test_an_amz_date_reads_back_as_the_time_it_names(when: datetime) -> None:
    when = when.replace(microsecond=0, tzinfo=timezone.utc)
    assert sigv4._parse_time(when.strftime(sigv4.AMZ_DATE)) == when


@pytest.mark.parametrize("text", ["", "20240102T030405", "2024010T030405Z", "20241302T030405Z", "20240230T000000Z",
                                  "20240102T250000Z", "2024-01-02T03:04:05Z", "\uff120240102T030405Z",
                                  "20240102T030405Z\n"])
def test_an_amz_date_not_in_its_layout_is_refused(text: str) -> None:
    with pytest.raises(S3Error) as refused:
        sigv4._parse_time(text)
    assert refused.value.s3_code == "AccessDenied" and "not a date" in refused.value.message
