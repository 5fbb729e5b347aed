"""Two users on one front: each one's buckets are invisible to the other until its owner grants them
(`xsc s3 grant`); a read grant lets the other read and not write; revoking takes it back.  Each user's puts are
paid from its own ledger account (`xsc s3 fund`, `xsc s3 users`); an account that cannot pay refuses the put.  Each
test runs through `xsc s3 serve` and through the node's own S3 listener."""

from __future__ import annotations

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import (Gateway, boto3_client, code_of, create_key, export_index, half_sent_put,  # noqa: E402
                              index_and_files)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(both_gateways):
    """Each test once through `xsc s3 serve`, once through the node's own S3 listener."""
    return both_gateways


def refused(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call()
    return code_of(info)


def test_two_users_see_only_their_own_buckets_until_granted(gateway) -> None:
    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
    for user in ("ana", "bob"):
        assert gateway.node.xsc("s3", "fund", user, "5").returncode == 0
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
    for listed in (bob.list_objects_v2(Bucket="u-ana", FetchOwner=True), bob.list_objects(Bucket="u-ana")):
        assert listed["Contents"][0]["Owner"]["ID"] == "ana"  # the bucket's owner owns its objects, not who lists
    bob.copy_object(Bucket="u-bob", Key="copy", CopySource={"Bucket": "u-ana", "Key": "diary.txt"})  # read is enough
    for call in (lambda: bob.put_object(Bucket="u-ana", Key="x", Body=b"bob's"),
                 lambda: bob.delete_object(Bucket="u-ana", Key="diary.txt"),
                 lambda: bob.copy_object(Bucket="u-ana", Key="y", CopySource={"Bucket": "u-bob", "Key": "copy"}),
                 lambda: bob.create_multipart_upload(Bucket="u-ana", Key="m"),
                 lambda: bob.delete_bucket(Bucket="u-ana")):
        assert refused(call) == ("AccessDenied", 403)
    uid = ana.create_multipart_upload(Bucket="u-ana", Key="m")["UploadId"]
    (listed,) = bob.list_multipart_uploads(Bucket="u-ana")["Uploads"]  # a reader sees who began it, not itself
    assert (listed["UploadId"], listed["Initiator"]["ID"], listed["Owner"]["ID"]) == (uid, "ana", "ana")
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


def test_another_users_uploads_parts_and_presigned_urls_are_refused(gateway) -> None:
    """What the test above does not reach: another user's uploads and parts, named through its bucket (AccessDenied,
    whatever else the request holds: a listing's bad argument too) or one's own (NoSuchUpload, which names no other
    bucket: whether the id is one elsewhere is not told), a copy into a part, and presigned URLs signed with one's
    own key; the owner's objects and uploads stay as they were."""
    import urllib.error
    import urllib.request

    from tests.support.s3 import sign_headers

    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    bob_key = create_key(gateway.node.data_dir, "bob")
    bob = boto3_client(gateway.front.url, bob_key)
    assert gateway.node.xsc("s3", "fund", "ana", "5").returncode == 0
    ana.create_bucket(Bucket="iso-ana")
    ana.put_object(Bucket="iso-ana", Key="secret.txt", Body=b"ana's secret")
    uid = ana.create_multipart_upload(Bucket="iso-ana", Key="m")["UploadId"]
    etag = ana.upload_part(Bucket="iso-ana", Key="m", UploadId=uid, PartNumber=1, Body=b"ana's part")["ETag"]
    bob.create_bucket(Bucket="iso-bob")
    own = bob.create_multipart_upload(Bucket="iso-bob", Key="m")["UploadId"]
    complete = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    done = ana.create_multipart_upload(Bucket="iso-ana", Key="done")["UploadId"]
    done_etag = ana.upload_part(Bucket="iso-ana", Key="done", UploadId=done, PartNumber=1, Body=b"ana's")["ETag"]
    ana.complete_multipart_upload(Bucket="iso-ana", Key="done", UploadId=done,
                                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": done_etag}]})
    ana.create_bucket(Bucket="iso-gone")  # its upload completed, its object and itself deleted: the id is kept a while
    gone = ana.create_multipart_upload(Bucket="iso-gone", Key="k")["UploadId"]
    gone_etag = ana.upload_part(Bucket="iso-gone", Key="k", UploadId=gone, PartNumber=1, Body=b"ana's")["ETag"]
    ana.complete_multipart_upload(Bucket="iso-gone", Key="k", UploadId=gone,
                                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": gone_etag}]})
    ana.delete_object(Bucket="iso-gone", Key="k")
    ana.delete_bucket(Bucket="iso-gone")
    for call in (lambda: bob.list_parts(Bucket="iso-bob", Key="m", UploadId=uid),
                 lambda: bob.complete_multipart_upload(Bucket="iso-bob", Key="m", UploadId=uid, MultipartUpload=complete),
                 lambda: bob.complete_multipart_upload(Bucket="iso-bob", Key="done", UploadId=done,
                                                       MultipartUpload=complete),
                 lambda: bob.complete_multipart_upload(Bucket="iso-bob", Key="k", UploadId=gone,
                                                       MultipartUpload=complete),
                 lambda: bob.abort_multipart_upload(Bucket="iso-bob", Key="m", UploadId=uid),
                 lambda: bob.upload_part(Bucket="iso-bob", Key="m", UploadId=uid, PartNumber=2, Body=b"bob's"),
                 lambda: bob.upload_part_copy(Bucket="iso-bob", Key="m", UploadId=uid, PartNumber=1,
                                              CopySource={"Bucket": "iso-bob", "Key": "m"})):
        with pytest.raises(ClientError) as info:
            call()
        assert code_of(info) == ("NoSuchUpload", 404)
        told = json.dumps(info.value.response["Error"])
        assert "iso-ana" not in told and "iso-gone" not in told, told
    for call in (lambda: bob.list_multipart_uploads(Bucket="iso-ana"),
                 lambda: bob.list_multipart_uploads(Bucket="iso-ana", EncodingType="base64"),
                 lambda: bob.list_objects_v2(Bucket="iso-ana", EncodingType="base64"),
                 lambda: bob.list_objects_v2(Bucket="iso-ana", ContinuationToken="###"),
                 lambda: bob.list_objects(Bucket="iso-ana", EncodingType="base64"),
                 lambda: bob.list_parts(Bucket="iso-ana", Key="m", UploadId=uid),
                 lambda: bob.complete_multipart_upload(Bucket="iso-ana", Key="m", UploadId=uid, MultipartUpload=complete),
                 lambda: bob.get_bucket_location(Bucket="iso-ana"),
                 # its own upload, or none, named through the bucket it may not use: denied, not NoSuchUpload
                 lambda: bob.upload_part(Bucket="iso-ana", Key="m", UploadId=own, PartNumber=1, Body=b"bob's"),
                 lambda: bob.upload_part_copy(Bucket="iso-ana", Key="m", UploadId=own, PartNumber=1,
                                              CopySource={"Bucket": "iso-ana", "Key": "secret.txt"}),
                 lambda: bob.list_parts(Bucket="iso-ana", Key="m", UploadId=own),
                 lambda: bob.complete_multipart_upload(Bucket="iso-ana", Key="m", UploadId=own,
                                                       MultipartUpload=complete),
                 lambda: bob.abort_multipart_upload(Bucket="iso-ana", Key="m", UploadId=own),
                 lambda: bob.upload_part(Bucket="iso-ana", Key="m", UploadId="no-such-id", PartNumber=1, Body=b"x"),
                 lambda: bob.abort_multipart_upload(Bucket="iso-ana", Key="m", UploadId="0" * 32)):
        assert refused(call) == ("AccessDenied", 403)
    assert refused(lambda: bob.head_bucket(Bucket="iso-ana"))[1] == 403
    url = f"{gateway.front.url}/iso-ana/m?uploadId={uid}&encoding-type=base64"
    with pytest.raises(urllib.error.HTTPError) as info:  # ListParts (boto3 sends it no encoding-type)
        urllib.request.urlopen(urllib.request.Request(url, headers=sign_headers("GET", url, bob_key, {})))
    assert info.value.code == 403 and b"<Code>AccessDenied</Code>" in info.value.read()
    assert refused(lambda: bob.upload_part_copy(Bucket="iso-bob", Key="m", UploadId=own, PartNumber=1,
                                                CopySource={"Bucket": "iso-ana", "Key": "secret.txt"})) \
        == ("AccessDenied", 403)
    assert refused(lambda: bob.upload_part_copy(Bucket="iso-bob", Key="m", UploadId=own, PartNumber=1,
                                                CopySource={"Bucket": "iso-ana", "Key": "no-such-key"})) \
        == ("AccessDenied", 403)  # what is in another's bucket is not told, nor whether it is
    assert bob.list_parts(Bucket="iso-bob", Key="m", UploadId=own).get("Parts", []) == []
    for source, status, code in (("iso-ana%2Fsecret.txt", 403, b"AccessDenied"),  # encoded, the same source
                                 ("%2Fiso-ana%2Fsecret.txt", 403, b"AccessDenied"),
                                 ("iso-bob/..%2Fiso-ana%2Fsecret.txt", 404, b"NoSuchKey")):  # a key of bob's bucket
        url = f"{gateway.front.url}/iso-bob/stolen"
        headers = sign_headers("PUT", url, bob_key, {"x-amz-copy-source": source, "Content-Length": "0"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", method="PUT", headers=headers))
        assert (info.value.code, b"<Code>" + code + b"</Code>" in info.value.read()) == (status, True), source
    for method, operation, params, body in (
            ("GET", "get_object", {"Key": "secret.txt"}, None),
            ("PUT", "put_object", {"Key": "secret.txt"}, b"bob's"),
            ("DELETE", "delete_object", {"Key": "secret.txt"}, None),
            ("GET", "list_objects_v2", {}, None),
            ("GET", "list_parts", {"Key": "m", "UploadId": uid}, None),
            ("DELETE", "abort_multipart_upload", {"Key": "m", "UploadId": uid}, None)):
        url = bob.generate_presigned_url(operation, Params={"Bucket": "iso-ana", **params}, ExpiresIn=600)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=body, method=method))
        assert info.value.code == 403 and b"<Code>AccessDenied</Code>" in info.value.read(), operation
    assert ana.get_object(Bucket="iso-ana", Key="secret.txt")["Body"].read() == b"ana's secret"
    assert [p["ETag"] for p in ana.list_parts(Bucket="iso-ana", Key="m", UploadId=uid)["Parts"]] == [etag]
    assert [u["UploadId"] for u in ana.list_multipart_uploads(Bucket="iso-ana")["Uploads"]] == [uid]
    ana.abort_multipart_upload(Bucket="iso-ana", Key="m", UploadId=uid)
    bob.abort_multipart_upload(Bucket="iso-bob", Key="m", UploadId=own)


def test_a_write_whose_grant_is_revoked_while_its_body_is_on_its_way_is_refused_and_leaves_no_file(gateway) -> None:
    """A user granted write sends a part of the owner's upload, a large PutObject, and a part of an upload it began
    there; its grant is revoked while each body is on its way: each is refused (AccessDenied; NoSuchUpload for its own
    upload, which the revoke aborted), none is recorded, and its file is removed from the store as it is refused, not
    left to the next reconciliation."""
    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    bob_key = create_key(gateway.node.data_dir, "bob")
    bob = boto3_client(gateway.front.url, bob_key)
    for user in ("ana", "bob"):
        assert gateway.node.xsc("s3", "fund", user, "5").returncode == 0
    ana.create_bucket(Bucket="fly-ana")
    anas = ana.create_multipart_upload(Bucket="fly-ana", Key="a")["UploadId"]
    referenced, files, _ = index_and_files(gateway.node)
    left_before = files - referenced  # (other tests' files, marked for the front's next reconciliation)
    for target, status, code in ((f"a?partNumber=1&uploadId={anas}", 403, "AccessDenied"),
                                 ("large", 403, "AccessDenied"), (None, 404, "NoSuchUpload")):
        assert gateway.node.xsc("s3", "grant", "fly-ana", "bob", "write").returncode == 0
        if target is None:
            bobs = bob.create_multipart_upload(Bucket="fly-ana", Key="b")["UploadId"]
            target = f"b?partNumber=1&uploadId={bobs}"
        conn = half_sent_put(gateway, f"/fly-ana/{target}", 2 * MiB, bob_key)
        assert gateway.node.xsc("s3", "revoke", "fly-ana", "bob").returncode == 0
        conn.send(os.urandom(MiB))
        answer = conn.getresponse()
        assert (answer.status, f"<Code>{code}</Code>".encode() in answer.read()) == (status, True), target
        conn.close()
        referenced, files, _ = index_and_files(gateway.node)
        assert files - referenced <= left_before, f"files no record refers to: {files - referenced - left_before}"
    assert ana.list_parts(Bucket="fly-ana", Key="a", UploadId=anas).get("Parts", []) == []
    assert "Contents" not in ana.list_objects_v2(Bucket="fly-ana")
    assert [u["UploadId"] for u in ana.list_multipart_uploads(Bucket="fly-ana")["Uploads"]] == [anas]
    ana.abort_multipart_upload(Bucket="fly-ana", Key="a", UploadId=anas)


def test_presigned_urls_stop_working_as_their_grant_is_revoked_or_their_key_removed(gateway) -> None:
    """A presigned URL is judged as it is used, not as it was signed: another user's URLs into a bucket it was granted
    are refused once the grant is revoked (a GET, a PUT, a part of the upload it began there), and the owner's own
    once its access key is removed; the owner's object stays as it was."""
    import urllib.error
    import urllib.request

    ana_key = create_key(gateway.node.data_dir, "ana")
    ana = boto3_client(gateway.front.url, ana_key)
    bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
    for user in ("ana", "bob"):
        assert gateway.node.xsc("s3", "fund", user, "5").returncode == 0
    ana.create_bucket(Bucket="signed-ana")
    ana.put_object(Bucket="signed-ana", Key="k", Body=b"ana's")
    assert gateway.node.xsc("s3", "grant", "signed-ana", "bob", "write").returncode == 0
    uid = bob.create_multipart_upload(Bucket="signed-ana", Key="m")["UploadId"]
    urls = [("GET", bob.generate_presigned_url("get_object", Params={"Bucket": "signed-ana", "Key": "k"}), None),
            ("PUT", bob.generate_presigned_url("put_object", Params={"Bucket": "signed-ana", "Key": "k"}), b"bob's"),
            ("PUT", bob.generate_presigned_url("upload_part", Params={
                "Bucket": "signed-ana", "Key": "m", "UploadId": uid, "PartNumber": 1}), b"bob's part")]
    assert urllib.request.urlopen(urls[0][1]).read() == b"ana's"
    assert gateway.node.xsc("s3", "revoke", "signed-ana", "bob").returncode == 0
    for method, url, body in urls:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=body, method=method))
        assert (info.value.code, b"<Code>AccessDenied</Code>" in info.value.read()) == (403, True), url
    own = ana.generate_presigned_url("get_object", Params={"Bucket": "signed-ana", "Key": "k"})
    assert urllib.request.urlopen(own).read() == b"ana's"
    assert gateway.node.xsc("s3", "keys", "rm", ana_key["access_key"]).returncode == 0
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(own)
    assert (info.value.code, b"<Code>InvalidAccessKeyId</Code>" in info.value.read()) == (403, True)
    exported = export_index(gateway.node)
    (bucket,) = [b for b in exported["buckets"] if b["name"] == "signed-ana"]
    assert list(bucket["objects"]) == ["k"] and bucket["objects"]["k"]["size"] == len(b"ana's")
    assert uid not in {u["id"] for u in exported["uploads"]}  # the revoke aborted what bob began there


def test_a_user_that_may_not_write_a_bucket_is_denied_before_its_copy_or_its_condition_is_judged(gateway) -> None:
    """A copy of an object onto itself, a copy or a put with a condition, by a user with no grant or only a read one:
    AccessDenied, as S3 judges access first, not InvalidRequest or PreconditionFailed; a request signed with the
    owner's access key and another's secret is refused; the owner's object stays as it was."""
    import urllib.error
    import urllib.request

    ana_key, bob_key = create_key(gateway.node.data_dir, "ana"), create_key(gateway.node.data_dir, "bob")
    ana, bob = boto3_client(gateway.front.url, ana_key), boto3_client(gateway.front.url, bob_key)
    assert gateway.node.xsc("s3", "fund", "ana", "5").returncode == 0
    ana.create_bucket(Bucket="cond-ana")
    etag = ana.put_object(Bucket="cond-ana", Key="k", Body=b"ana's")["ETag"]
    for grant in (None, "read"):
        if grant:
            assert gateway.node.xsc("s3", "grant", "cond-ana", "bob", grant).returncode == 0
        for call in (lambda: bob.copy_object(Bucket="cond-ana", Key="k", CopySource="cond-ana/k"),
                     lambda: bob.copy_object(Bucket="cond-ana", Key="n", CopySource="cond-ana/k",
                                             CopySourceIfMatch='"0"'),
                     lambda: bob.put_object(Bucket="cond-ana", Key="k", Body=b"bob's", IfNoneMatch="*"),
                     lambda: bob.put_object(Bucket="cond-ana", Key="k", Body=b"bob's", IfMatch='"0"'),
                     lambda: bob.put_object(Bucket="cond-ana", Key="k", Body=b"bob's", IfMatch=etag)):
            assert refused(call) == ("AccessDenied", 403), grant
    forged = boto3_client(gateway.front.url, {"access_key": ana_key["access_key"], "secret_key": bob_key["secret_key"]})
    assert refused(lambda: forged.put_object(Bucket="cond-ana", Key="k", Body=b"bob's")) \
        == ("SignatureDoesNotMatch", 403)
    url = forged.generate_presigned_url("delete_object", Params={"Bucket": "cond-ana", "Key": "k"}, ExpiresIn=600)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE"))
    assert info.value.code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in info.value.read()
    assert [o["Key"] for o in ana.list_objects_v2(Bucket="cond-ana")["Contents"]] == ["k"]
    kept = ana.get_object(Bucket="cond-ana", Key="k")
    assert (kept["Body"].read(), kept["ETag"]) == (b"ana's", etag)


def test_a_user_that_may_not_read_a_bucket_is_denied_whatever_version_it_names(gateway) -> None:
    """GetObject, HeadObject and DeleteObject with `?versionId=`, and a copy's or a part's `x-amz-copy-source` with
    one, by a user with no grant on the bucket: AccessDenied, whatever the version (null, an id of S3's shape, a
    malformed one) and whether the key is there or not, as S3 judges access first; once granted read, the version is
    judged (null is the object, another id NoSuchVersion or InvalidArgument), and a delete still needs write."""
    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
    for user in ("ana", "bob"):
        assert gateway.node.xsc("s3", "fund", user, "5").returncode == 0
    ana.create_bucket(Bucket="ver-ana")
    ana.put_object(Bucket="ver-ana", Key="k", Body=b"ana's")
    bob.create_bucket(Bucket="ver-bob")
    upload = bob.create_multipart_upload(Bucket="ver-bob", Key="m")["UploadId"]
    issued = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH"  # the shape of S3's ids, no version's here

    def calls(key: str, version: str):
        source = {"Bucket": "ver-ana", "Key": key, "VersionId": version}
        return (lambda: bob.get_object(Bucket="ver-ana", Key=key, VersionId=version),
                lambda: bob.head_object(Bucket="ver-ana", Key=key, VersionId=version),
                lambda: bob.copy_object(Bucket="ver-bob", Key="c", CopySource=source),
                lambda: bob.upload_part_copy(Bucket="ver-bob", Key="m", UploadId=upload, PartNumber=1,
                                             CopySource=source),
                lambda: bob.delete_object(Bucket="ver-ana", Key=key, VersionId=version))

    for key in ("k", "absent"):
        for version in ("null", issued, "1"):
            for i, call in enumerate(calls(key, version)):
                assert refused(call) == ("403" if i == 1 else "AccessDenied", 403), (key, version, i)
            answer = bob.delete_objects(Bucket="ver-ana", Delete={"Objects": [{"Key": key, "VersionId": version}]})
            assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [(key, "AccessDenied")], version
    assert gateway.node.xsc("s3", "grant", "ver-ana", "bob", "read").returncode == 0
    get, head, copy, part, delete = calls("k", "null")
    assert get()["Body"].read() == b"ana's" and head()["ContentLength"] == 5
    copy()
    part()
    assert bob.get_object(Bucket="ver-bob", Key="c")["Body"].read() == b"ana's"
    assert refused(delete) == ("AccessDenied", 403)
    for version, code in ((issued, ("NoSuchVersion", 404)), ("1", ("InvalidArgument", 400))):
        get, head, copy, part, delete = calls("k", version)
        for call in (get, copy, part):
            assert refused(call) == code, version
        assert refused(head) == (str(code[1]), code[1])
        assert refused(delete) == ("AccessDenied", 403)
    assert ana.get_object(Bucket="ver-ana", Key="k")["Body"].read() == b"ana's"


def test_delete_objects_a_user_may_not_write_answers_access_denied_for_each_key_and_deletes_nothing(gateway) -> None:
    """S3 judges DeleteObjects key by key: a user without write to the bucket (a reader, or one with no grant) gets 200
    with an AccessDenied <Error> for each key, quiet or not, and every object stays."""
    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
    assert gateway.node.xsc("s3", "fund", "ana", "5").returncode == 0
    ana.create_bucket(Bucket="del-ana")
    for key in ("a", "b"):
        ana.put_object(Bucket="del-ana", Key=key, Body=b"ana's")
    objects = {"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "absent"}]}
    for grant in (None, "read"):
        if grant:
            assert gateway.node.xsc("s3", "grant", "del-ana", "bob", grant).returncode == 0
        for quiet in (False, True):
            answer = bob.delete_objects(Bucket="del-ana", Delete={**objects, "Quiet": quiet})
            assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200 and "Deleted" not in answer
            assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [
                ("a", "AccessDenied"), ("b", "AccessDenied"), ("absent", "AccessDenied")], (grant, quiet)
            assert "may not write the bucket 'del-ana'" in answer["Errors"][0]["Message"]
    assert [o["Key"] for o in ana.list_objects_v2(Bucket="del-ana")["Contents"]] == ["a", "b"]
    assert refused(lambda: bob.delete_objects(Bucket="del-none", Delete=objects)) == ("NoSuchBucket", 404)
    assert gateway.node.xsc("s3", "grant", "del-ana", "bob", "write").returncode == 0
    answer = bob.delete_objects(Bucket="del-ana", Delete=objects)
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["a", "absent", "b"] and "Errors" not in answer
    assert ana.list_objects_v2(Bucket="del-ana").get("Contents", []) == []


def test_an_uploads_parts_are_listed_and_it_is_aborted_by_who_began_it_or_the_buckets_owner(gateway) -> None:
    """S3's defaults: a reader of a bucket lists its uploads; an upload's parts are listed, and it is aborted, by the
    user who began it and by the bucket's owner, not by another user the owner let write (who may upload its parts
    and complete it, as s3:PutObject does)."""
    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
    cid = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "cid"))
    for user in ("ana", "bob"):
        assert gateway.node.xsc("s3", "fund", user, "5").returncode == 0
    ana.create_bucket(Bucket="mpu-ana")
    assert gateway.node.xsc("s3", "grant", "mpu-ana", "bob", "write").returncode == 0
    assert gateway.node.xsc("s3", "grant", "mpu-ana", "cid", "read").returncode == 0
    anas = ana.create_multipart_upload(Bucket="mpu-ana", Key="a")["UploadId"]
    ana.upload_part(Bucket="mpu-ana", Key="a", UploadId=anas, PartNumber=1, Body=b"ana's")
    bobs = bob.create_multipart_upload(Bucket="mpu-ana", Key="b")["UploadId"]
    bob.upload_part(Bucket="mpu-ana", Key="b", UploadId=bobs, PartNumber=1, Body=b"bob's")
    assert {u["UploadId"] for u in cid.list_multipart_uploads(Bucket="mpu-ana")["Uploads"]} == {anas, bobs}
    for who, key, uid in ((ana, "a", anas), (bob, "b", bobs), (ana, "b", bobs)):
        assert len(who.list_parts(Bucket="mpu-ana", Key=key, UploadId=uid)["Parts"]) == 1
    for call in (lambda: bob.list_parts(Bucket="mpu-ana", Key="a", UploadId=anas),
                 lambda: bob.abort_multipart_upload(Bucket="mpu-ana", Key="a", UploadId=anas),
                 lambda: cid.list_parts(Bucket="mpu-ana", Key="a", UploadId=anas),
                 lambda: cid.list_parts(Bucket="mpu-ana", Key="b", UploadId=bobs),
                 lambda: cid.abort_multipart_upload(Bucket="mpu-ana", Key="b", UploadId=bobs)):
        assert refused(call) == ("AccessDenied", 403)
    etag = bob.upload_part(Bucket="mpu-ana", Key="a", UploadId=anas, PartNumber=1, Body=b"bob's")["ETag"]
    assert [p["ETag"] for p in ana.list_parts(Bucket="mpu-ana", Key="a", UploadId=anas)["Parts"]] == [etag]
    assert gateway.node.xsc("s3", "grant", "mpu-ana", "bob", "read").returncode == 0
    assert len(bob.list_parts(Bucket="mpu-ana", Key="b", UploadId=bobs)["Parts"]) == 1  # still the one who began it
    assert refused(lambda: bob.upload_part(Bucket="mpu-ana", Key="b", UploadId=bobs, PartNumber=2, Body=b"x")) \
        == ("AccessDenied", 403)
    bob.abort_multipart_upload(Bucket="mpu-ana", Key="b", UploadId=bobs)  # what it began, it may end
    ana.abort_multipart_upload(Bucket="mpu-ana", Key="a", UploadId=anas)
    assert ana.list_multipart_uploads(Bucket="mpu-ana").get("Uploads", []) == []


@pytest.mark.parametrize("in_node", [False, True], ids=["front", "in-node"])
def test_a_user_past_its_buckets_or_its_uploads_in_progress_is_refused_and_others_are_not(tmp_path, in_node) -> None:
    gateway = Gateway(tmp_path, {"XSC_NODE_S3_MAX_BUCKETS": "2", "XSC_NODE_S3_MAX_UPLOADS": "2"},
                      in_node=in_node).start()
    try:
        ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
        bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
        ana.create_bucket(Bucket="ana-1")
        ana.create_bucket(Bucket="ana-2")
        ana.create_bucket(Bucket="ana-2")  # one's own again: 200, and no new bucket
        with pytest.raises(ClientError) as info:
            ana.create_bucket(Bucket="ana-3")
        assert code_of(info) == ("TooManyBuckets", 400)
        said = info.value.response["Error"]["Message"]  # what boto3 shows: the refusal and the way out of it
        assert "ana" in said and said.endswith("(delete one first (DeleteBucket))"), said
        bob.create_bucket(Bucket="bob-1")  # a count of one's own
        ana.delete_bucket(Bucket="ana-1")
        ana.create_bucket(Bucket="ana-3")
        assert sorted(b["Name"] for b in ana.list_buckets()["Buckets"]) == ["ana-2", "ana-3"]

        first = ana.create_multipart_upload(Bucket="ana-2", Key="a")["UploadId"]
        ana.create_multipart_upload(Bucket="ana-3", Key="b")
        with pytest.raises(ClientError) as info:
            ana.create_multipart_upload(Bucket="ana-2", Key="c")
        assert code_of(info) == ("QuotaExceeded", 403)
        assert "complete or abort some (ListMultipartUploads lists them)" in info.value.response["Error"]["Message"]
        bob.create_multipart_upload(Bucket="bob-1", Key="a")
        ana.abort_multipart_upload(Bucket="ana-2", Key="a", UploadId=first)
        ana.create_multipart_upload(Bucket="ana-2", Key="c")
        assert refused(lambda: ana.create_multipart_upload(Bucket="ana-2", Key="d")) == ("QuotaExceeded", 403)
        assert len(ana.list_multipart_uploads(Bucket="ana-2")["Uploads"]) == 1
    finally:
        gateway.stop()


def test_an_import_naming_another_users_file_leaves_it_out_and_the_file_stays(in_node_gateway, tmp_path) -> None:
    """An export someone gave the node's owner names ana's object's file as mallory's object and as a part of
    mallory's upload: the import leaves both out and says so, and mallory's delete and abort remove nothing of ana's."""
    node = in_node_gateway.node
    ana = boto3_client(in_node_gateway.front.url, create_key(node.data_dir, "ana"))
    mallory = boto3_client(in_node_gateway.front.url, create_key(node.data_dir, "mallory"))
    assert node.xsc("s3", "fund", "ana", "5").returncode == 0
    ana.create_bucket(Bucket="caps-ana")
    ana.put_object(Bucket="caps-ana", Key="diary", Body=b"ana's diary")
    (held,) = [b for b in export_index(node)["buckets"] if b["name"] == "caps-ana"]
    record = held["objects"]["diary"]
    part = {"number": 1, "cap": record["parts"][0]["cap"], "size": record["size"], "etag": record["etag"],
            "modified": 0}
    hostile = {"version": 1, "buckets": [{"name": "caps-mallory", "created": 0, "owner": "mallory", "grants": {},
                                          "objects": {"mine": record}}],
               "uploads": [{"id": "c0ffee", "bucket": "caps-mallory", "key": "big", "created": time.time(),
                            "user": "mallory", "parts": [part]}]}
    (tmp_path / "hostile.json").write_text(json.dumps(hostile))
    result = node.xsc("s3", "import-index", str(tmp_path / "hostile.json"))
    assert result.returncode == 0, result.stderr
    mallory.delete_object(Bucket="caps-mallory", Key="mine")
    with contextlib.suppress(ClientError):  # NoSuchUpload once the fix left it out with its part
        mallory.abort_multipart_upload(Bucket="caps-mallory", Key="big", UploadId="c0ffee")
    assert ana.get_object(Bucket="caps-ana", Key="diary")["Body"].read() == b"ana's diary"
    assert b"left out 2 objects or parts naming a file another record here refers to" in result.stderr


def test_an_import_naming_a_file_of_the_nodes_own_leaves_it_out_and_the_file_stays(in_node_gateway, tmp_path) -> None:
    """An export naming a file `xsc store put` stored: the import leaves those objects out, and the completed upload
    naming one, and names the first ten (then how many more), so no DeleteObject can remove the file and a retried
    Complete names no object."""
    node = in_node_gateway.node
    put = node.xsc("store", "put", "-", "--name", "holiday.jpg", input=b"the user's own")
    assert put.returncode == 0, put.stderr
    cap = put.stdout.decode().strip()
    record = {"parts": [{"cap": cap, "size": 14}], "size": 14, "etag": "e", "content_type": "image/jpeg",
              "modified": 0}
    export = {"version": 1, "buckets": [{"name": "own-files", "created": 0, "owner": "xsc", "grants": {},
                                         "objects": {"holiday": record, **{f"copy-{n:02}": record
                                                                           for n in range(11)}}}]}
    (tmp_path / "own.json").write_text(json.dumps(export))
    result = node.xsc("s3", "import-index", str(tmp_path / "own.json"))
    assert result.returncode == 0, result.stderr
    named = [line for line in result.stderr.splitlines() if line.startswith(b"left out object own-files/")]
    assert len(named) == 10 and all(b": its file is one of this node's own files" in line for line in named), named
    assert b"left out 2 more records so (not-s3)" in result.stderr, result.stderr
    export["buckets"][0]["objects"] = {"holiday": record}
    export["completed"] = {"c0ffee": {"bucket": "own-files", "key": "holiday", "etag": "e", "modified": 0}}
    (tmp_path / "own.json").write_text(json.dumps(export))
    result = node.xsc("s3", "import-index", str(tmp_path / "own.json"))
    assert b"left out completed upload c0ffee of object own-files/holiday: its file is one of this node's own" \
        in result.stderr, result.stderr
    s3 = in_node_gateway.client()
    with pytest.raises(ClientError, match="NoSuchUpload"):
        s3.complete_multipart_upload(Bucket="own-files", Key="holiday", UploadId="c0ffee",
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "e"}]})
    s3.delete_object(Bucket="own-files", Key="holiday")
    assert node.xsc("store", "get", cap).stdout == b"the user's own"


def test_grant_refusals_are_one_line(gateway) -> None:
    create_key(gateway.node.data_dir, "gus")
    result = gateway.node.xsc("s3", "grant", "no-such-bucket-for-grants", "gus", "read")
    assert result.returncode != 0 and result.stderr.count(b"\n") == 1 and b"no-such-bucket-for-grants" in result.stderr
    result = gateway.node.xsc("s3", "grant", "u-x", "gus", "admin")
    assert result.returncode != 0
    gateway.client().create_bucket(Bucket="u-typo")
    for command in (("grant", "u-typo", "guss", "write"), ("fund", "guss", "1")):  # no key is the user guss's
        result = gateway.node.xsc("s3", *command)
        assert result.returncode != 0 and result.stderr.count(b"\n") == 1, result.stderr
        assert b"'gus'" not in result.stderr and b"xsc s3 keys create --user guss" in result.stderr, result.stderr
    assert gateway.node.xsc("s3", "grant", "u-typo", "gus", "write").returncode == 0
    for bucket in ("u typo", "u-typo?x=1", "../v1", "u-typo/grants/gus", ""):  # never sent as another route's path
        for command in (("grant", bucket, "gus", "read"), ("revoke", bucket, "gus")):
            result = gateway.node.xsc("s3", *command)
            assert result.returncode == 1 and result.stderr.count(b"\n") == 1, result.stderr
            assert b"is not a valid bucket name" in result.stderr, result.stderr
    gateway.client().create_bucket(Bucket="u-kept")
    for bucket in ("u-kept#", "u-kept?"):  # as a path, each would name the bucket itself, and DELETE remove it
        assert gateway.node.xsc("s3", "revoke", bucket, "gus").returncode == 1
    gateway.client().head_bucket(Bucket="u-kept")
    result = gateway.node.xsc("s3", "revoke", "u-typo", "guss")  # a mistyped name takes nothing back, and says so
    assert result.returncode == 0 and result.stderr.decode() == \
        "guss had no grant on u-typo: nothing to take back (granted there: gus write)\n", result.stderr
    assert gateway.node.xsc("s3", "revoke", "u-typo", "gus").stderr == b"gus has no grant on u-typo now\n"


def test_only_a_buckets_owner_deletes_it_and_a_user_granted_write_is_told_so(gateway) -> None:
    ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
    hal = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "hal"))
    ana.create_bucket(Bucket="u-owned")
    assert gateway.node.xsc("s3", "grant", "u-owned", "hal", "write").returncode == 0
    with pytest.raises(ClientError) as info:
        hal.delete_bucket(Bucket="u-owned")
    assert code_of(info) == ("AccessDenied", 403)
    said = info.value.response["Error"]["Message"]
    assert said.startswith("only the owner of the bucket 'u-owned' may delete it, not user 'hal'"), said
    assert "xsc s3 grant" not in said  # no grant lets another user delete it
    ana.delete_bucket(Bucket="u-owned")


def _balances(gateway) -> dict[str, int]:
    listed = gateway.node.xsc("s3", "users", "--json")
    assert listed.returncode == 0, listed.stderr
    return {u["user"]: u["balance"] for u in json.loads(listed.stdout)}


def test_each_users_puts_are_paid_from_its_own_account_and_an_account_that_cannot_pay_refuses(gateway) -> None:
    cid, dan, eve = (boto3_client(gateway.front.url, create_key(gateway.node.data_dir, u)) for u in ("cid", "dan", "eve"))
    for user in ("cid", "dan"):
        funded = gateway.node.xsc("s3", "fund", user, "5")
        assert funded.returncode == 0 and b"5.000000 credits" in funded.stdout, funded
    start = _balances(gateway)
    assert start["cid"] == start["dan"] == 5_000_000 and start["eve"] == 0
    cid.create_bucket(Bucket="pay-cid")
    cid.put_object(Bucket="pay-cid", Key="a", Body=b"c" * 100_000)
    after_cid = _balances(gateway)
    assert 0 < 5_000_000 - after_cid["cid"] and after_cid["dan"] == 5_000_000 and after_cid["eve"] == 0
    dan.create_bucket(Bucket="pay-dan")
    dan.put_object(Bucket="pay-dan", Key="a", Body=b"d" * 100_000)
    dan.put_object(Bucket="pay-dan", Key="b", Body=b"d" * 100_000)
    after_dan = _balances(gateway)
    assert after_dan["cid"] == after_cid["cid"] and after_dan["dan"] < 5_000_000
    # Each put's charge is a transfer signed by the user's account to the node's, in its history.
    account = json.loads(gateway.node.xsc("s3", "users", "--json").stdout)
    dan_id = next(u["account"] for u in account if u["user"] == "dan")
    history = gateway.node.xsc("ledger", "history", "--account", dan_id, "--json")
    assert history.returncode == 0, history.stderr
    assert sum(e["job"].startswith("s3:put:") for e in json.loads(history.stdout)) == 2, history.stdout
    # What the ledger shows it may spend is what it was funded: a user's account has no credit line.
    balance = json.loads(gateway.node.xsc("ledger", "balance", dan_id, "--json").stdout)
    assert (balance["role"], balance["credit_limit"], balance["available"]) == ("s3 user dan", 0, after_dan["dan"])
    (listed,) = [a for a in json.loads(gateway.node.xsc("ledger", "accounts", "--json").stdout) if a["account"] == dan_id]
    assert (listed["credit_limit"], listed["available"]) == (0, after_dan["dan"]), listed

    eve.create_bucket(Bucket="pay-eve")
    with pytest.raises(ClientError) as info:
        eve.put_object(Bucket="pay-eve", Key="a", Body=b"e" * 100_000)
    assert code_of(info) == ("AccessDenied", 403)
    assert "xsc s3 fund eve" in info.value.response["Error"]["Message"], info.value.response["Error"]
    assert refused(lambda: eve.head_object(Bucket="pay-eve", Key="a"))[1] == 404
    assert _balances(gateway)["eve"] == 0
    assert gateway.node.xsc("ledger", "verify").returncode == 0


def test_funding_and_charging_refusals(gateway) -> None:
    import urllib.error
    import urllib.request

    create_key(gateway.node.data_dir, "fay")
    for args in (("BAD/user", "1"), ("xsc", "1"), ("fay", "1000")):  # 1000: past the node's own credit
        result = gateway.node.xsc("s3", "fund", *args)
        assert result.returncode != 0 and result.stderr.count(b"\n") == 1, (args, result.stderr)
    for body in (b'{"capability": 7, "amount": 1}', b'{"capability": "xsc:chk:nope", "amount": 1}',
                 b'{"capability": "x", "amount": -1}'):
        request = urllib.request.Request(gateway.node.url + "/v1/s3/accounts/fay/charge", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {gateway.node.token}",
                                                  "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request)
        assert info.value.code == 400, (body, info.value.read())
    assert _balances(gateway).get("fay", 0) == 0
    # No transfer of nothing, nor of less, is signed into the ledger: the command refuses it as the amount it is
    # (exit 2, a usage error, a negative one not taken for an option), and so does the node, asked through its API.
    usage = b"usage: xsc s3 fund [OPTIONS] USER CREDITS (more: xsc s3 fund --help)\n"
    for amount in ("0", "-1", "-0.5"):
        result = gateway.node.xsc("s3", "fund", "fay", amount)
        assert result.returncode == 2 and result.stderr == b"xsc: usage error: invalid value for 'CREDITS': the " \
            b"amount must be positive, at least 0.000001 credits, not " + amount.encode() + b"\n" + usage, result.stderr
    result = gateway.node.xsc("s3", "fund", "fay", "lots")
    assert result.returncode == 2 and result.stderr == b"xsc: usage error: invalid value for 'CREDITS': not an " \
        b"amount of credits: 'lots' (e.g. 10 or 0.5 (6 decimals at most))\n" + usage, result.stderr
    request = urllib.request.Request(gateway.node.url + "/v1/s3/accounts/fay/fund", data=b'{"amount": 0}',
                                     method="POST", headers={"Authorization": f"Bearer {gateway.node.token}",
                                                             "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 400 and b"a funding moves at least 0.000001 credits, not 0" in info.value.read()
    (fay,) = [u for u in json.loads(gateway.node.xsc("s3", "users", "--json").stdout) if u["user"] == "fay"]
    assert json.loads(gateway.node.xsc("ledger", "balance", fay["account"], "--json").stdout)["seq"] == 0


def _slowed_down(client) -> dict:
    """The SlowDown refusal a burst of ListBuckets from `client` runs into (its response)."""
    for _ in range(200):
        try:
            client.list_buckets()
        except ClientError as err:
            return err.response
    raise AssertionError("200 requests in a burst were never slowed down")


@pytest.mark.parametrize("in_node", [False, True], ids=["front", "in-node"])
def test_a_user_past_the_rate_limit_is_told_to_slow_down_and_others_are_served(tmp_path, in_node) -> None:
    gateway = Gateway(tmp_path, {"XSC_NODE_USER_RATE_LIMIT": "3"}, in_node=in_node).start()
    try:
        ana = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "ana"))
        bob = boto3_client(gateway.front.url, create_key(gateway.node.data_dir, "bob"))
        refusal = _slowed_down(ana)
        assert (refusal["Error"]["Code"], refusal["ResponseMetadata"]["HTTPStatusCode"]) == ("SlowDown", 503)
        assert int(refusal["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1
        if in_node:  # each user has a rate of its own at the node's listener: bob is served while ana waits
            assert bob.list_buckets()["Buckets"] == []
    finally:
        gateway.stop()


def test_a_put_told_to_continue_counts_once_against_its_users_rate(tmp_path) -> None:
    gateway = Gateway(tmp_path, {"XSC_NODE_USER_RATE_LIMIT": "3"}, in_node=True).start()  # bursts of 6
    try:
        s3 = gateway.client()
        s3.create_bucket(Bucket="once")
        for index in range(5):  # botocore sends Expect: 100-continue with bodies of 1 MiB and more
            s3.put_object(Bucket="once", Key=f"k{index}", Body=b"c" * (1024 * 1024))
    finally:
        gateway.stop()
