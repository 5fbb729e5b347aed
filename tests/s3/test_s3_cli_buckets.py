"""`xsc s3 mb|rb|ls`: buckets made, listed and removed from the command line, with `xsc s3 serve` in front of the node
and with the node answering S3 itself (`node.s3_listen`), whose front an S3 client sees them through."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")


@pytest.fixture
def name(request) -> str:
    """A bucket name of the test's own (the package's gateways are shared), one per gateway it runs on."""
    return "c-" + hashlib.md5(request.node.nodeid.encode()).hexdigest()[:12]


def _line(done) -> str:
    """The one line of a command that failed with exit 1, printing nothing on stdout."""
    assert done.returncode == 1 and done.stdout == b"", (done.stdout, done.stderr)
    (line,) = done.stderr.decode().splitlines()
    return line


def test_mb_makes_a_bucket_s3_clients_use_ls_lists_its_objects_and_rb_removes_it(both_gateways, name) -> None:
    node, s3 = both_gateways.node, both_gateways.client()
    made = node.xsc("s3", "mb", f"s3://{name}")
    assert made.returncode == 0 and made.stderr.decode() == f"made bucket {name}, owned by xsc\n", made.stderr
    again = node.xsc("s3", "mb", name, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["new"] is False, again.stdout
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # the key's user, xsc, owns it
    empty = node.xsc("s3", "ls", name)
    assert empty.returncode == 0 and empty.stdout.decode().startswith(f"no objects in {name} "), empty.stdout
    long_key = "deep/" + "k" * 300  # a key is never cut: it is typed back into S3 tools
    for key, body in (("a.txt", b"x" * 5), (long_key, b"y" * 3000)):
        s3.put_object(Bucket=name, Key=key, Body=body)
    listed = json.loads(node.xsc("s3", "ls", name, "--json").stdout)
    assert [(o["key"], o["size"]) for o in listed] == [("a.txt", 5), (long_key, 3000)], listed
    text = node.xsc("s3", "ls", name, env={"COLUMNS": "80"}).stdout.decode()
    assert long_key in text and "5 B" in text, text
    under = json.loads(node.xsc("s3", "ls", name, "--prefix", "deep/", "--json").stdout)
    assert [o["key"] for o in under] == [long_key]
    assert name in [b["name"] for b in json.loads(node.xsc("s3", "ls", "--json").stdout)]  # no BUCKET: the buckets
    s3.create_multipart_upload(Bucket=name, Key="half")

    assert _line(node.xsc("s3", "rb", name)) == (
        f"xsc: error: the bucket {name!r} is not empty (delete what it holds first: xsc s3 rb {name} --force)")
    assert len(json.loads(node.xsc("s3", "ls", name, "--json").stdout)) == 2  # refused: nothing deleted
    removed = node.xsc("s3", "rb", name, "--force")
    assert removed.returncode == 0, removed.stderr
    assert removed.stderr.decode().splitlines() == [
        f"removed bucket {name}; deleted 2 objects and aborted 1 multipart upload first",
        "2 files no object refers to now: removed from the store by the S3 front's next reconciliation "
        "(node.s3_listen, or xsc s3 serve)"], removed.stderr
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_rb_of_an_empty_bucket_and_a_bucket_s3_made_for_its_user(both_gateways, name) -> None:
    node, s3 = both_gateways.node, both_gateways.client()
    s3.create_bucket(Bucket=name)
    removed = node.xsc("s3", "rb", name)
    assert removed.returncode == 0 and removed.stderr.decode() == f"removed bucket {name}\n", removed.stderr
    assert _line(node.xsc("s3", "rb", name)) == \
        f"xsc: error: no bucket named {name!r} (the node's buckets and their owners: xsc s3 buckets)"
    with pytest.raises(s3.exceptions.NoSuchBucket) as gone:  # an S3 client is told the S3 way to make it
        s3.list_objects_v2(Bucket=name)
    assert gone.value.response["Error"]["Message"] == \
        f"no bucket named {name!r} (an S3 client makes it: CreateBucket, `aws s3 mb s3://BUCKET`)"


def test_mb_rb_and_ls_refuse_bad_input_in_one_line_naming_the_fix(both_gateways, name) -> None:
    node = both_gateways.node
    for args in (("mb", "Bad_Name"), ("rb", "Bad_Name"), ("ls", "Bad_Name"), ("mb", f"s3://{name}/key")):
        assert "is not a valid bucket name (3 to 63 characters" in _line(node.xsc("s3", *args))
    assert _line(node.xsc("s3", "mb", name, "--user", "nokey")).startswith(
        "xsc: error: no access key belongs to a user 'nokey' (the users: ")
    assert _line(node.xsc("s3", "mb", name, "--user", "Not A User")).startswith(
        "xsc: error: 'Not A User' is not a user name")
    assert _line(node.xsc("s3", "ls", name)) == \
        f"xsc: error: no bucket named {name!r} (the node's buckets and their owners: xsc s3 buckets)"
    assert _line(node.xsc("s3", "ls", "--prefix", "x")) == \
        "xsc: error: --prefix lists a bucket's objects: name the bucket (xsc s3 ls BUCKET --prefix PREFIX)"
    assert node.xsc("s3", "mb", name).returncode == 0  # owned by xsc: another user's mb of it is refused
    ana = json.loads(node.xsc("s3", "keys", "create", "--user", "ana", "--json").stdout)["user"]
    assert _line(node.xsc("s3", "mb", name, "--user", ana)) == \
        f"xsc: error: the bucket name {name!r} is taken by another user"
    assert node.xsc("s3", "rb", name).returncode == 0
