"""`xsc s3 keys create|ls|rm`, `xsc s3 export-index|import-index` and `xsc s3 serve`'s refusals, as users run them."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from xsc.errors import S3Error
from xsc.s3.access import SETTLED_NS, KeyRing, key_file

from tests.support.nodes import free_port, run_xsc


def test_keys_create_ls_rm(tmp_path) -> None:
    """Keys are made in a node's data dir, one started or one set up for a first start (`xsc config set`); a data dir
    that holds no node (a mistyped --data-dir) is refused, with nothing written there."""
    data_dir = str(tmp_path / "node")
    mistyped = run_xsc("--data-dir", data_dir, "s3", "keys", "create")
    assert mistyped.returncode == 1 and mistyped.stderr.count(b"\n") == 1, mistyped.stderr
    assert f"no node in {data_dir}".encode() in mistyped.stderr and mistyped.stdout == b""
    assert f"xsc node start --data-dir {data_dir}".encode() in mistyped.stderr and not (tmp_path / "node").exists()
    assert run_xsc("--data-dir", data_dir, "config", "set", "node.s3_listen", "127.0.0.1:9000").returncode == 0
    created = json.loads(run_xsc("--data-dir", data_dir, "s3", "keys", "create", "--json").stdout)
    assert set(created) == {"access_key", "secret_key", "user"} and len(created["access_key"]) == 20
    assert created["user"] == "xsc"  # the default user
    assert len(created["secret_key"]) == 40
    assert stat.S_IMODE((tmp_path / "node" / "s3-keys.json").stat().st_mode) == 0o600
    text = run_xsc("--data-dir", data_dir, "s3", "keys", "create").stdout.decode()
    assert "access key:" in text and "secret key:" in text
    listed = json.loads(run_xsc("--data-dir", data_dir, "s3", "keys", "ls", "--json").stdout)
    assert created["access_key"] in [k["access_key"] for k in listed] and len(listed) == 2
    assert "secret" not in json.dumps(listed)
    ana = json.loads(run_xsc("--data-dir", data_dir, "s3", "keys", "create", "--user", "ana", "--json").stdout)
    assert ana["user"] == "ana"
    assert {k["access_key"]: k["user"] for k in json.loads(
        run_xsc("--data-dir", data_dir, "s3", "keys", "ls", "--json").stdout)}[ana["access_key"]] == "ana"
    bad = run_xsc("--data-dir", data_dir, "s3", "keys", "create", "--user", "Not A User")
    assert bad.returncode != 0 and bad.stderr.count(b"\n") == 1 and b"not a user name" in bad.stderr
    unset = run_xsc("--data-dir", data_dir, "s3", "keys", "create", "--user", "")  # "$NEW_USER" left unset
    assert unset.returncode == 1 and unset.stderr == b"xsc: error: '' is not a user name " \
        b"(1 to 32 characters: a-z, 0-9, '.', '_', '-')\n", unset.stderr
    assert len(json.loads(run_xsc("--data-dir", data_dir, "s3", "keys", "ls", "--json").stdout)) == 3  # no operator key
    removed = run_xsc("--data-dir", data_dir, "s3", "keys", "rm", ana["access_key"])
    assert removed.returncode == 0 and removed.stderr.decode() == f"removed the access key {ana['access_key']} of user " \
        "ana: requests signed with it are refused from now on\n", removed.stderr
    result = run_xsc("--data-dir", data_dir, "s3", "keys", "rm", ana["access_key"])
    assert result.returncode == 1 and result.stderr.decode() == f"xsc: error: no access key {ana['access_key']!r} " \
        "(`xsc s3 keys ls` lists them)\n", result.stderr


def test_no_keys_and_no_users_yet_say_so_and_how_to_make_one(cli_node) -> None:
    node = cli_node()
    for args, said in [(("keys", "ls"), "no access keys yet (make one: xsc s3 keys create --user NAME)"),
                       (("users",), "no S3 users yet (make one: xsc s3 keys create --user NAME)")]:
        done = node.xsc("s3", *args)
        assert done.returncode == 0 and done.stderr == b"" and done.stdout.decode() == said + "\n", done.stdout
        assert json.loads(node.xsc("s3", *args, "--json").stdout) == []


def test_buckets_lists_each_bucket_its_owner_and_grants_in_80_columns_with_names_whole(cli_node, tmp_path) -> None:
    """`xsc s3 buckets`: what `xsc s3 grant` and `revoke` take, and what they point to for a bucket there is none of."""
    import urllib.request

    from tests.support.s3 import create_key

    node = cli_node()
    done = node.xsc("s3", "buckets")
    assert done.returncode == 0 and done.stdout == b"no buckets: none yet (make one: xsc s3 mb NAME)\n", done.stdout
    narrow = node.xsc("s3", "buckets", env={"COLUMNS": "80"}).stdout.decode()  # a sentence, between words
    assert max(len(line) for line in narrow.splitlines()) <= 80 and narrow.split() == done.stdout.decode().split()
    assert json.loads(node.xsc("s3", "buckets", "--json").stdout) == []
    long_bucket, long_user = "b" * 63, "u" * 32
    for user in ("ana", long_user):
        create_key(node.data_dir, user)
    for bucket, owner in (("photos", "xsc"), ("notes", "ana"), (long_bucket, long_user)):
        request = urllib.request.Request(f"{node.url}/v1/s3/buckets/{bucket}?user={owner}", method="PUT",
                                         headers={"Authorization": f"Bearer {node.token}"})
        assert urllib.request.urlopen(request).status == 201
    assert node.xsc("s3", "grant", "photos", "ana", "read").returncode == 0
    assert node.xsc("s3", "grant", "photos", long_user, "write").returncode == 0
    listed = json.loads(node.xsc("s3", "buckets", "--json").stdout)
    assert [(b["name"], b["owner"], b["grants"]) for b in listed] == [
        (long_bucket, long_user, {}), ("notes", "ana", {}), ("photos", "xsc", {"ana": "read", long_user: "write"})]
    text = node.xsc("s3", "buckets", env={"COLUMNS": "80"}).stdout.decode()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert long_bucket in text and long_user in text and f"ana may read, {long_user} may write" in text, text
    mine = json.loads(node.xsc("s3", "buckets", "--user", "ana", "--json").stdout)
    assert [b["name"] for b in mine] == ["notes", "photos"]  # owned and granted
    for args in (("grant", "photo", "ana", "read"), ("revoke", "photo", "ana")):
        refused = node.xsc("s3", *args)
        said = b"xsc: error: no bucket named 'photo' (the node's buckets and their owners: xsc s3 buckets)\n"
        assert refused.returncode == 1 and refused.stderr == said, refused.stderr
    bad = node.xsc("s3", "buckets", "--user", "Not A User")
    assert bad.returncode == 1 and bad.stderr.count(b"\n") == 1 and b"not a user name" in bad.stderr
    made = {line.split()[0]: line.split()[-1] for line in node.xsc(
        "s3", "buckets", env={"COLUMNS": "200"}).stdout.decode().splitlines()[1:] if line.split()}
    assert made["notes"].startswith(time.strftime("%Y-", time.gmtime())), made
    export = tmp_path / "old.json"  # a bucket whose record says it was made at 0: when is not known
    export.write_text(json.dumps({"version": 1, "buckets": [{"name": "old", "created": 0, "objects": {}}]}))
    assert node.xsc("s3", "import-index", str(export)).returncode == 0
    made = {line.split()[0]: line.split()[-1] for line in node.xsc(
        "s3", "buckets", env={"COLUMNS": "200"}).stdout.decode().splitlines()[1:] if line.split()}
    assert made["old"] == "-", made
    listed = {b["name"]: b for b in json.loads(node.xsc("s3", "buckets", "--json").stdout)}
    assert listed["old"]["created"] is None and listed["notes"]["created"] > 0, listed


def test_a_request_s_user_is_the_one_the_key_file_named_as_its_secret_was_read(tmp_path) -> None:
    ring, other = KeyRing(key_file(tmp_path)), KeyRing(key_file(tmp_path))  # the front's, and the CLI's
    ana = other.create("ana")
    assert ring.secret(ana["access_key"]) == ana["secret_key"] and ring.user_as_read(ana["access_key"]) == "ana"
    other.remove(ana["access_key"])
    bob = other.create("bobby")  # a file of another size: its (mtime, size) stamp changes within a clock tick too
    assert ring.secret(ana["access_key"]) is None  # a removed key stops working at once
    assert ring.secret(bob["access_key"]) == bob["secret_key"] and ring.user_as_read(bob["access_key"]) == "bobby"


def test_a_key_the_file_no_longer_holds_is_refused_not_taken_for_the_operators(tmp_path) -> None:
    """The key file read again between a request's secret and its user (a removal landing in between) leaves the key
    without a user: it is refused as S3 refuses an unknown key, not served as the node's operator."""
    ring, other = KeyRing(key_file(tmp_path)), KeyRing(key_file(tmp_path))  # the front's, and the CLI's
    ana = other.create("ana")
    assert ring.secret(ana["access_key"]) == ana["secret_key"]
    other.remove(ana["access_key"])
    ring.list()  # the front reads the file again, as a later step of the same request might
    for access_key in (ana["access_key"], "XSCNEVERMADEANYWHERE"):
        with pytest.raises(S3Error) as info:
            ring.user_as_read(access_key)
        assert (info.value.s3_code, info.value.status) == ("InvalidAccessKeyId", 403)


def test_a_key_file_replaced_by_one_of_its_size_and_time_is_read_again(tmp_path) -> None:
    """Within one tick of the kernel's clock a removal and a creation can leave the file its size and its time."""
    path = key_file(tmp_path)
    ring, other = KeyRing(path), KeyRing(path)  # the front's, and the CLI's
    ana = other.create("ana")
    assert ring.secret(ana["access_key"]) == ana["secret_key"]
    before = path.stat()
    other.remove(ana["access_key"])
    bob = other.create("bob")  # as long a record as ana's
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert ring.secret(ana["access_key"]) is None
    assert ring.secret(bob["access_key"]) == bob["secret_key"]


def test_a_key_file_long_unchanged_is_only_looked_at(tmp_path) -> None:
    """Each request stats the file; it reads it again only when its stamp changed (or it changed just now)."""
    path = key_file(tmp_path)
    ring = KeyRing(path)
    ana = ring.create("ana")
    settled = time.time_ns() - 2 * SETTLED_NS
    os.utime(path, ns=(settled, settled))
    assert ring.secret(ana["access_key"]) == ana["secret_key"]
    path.write_text("x" * path.stat().st_size)  # not JSON: read again, it would fail
    os.utime(path, ns=(settled, settled))
    assert ring.secret(ana["access_key"]) == ana["secret_key"]


def test_export_index_writes_a_private_file_and_overwrites_one_only_with_force(node_process, tmp_path) -> None:
    node = node_process()
    (tmp_path / "backup").mkdir()
    out = tmp_path / "backup" / "index.json"
    result = node.xsc("s3", "export-index", "-o", str(out))
    assert result.returncode == 0 and b"wrote 0 buckets, 0 objects to " in result.stderr, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["buckets"] == []
    out.write_text("an older backup")
    refused = node.xsc("s3", "export-index", "-o", str(out))
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert b"already exists" in refused.stderr and b"--force" in refused.stderr
    assert out.read_text() == "an older backup" and sorted(p.name for p in out.parent.iterdir()) == ["index.json"]
    forced = node.xsc("s3", "export-index", "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(out.read_text())["buckets"] == [] and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["index.json"]


@pytest.mark.slow
def test_import_index_brings_an_export_back_and_a_retried_complete_answers_as_before(tmp_path) -> None:
    """`xsc s3 export-index` on one node, `xsc s3 import-index` on a fresh one: the buckets, objects and completed
    uploads come back, so a client that retries a Complete whose answer it did not hear (SDKs do) gets the answer
    the first node gave; run again, the import keeps what is there."""
    pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")
    from tests.support.s3 import Gateway

    first = Gateway(tmp_path / "first", in_node=True).start()
    second = Gateway(tmp_path / "second", in_node=True).start()
    try:
        s3 = first.client()
        s3.create_bucket(Bucket="kept")
        uid = s3.create_multipart_upload(Bucket="kept", Key="big", ChecksumAlgorithm="SHA256")["UploadId"]
        part = s3.upload_part(Bucket="kept", Key="big", UploadId=uid, PartNumber=1, Body=b"the only part",
                              ChecksumAlgorithm="SHA256")
        parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}]}
        answer = s3.complete_multipart_upload(Bucket="kept", Key="big", UploadId=uid, MultipartUpload=parts)
        out = tmp_path / "index.json"
        assert first.node.xsc("s3", "export-index", "-o", str(out)).returncode == 0
        result = second.node.xsc("s3", "import-index", str(out))
        assert result.returncode == 0, result.stderr
        assert b"imported 1 bucket, 1 object" in result.stderr and b"1 completed upload," in result.stderr
        again = second.client().complete_multipart_upload(Bucket="kept", Key="big", UploadId=uid,
                                                          MultipartUpload=parts)
        fields = ("ETag", "ChecksumSHA256", "ChecksumType")
        assert {k: again.get(k) for k in fields} == {k: answer.get(k) for k in fields} and answer["ChecksumSHA256"]
        assert second.client().head_object(Bucket="kept", Key="big")["ETag"] == answer["ETag"]
        rerun = second.node.xsc("s3", "import-index", str(out))
        assert rerun.returncode == 0 and b"imported 0 buckets, 0 objects" in rerun.stderr, rerun.stderr
        counted = json.loads(second.node.xsc("s3", "import-index", str(out), "--json").stdout)  # for scripts
        assert counted["buckets"] == counted["objects"] == counted["completed"] == 0 and counted["kept"] > 0, counted
        missing = second.node.xsc("s3", "import-index", str(tmp_path / "none.json"))
        assert missing.returncode != 0 and b"xsc s3 export-index -o FILE" in missing.stderr, missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1
    finally:
        first.stop()
        second.stop()


def test_serve_refuses_a_taken_port_and_a_missing_node(node_process, tmp_path) -> None:
    node = node_process()
    result = node.xsc("s3", "serve", "--listen", f"127.0.0.1:{node.port}", timeout=60)
    assert result.returncode == 1 and b"cannot listen on" in result.stderr
    result = run_xsc("--data-dir", str(tmp_path / "never"), "s3", "serve", "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1 and b"xsc node start" in result.stderr


def test_serve_from_a_data_dir_of_its_own_starts_with_a_copy_of_the_nodes_key_and_refuses_another(cli_node,
                                                                                                  tmp_path) -> None:
    """An `xsc s3 serve` on another host than its node, its data dir holding the node's API token and access keys:
    with a key of its own it refuses to start, in one line naming its key file and the command that copies the node's
    (the node would refuse every user's charge, 403); with a copy of the node's key it starts, the key checked."""
    import shutil

    from xsc.buckets.marks import FileMarks

    from tests.support.cli import error_line, xsc_in_process
    from tests.support.s3 import FrontProcess, create_key

    node = cli_node()
    create_key(node.data_dir)
    front = tmp_path / "front"
    front.mkdir()
    for name in ("api-token", "s3-keys.json"):
        shutil.copy(node.data_dir / name, front / name)
    mine = FileMarks.load(front).path  # a key made in the front's own data dir
    refused = xsc_in_process("--data-dir", str(front), "--node", node.url, "s3", "serve", "--listen",
                             f"127.0.0.1:{free_port()}")
    assert refused.stderr.decode().count("\n") == 1, refused.stderr
    assert error_line(refused) == f"xsc: error: {mine} is not the key of the node at {node.url}: the node would " \
        "refuse (403) to charge a user for any file this front stores (copy the node's key here: scp " \
        f"127.0.0.1:NODE_DATA_DIR/s3-files.key {mine}, then start xsc s3 serve again)"
    shutil.copy(node.data_dir / "s3-files.key", mine)
    started = FrontProcess(front, node=node.url).start()
    try:
        assert b"s3-files.key" not in started.log.read_bytes()  # checked, not skipped
    finally:
        started.stop()


@pytest.mark.slow
def test_serve_with_a_region_takes_signatures_for_it_and_tells_clients_of_another_which_it_is(tmp_path) -> None:
    """`xsc s3 serve` in the region of the node's `node.s3_region` (eu-west-1; `--region` to serve another): boto3 set
    for it works, and creating its own bucket again is 409 BucketAlreadyOwnedByYou there, as outside us-east-1 on S3;
    boto3 set as docs/s3.md sets it (us-east-1) is told the region (ListBuckets refused, naming it) and signs a
    bucket's requests again for it by itself; minio-py with no region set learns it from GetBucketLocation, which any
    region's signature may ask."""
    pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from minio import Minio

    from tests.support.s3 import Gateway, boto3_client, code_of

    refused = run_xsc("--data-dir", str(tmp_path / "none"), "s3", "serve", "--region", "EU West")
    assert refused.returncode == 1 and refused.stderr.count(b"\n") == 1, refused.stderr
    assert b"not a region name" in refused.stderr and b"xsc s3 serve --region us-east-1" in refused.stderr
    assert b"node.s3_region" in run_xsc("s3", "serve", "--help").stdout
    assert run_xsc("--data-dir", str(tmp_path / "node"), "config", "set", "node.s3_region", "eu-west-1").returncode == 0
    gateway = Gateway(tmp_path).start()
    try:
        key = gateway.key
        here = boto3.client("s3", endpoint_url=gateway.front.url, aws_access_key_id=key["access_key"],
                            aws_secret_access_key=key["secret_key"], region_name="eu-west-1",
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        here.create_bucket(Bucket="regional", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        here.put_object(Bucket="regional", Key="k", Body=b"here")
        assert here.get_bucket_location(Bucket="regional")["LocationConstraint"] == "eu-west-1"
        with pytest.raises(ClientError) as info:
            here.create_bucket(Bucket="regional", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        assert code_of(info) == ("BucketAlreadyOwnedByYou", 409)
        assert info.value.response["Error"]["BucketName"] == "regional"
        assert [b["Name"] for b in here.list_buckets()["Buckets"]] == ["regional"]
        documented = boto3_client(gateway.front.url, key)
        with pytest.raises(ClientError) as info:
            documented.list_buckets()
        assert code_of(info) == ("AuthorizationHeaderMalformed", 400)
        assert info.value.response["Error"]["Region"] == "eu-west-1"
        assert "expecting 'eu-west-1' (set the client's region to eu-west-1)" in info.value.response["Error"]["Message"]
        assert documented.get_object(Bucket="regional", Key="k")["Body"].read() == b"here"
        learning = Minio(gateway.front.url.removeprefix("http://"), access_key=key["access_key"],
                         secret_key=key["secret_key"], secure=False)
        assert [o.object_name for o in learning.list_objects("regional")] == ["k"]
    finally:
        gateway.stop()


def test_users_lists_every_user_with_keys_a_grant_or_credits(node_process) -> None:
    """`xsc s3 users` lists a user its keys are gone from while it holds credits or a grant."""
    import urllib.request

    from tests.support.s3 import create_key

    node = node_process()
    for user in ("ana", "gus"):
        create_key(node.data_dir, user)
    assert node.xsc("s3", "fund", "ana", "5").returncode == 0
    request = urllib.request.Request(node.url + "/v1/s3/buckets/shared", method="PUT",
                                     headers={"Authorization": f"Bearer {node.token}"})
    assert urllib.request.urlopen(request).status == 201
    assert node.xsc("s3", "grant", "shared", "gus", "read").returncode == 0
    ring = KeyRing(key_file(node.data_dir))
    for key in ring.list():
        ring.remove(key["access_key"])
    listed = {u["user"]: u for u in json.loads(node.xsc("s3", "users", "--json").stdout)}
    assert (listed["ana"]["balance"], listed["ana"]["keys"]) == (5_000_000, 0), listed
    assert listed["gus"]["keys"] == 0 and "xsc" in listed, listed  # granted; the bucket's owner
    assert b"ana" in node.xsc("s3", "users").stdout


def test_serve_tells_a_client_whose_node_stopped_only_that_the_service_is_unavailable(tmp_path) -> None:
    """An S3 client is anyone with a key: it is told ServiceUnavailable, which SDKs retry, and nothing of the
    operator's (the node's URL, its data dir); the command that starts the node goes to the front's log, said once
    for the many requests refused alike within seconds, not once for each."""
    from botocore.exceptions import ClientError

    from tests.support.s3 import Gateway, code_of

    gateway = Gateway(tmp_path).start()  # `xsc --data-dir DIR s3 serve`: a node of its own data dir
    try:
        s3 = gateway.client()
        s3.list_buckets()
        gateway.node.stop()
        with pytest.raises(ClientError) as refused:
            s3.list_buckets()
        assert code_of(refused) == ("ServiceUnavailable", 503)
        said = refused.value.response["Error"]["Message"]
        assert "service is unavailable" in said, said
        assert str(gateway.node.data_dir) not in said and str(gateway.node.port) not in said, said
        for _ in range(10):
            with pytest.raises(ClientError):
                s3.list_buckets()
        logged = gateway.front.log.read_text()
        assert f"(start it with: xsc node start --data-dir {gateway.node.data_dir})" in logged, logged[-2000:]
        assert logged.count("ServiceUnavailable") == 1, logged[-2000:]  # (boto3 sent each again, too)
    finally:
        gateway.stop()


def test_a_warning_said_again_within_seconds_is_counted_and_said_with_its_count_once_they_pass(caplog) -> None:
    from xsc.s3.server import _Warnings

    caplog.set_level("WARNING", logger="xsc.s3.server")
    warnings = _Warnings()
    for path in ("/a", "/b", "/c"):
        warnings.warn("ServiceUnavailable the node is not answering", f"GET {path}")
    warnings.warn("InternalError another", "GET /d")
    warnings.REPEAT = 0.0  # (as if its seconds had passed)
    warnings.warn("ServiceUnavailable the node is not answering", "GET /e")
    assert [r.getMessage() for r in caplog.records] == [
        "GET /a: ServiceUnavailable the node is not answering", "GET /d: InternalError another",
        "GET /e: ServiceUnavailable the node is not answering (and 2 requests more since it was last said)"]


def test_import_index_refuses_a_file_with_a_bad_record_whole_before_any_piece_is_imported(cli_node, tmp_path) -> None:
    """The command sends an export in pieces: a hand-edited or truncated file whose bad record (here a charge's row)
    comes in a later piece is refused, naming it, before the first piece is sent, so nothing of it is imported."""
    node = cli_node()
    padding = ["u" + str(n).zfill(30) for n in range(40_000)]  # more than one piece of funded users
    bad = {"version": 1, "buckets": [{"name": "early", "created": 0, "owner": "xsc"}], "funded": padding,
           "charged": [{"cap": "URI:CHK:x", "charge": "not hex", "user": "bob", "amount": "5"}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = node.xsc("s3", "import-index", str(path))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert b"a charge is {cap, charge: 16 hex digits" in result.stderr, result.stderr
    listed = node.xsc("s3", "buckets")
    assert listed.returncode == 0 and b"early" not in listed.stdout + listed.stderr, listed.stdout
