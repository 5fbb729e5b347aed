"""Two users on one front: each one's buckets are invisible to the other until its owner grants them
(`xsc s3 grant`); a read grant lets the other read and not write; revoking takes it back."""

from __future__ import annotations

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import boto3_client, create_key  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def code_of(info) -> tuple[str, int]:
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def refused(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call()
    return code_of(info)


def test_two_users_see_only_their_own_buckets_until_granted(gateway) -> None:
    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
    ana.create_bucket(Bucket="u-ana")
    ana.put_object(Bucket="u-ana", Key="diary.txt", Body=b"ana's")
    bob.create_bucket(Bucket="u-bob")
    assert [b["Name"] for b in ana.list_buckets()["Buckets"]] == ["u-ana"]
    assert [b["Name"] for b in bob.list_buckets()["Buckets"]] == ["u-bob"]
    assert ana.list_buckets()["Owner"]["ID"] == "ana"
    assert refused(lambda: bob.create_bucket(Bucket="u-ana")) == ("BucketAlreadyExists", 409)
    for call in (lambda: bob.get_object(Bucket="u-ana", Key="diary.txt"),
                 lambda: bob.list_objects_v2(Bucket="u-ana"),
                 lambda: bob.put_object(Bucket="u-ana", Key="x", Body=b"bob's"),
                 lambda: bob.delete_object(Bucket="u-ana", Key="diary.txt"),
                 lambda: bob.copy_object(Bucket="u-bob", Key="stolen", CopySource={"Bucket": "u-ana", "Key": "diary.txt"}),
                 lambda: bob.create_multipart_upload(Bucket="u-ana", Key="m"),
                 lambda: bob.delete_bucket(Bucket="u-ana")):
        assert refused(call) == ("AccessDenied", 403)
    assert refused(lambda: bob.head_object(Bucket="u-ana", Key="diary.txt"))[1] == 403
    assert gateway.node.xsc("s3", "grant", "u-ana", "bob", "read").returncode == 0
    assert [b["Name"] for b in bob.list_buckets()["Buckets"]] == ["u-ana", "u-bob"]
    assert bob.get_object(Bucket="u-ana", Key="diary.txt")["Body"].read() == b"ana's"
    assert [o["Key"] for o in bob.list_objects_v2(Bucket="u-ana")["Contents"]] == ["diary.txt"]
    bob.copy_object(Bucket="u-bob", Key="copy", CopySource={"Bucket": "u-ana", "Key": "diary.txt"})  # read is enough
    for call in (lambda: bob.put_object(Bucket="u-ana", Key="x", Body=b"bob's"),
                 lambda: bob.delete_object(Bucket="u-ana", Key="diary.txt"),
                 lambda: bob.copy_object(Bucket="u-ana", Key="y", CopySource={"Bucket": "u-bob", "Key": "copy"}),
                 lambda: bob.create_multipart_upload(Bucket="u-ana", Key="m"),
                 lambda: bob.delete_bucket(Bucket="u-ana")):
        assert refused(call) == ("AccessDenied", 403)
    uid = ana.create_multipart_upload(Bucket="u-ana", Key="m")["UploadId"]
    assert refused(lambda: bob.upload_part(Bucket="u-ana", Key="m", UploadId=uid, PartNumber=1, Body=b"p")) \
        == ("AccessDenied", 403)
    assert refused(lambda: bob.abort_multipart_upload(Bucket="u-ana", Key="m", UploadId=uid)) == ("AccessDenied", 403)
    ana.abort_multipart_upload(Bucket="u-ana", Key="m", UploadId=uid)
    assert gateway.node.xsc("s3", "grant", "u-ana", "bob", "write").returncode == 0
    bob.put_object(Bucket="u-ana", Key="from-bob", Body=b"bob's")
    assert ana.get_object(Bucket="u-ana", Key="from-bob")["Body"].read() == b"bob's"
    assert refused(lambda: bob.delete_bucket(Bucket="u-ana")) == ("AccessDenied", 403)  # the owner's alone
    assert gateway.node.xsc("s3", "revoke", "u-ana", "bob").returncode == 0
    assert [b["Name"] for b in bob.list_buckets()["Buckets"]] == ["u-bob"]
    assert refused(lambda: bob.get_object(Bucket="u-ana", Key="diary.txt")) == ("AccessDenied", 403)
    assert "u-ana" not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    assert ana.get_object(Bucket="u-ana", Key="diary.txt")["Body"].read() == b"ana's"


def test_grant_refusals_are_one_line(gateway) -> None:
    result = gateway.node.xsc("s3", "grant", "no-such-bucket-for-grants", "bob", "read")
    assert result.returncode != 0 and result.stderr.count(b"\n") == 1 and b"no-such-bucket-for-grants" in result.stderr
    result = gateway.node.xsc("s3", "grant", "u-x", "bob", "admin")
    assert result.returncode != 0
