"""What current S3 clients send beyond the operations' happy paths, each answered as S3 answers it: UploadPartCopy
(boto3's and the AWS CLI's managed copy of a large object, minio-py's compose), with its ranges and conditions; a
browser-form upload (POST Object) told it is not implemented, not that it is unsigned; part numbers out of S3's range
refused as S3 refuses them; ListMultipartUploads echoing the markers it was asked from; minio-py's presigned URLs.
boto3, minio and plain HTTP against a real node and `xsc s3 serve`."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.auth import S3SigV4QueryAuth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import code_of, store_files  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _caps(gateway) -> set[str]:
    return {f["capability"] for f in store_files(gateway.node)}


def test_a_browser_form_upload_is_not_implemented_and_stores_nothing(gateway, s3, bucket) -> None:
    post = s3.generate_presigned_post(bucket, "posted")
    boundary = "xscformboundary"
    fields = [*post["fields"].items(), ("file", "posted body")]
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields) + f"--{boundary}--\r\n"
    request = urllib.request.Request(post["url"], data=body.encode(), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    before = _caps(gateway)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    answer = info.value.read()
    assert info.value.code == 501 and b"<Code>NotImplemented</Code>" in answer and b"POST Object" in answer
    assert _caps(gateway) == before
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="posted")
    assert code_of(missing)[1] == 404


def test_part_numbers_out_of_range_are_invalid_argument(s3, bucket) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    for number in (0, 10001):
        with pytest.raises(ClientError) as info:
            s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=number, Body=b"x")
        assert code_of(info) == ("InvalidArgument", 400), number
    assert s3.list_parts(Bucket=bucket, Key="m", UploadId=uid).get("Parts", []) == []


def test_listing_uploads_echoes_its_markers_and_pages_through_every_upload(s3, bucket) -> None:
    made = sorted((key, s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]) for key in "abbbbbbc")  # a key's uploads in the order they began
    page = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="a", MaxUploads=2)
    assert (page["KeyMarker"], page["IsTruncated"], page["NextKeyMarker"]) == ("a", True, "b")
    following = s3.list_multipart_uploads(Bucket=bucket, KeyMarker=page["NextKeyMarker"],
                                          UploadIdMarker=page["NextUploadIdMarker"])
    assert (following["KeyMarker"], following["UploadIdMarker"]) == ("b", page["NextUploadIdMarker"])
    pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1})
    assert sorted((u["Key"], u["UploadId"]) for p in pages for u in p.get("Uploads", [])) == made


def test_minio_presigned_get_and_put(gateway, bucket) -> None:
    minio = pytest.importorskip("minio")
    url = urlsplit(gateway.front.url)
    client = minio.Minio(url.netloc, access_key=gateway.key["access_key"], secret_key=gateway.key["secret_key"],
                         secure=False, region="us-east-1")
    put = client.presigned_put_object(bucket, "pre", expires=timedelta(minutes=5))
    with urllib.request.urlopen(urllib.request.Request(put, data=b"presigned by minio", method="PUT")) as answer:
        assert answer.status == 200
    get = client.presigned_get_object(bucket, "pre", expires=timedelta(minutes=5))
    with urllib.request.urlopen(get) as answer:
        assert answer.read() == b"presigned by minio"
    client.put_object(bucket, "plain", io.BytesIO(b"minio put"), 9)
    assert client.get_object(bucket, "plain").read() == b"minio put"
    big = os.urandom(5 * 1024 * 1024 + 10)
    client.put_object(bucket, "big", io.BytesIO(big), len(big))
    from minio.commonconfig import ComposeSource  # its compose is UploadPartCopy with source ranges

    client.compose_object(bucket, "composed", [ComposeSource(bucket, "big", offset=0, length=5 * 1024 * 1024),
                                               ComposeSource(bucket, "plain", offset=2, length=5)])
    assert client.get_object(bucket, "composed").read() == big[:5 * 1024 * 1024] + b"minio put"[2:7]


def test_a_managed_copy_of_a_large_object_copies_its_parts_by_range(s3, bucket) -> None:
    data = os.urandom(11 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    five = 5 * 1024 * 1024
    s3.copy({"Bucket": bucket, "Key": "big"}, bucket, "copy",
            Config=TransferConfig(multipart_threshold=five, multipart_chunksize=five))  # UploadPartCopy, 3 ranges
    copied = s3.get_object(Bucket=bucket, Key="copy")
    assert copied["Body"].read() == data and copied["ETag"].endswith('-3"')
    md5s = b"".join(hashlib.md5(data[i:i + five]).digest() for i in range(0, len(data), five))
    assert copied["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'

    uid = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    source = {"Bucket": bucket, "Key": "big"}
    for refused, expected in (({"CopySourceRange": "bytes=5-4"}, ("InvalidArgument", 400)),
                              ({"CopySourceRange": f"bytes=0-{len(data)}"}, ("InvalidArgument", 400)),
                              ({"CopySourceRange": "0-4"}, ("InvalidArgument", 400)),
                              ({"CopySourceRange": "bytes=\u00b2-4"}, ("InvalidArgument", 400)),
                              ({"CopySourceRange": f"bytes=0-{'9' * 5000}"}, ("InvalidArgument", 400)),
                              ({"CopySourceIfMatch": '"0123"'}, ("PreconditionFailed", 412))):
        with pytest.raises(ClientError) as info:
            s3.upload_part_copy(Bucket=bucket, Key="parts", UploadId=uid, PartNumber=1, CopySource=source, **refused)
        assert code_of(info) == expected, refused
    with pytest.raises(ClientError) as info:
        s3.upload_part_copy(Bucket=bucket, Key="parts", UploadId=uid, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "absent"})
    assert code_of(info) == ("NoSuchKey", 404)
    part = s3.upload_part_copy(Bucket=bucket, Key="parts", UploadId=uid, PartNumber=1, CopySource=source,
                               CopySourceRange="bytes=10-19")["CopyPartResult"]
    assert part["ETag"] == f'"{hashlib.md5(data[10:20]).hexdigest()}"'
    s3.complete_multipart_upload(Bucket=bucket, Key="parts", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="parts")["Body"].read() == data[10:20]


def _presigned_by_botocores_python_signer(gateway, s3, path: str, expires: int) -> str:
    """A presigned GET: botocore signs with awscrt's signer where awscrt is installed (xsc needs it), and that one
    refuses an expiry of 0 before a URL is made; its Python signer makes one, for the front to refuse."""
    request = AWSRequest("GET", s3.meta.endpoint_url + path)
    credentials = Credentials(gateway.key["access_key"], gateway.key["secret_key"])
    S3SigV4QueryAuth(credentials, "s3", s3.meta.region_name, expires=expires).add_auth(request)
    return request.url


def test_a_presigned_urls_expiry_is_one_second_to_seven_days(gateway, s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="p", Body=b"presigned")
    for expires in (0, 604801):
        url = _presigned_by_botocores_python_signer(gateway, s3, f"/{bucket}/p", expires)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url)
        assert info.value.code == 400 and b"<Code>AuthorizationQueryParametersError</Code>" in info.value.read()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=604800)
    with urllib.request.urlopen(url) as answer:
        assert answer.read() == b"presigned"
