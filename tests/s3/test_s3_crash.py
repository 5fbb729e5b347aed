"""kill -9 of the node in the middle of a multipart upload, of an overwrite, of small objects sent in groups and of
the expiry of unfinished uploads (these two also through the node's own S3 listener):
after a restart the bucket index and the stored files agree (no key pointing at a missing file, no orphan file)
and every completed object reads back exactly."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from tests.support.s3 import (FrontProcess, Gateway, InNodeFront, half_sent_put, index_and_files,  # noqa: E402
                              store_files)
from tests.support.waiting import eventually
from xsc.s3.core import checksums
from xsc.buckets.marks import FileMarks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # real processes and tools: slow on a loaded machine
MiB = 1024 * 1024


def _restart(gateway: Gateway) -> None:
    """The node after its kill -9, then a new front (which reconciles before it serves); a node that answers S3
    itself reconciles as it starts, in a loop of its own: its index and files agree once that has run."""
    gateway.node.start()
    if isinstance(gateway.front, InNodeFront):
        eventually(lambda: _agreeing(gateway), "the node's own front to reconcile", 120)
        return
    gateway.front.stop()
    gateway.front = FrontProcess(gateway.node.data_dir).start()


def _agreeing(gateway: Gateway) -> bool:
    referenced, files, index = index_and_files(gateway.node)
    return referenced == files and index["garbage"] == []


def _crc64nvme(data: bytes) -> str:
    digest = checksums.ALGORITHMS["crc64nvme"]()
    digest.update(data)
    return base64.b64encode(digest.digest()).decode()


def _agree(gateway: Gateway) -> dict:
    referenced, files, index = index_and_files(gateway.node)
    assert referenced <= files, f"keys pointing at missing files: {referenced - files}"
    assert files <= referenced, f"orphan files: {files - referenced}"
    assert index["garbage"] == []
    return index


@pytest.fixture
def gateway(tmp_path, request):
    """`xsc s3 serve` in front of the node, or (parametrized "in-node") the node's own S3 listener."""
    g = Gateway(tmp_path, in_node=getattr(request, "param", "front") == "in-node").start()
    yield g
    g.stop()


def test_kill_9_during_a_multipart_upload(gateway) -> None:
    s3 = gateway.client()
    s3.create_bucket(Bucket="crash")
    kept = {"small": os.urandom(1000), "medium": os.urandom(3 * MiB)}
    for key, data in kept.items():
        s3.put_object(Bucket="crash", Key=key, Body=data)
    done = s3.create_multipart_upload(Bucket="crash", Key="done")["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(1234)]
    etags = [s3.upload_part(Bucket="crash", Key="done", UploadId=done, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(parts, start=1)]
    s3.complete_multipart_upload(Bucket="crash", Key="done", UploadId=done, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]})
    kept["done"] = b"".join(parts)

    uid = s3.create_multipart_upload(Bucket="crash", Key="interrupted")["UploadId"]
    first = os.urandom(5 * MiB)
    etag1 = s3.upload_part(Bucket="crash", Key="interrupted", UploadId=uid, PartNumber=1, Body=first)["ETag"]
    conn = half_sent_put(gateway, f"/crash/interrupted?partNumber=2&uploadId={uid}", 8 * MiB)
    gateway.node.kill()
    try:
        conn.send(os.urandom(4 * MiB))
        status = conn.getresponse().status
    except OSError:
        status = None  # the front may close first: either way the part is not stored
    assert status in (None, 503)
    conn.close()

    _restart(gateway)
    _agree(gateway)
    s3 = gateway.client()
    for key, data in kept.items():
        assert hashlib.sha256(s3.get_object(Bucket="crash", Key=key)["Body"].read()).digest() == \
            hashlib.sha256(data).digest(), key
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="crash", Key="interrupted", UploadId=uid)["Parts"]] == [1]
    s3.complete_multipart_upload(Bucket="crash", Key="interrupted", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1}]})
    assert s3.get_object(Bucket="crash", Key="interrupted")["Body"].read() == first
    for key, data in [("done", kept["done"]), ("interrupted", first)]:  # S3's default, kept with the parts' CRCs
        got = s3.get_object(Bucket="crash", Key=key, ChecksumMode="ENABLED")  # boto3 checks the body against it
        assert got["Body"].read() == data and got["ChecksumCRC64NVME"] == _crc64nvme(data), key
    _agree(gateway)


def test_kill_9_during_an_overwrite(gateway) -> None:
    s3 = gateway.client()
    s3.create_bucket(Bucket="crash")
    old = os.urandom(2 * MiB)
    s3.put_object(Bucket="crash", Key="k", Body=old)
    # Killed while the new version streams in: the old one stays, whole.
    conn = half_sent_put(gateway, "/crash/k", 6 * MiB)
    gateway.node.kill()
    conn.close()
    _restart(gateway)
    _agree(gateway)
    s3 = gateway.client()
    assert s3.get_object(Bucket="crash", Key="k")["Body"].read() == old


def test_kill_9_as_an_overwrite_commits(gateway) -> None:
    """Killed once the new file is stored, somewhere between its store put, the index swap and the removal
    of the old file: afterwards the key holds the old or the new version exactly, and nothing is left over."""
    import threading

    s3 = gateway.client()
    s3.create_bucket(Bucket="crash")
    old, new = os.urandom(MiB), os.urandom(MiB + 7)
    s3.put_object(Bucket="crash", Key="k", Body=old)
    before = _stored_caps(gateway.node)
    writer = threading.Thread(target=lambda: _ignore(lambda: s3.put_object(Bucket="crash", Key="k", Body=new)))
    writer.start()
    eventually(lambda: _stored_caps(gateway.node) != before, "the new version to be stored", 120)
    gateway.node.kill()
    writer.join()
    _restart(gateway)
    _agree(gateway)
    got = gateway.client().get_object(Bucket="crash", Key="k")["Body"].read()
    assert got in (old, new)


def _ignore(call) -> None:
    try:
        call()
    except Exception:
        pass


def _stored_caps(node) -> set[str]:
    """The store's files, asked of the node's API directly (quicker than the CLI: the kill lands sooner)."""
    import urllib.request

    request = urllib.request.Request(node.url + "/v1/store/files", headers={"Authorization": f"Bearer {node.token}"})
    with urllib.request.urlopen(request) as response:
        return {f["capability"] for f in json.loads(response.read())["files"]}


def test_a_file_stored_but_never_recorded_is_removed_at_the_next_start_and_a_users_file_never_is(gateway) -> None:
    """What a crash between a file's put and its record leaves: a file named by the front, no record.  A file the
    user named like the front's (`--name s3:...`, a forged tag, or the very name of one of the front's files) is the
    user's: reconciliation never touches it."""
    s3 = gateway.client()
    s3.create_bucket(Bucket="crash")
    s3.put_object(Bucket="crash", Key="kept", Body=b"kept")
    name = FileMarks.load(gateway.node.data_dir).name("crash/lost")
    orphan = gateway.node.xsc("store", "put", "-", "--name", name, input=b"never recorded")
    assert orphan.returncode == 0
    precious = gateway.node.xsc("store", "put", "-", "--name", "s3:precious-backup", input=b"the user's backup")
    forged = gateway.node.xsc("store", "put", "-", "--name", "s3:crash/lost#" + "0" * 32, input=b"also the user's")
    mine = gateway.node.xsc("store", "put", "-", "--name", "holiday.jpg", input=b"not the gateway's")
    kept_name = next(f["name"] for f in store_files(gateway.node) if f["capability"] in index_and_files(gateway.node)[0])
    copied = gateway.node.xsc("store", "put", "-", "--name", kept_name, input=b"a copied name")
    gateway.front.stop()
    gateway.front = FrontProcess(gateway.node.data_dir).start()  # ready once it has reconciled
    assert orphan.stdout.decode().strip() not in _stored_caps(gateway.node)
    for kept, body in ((precious, b"the user's backup"), (forged, b"also the user's"), (mine, b"not the gateway's"),
                       (copied, b"a copied name")):
        assert gateway.node.xsc("store", "get", kept.stdout.decode().strip()).stdout == body
    assert gateway.client().get_object(Bucket="crash", Key="kept")["Body"].read() == b"kept"


@pytest.mark.parametrize("gateway", ["front", "in-node"], indirect=True)
def test_kill_9_while_small_objects_go_to_the_node_in_groups(gateway) -> None:
    """Killed while sixteen writers' small objects go in groups (POST /v1/s3/objects, or the node's own front's
    `put_group`): afterwards every object a writer was answered for reads back exactly, and the index and the files
    agree."""
    import threading

    s3 = gateway.client(max_pool_connections=16)
    s3.create_bucket(Bucket="crash")
    answered: dict[str, bytes] = {}
    stop = threading.Event()

    def writer(n: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            key, body = f"w{n}/{i}", os.urandom(100 + i % 900)
            try:
                s3.put_object(Bucket="crash", Key=key, Body=body)
            except Exception:  # the node is gone: what was not answered may or may not be there
                return
            answered[key] = body

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in writers:
        thread.start()
    eventually(lambda: len(answered) >= 200, "200 small objects to be stored", 120)
    gateway.node.kill()
    stop.set()
    for thread in writers:
        thread.join()
    _restart(gateway)
    _agree(gateway)
    s3 = gateway.client()
    for key, body in answered.items():
        assert s3.get_object(Bucket="crash", Key=key)["Body"].read() == body, key


@pytest.mark.parametrize("gateway", ["front", "in-node"], indirect=True)
def test_kill_9_while_unfinished_uploads_expire(gateway) -> None:
    """Uploads left unfinished past `node.s3_upload_expiry` are aborted and their parts' files removed; killed once
    the first of those files is gone, the node and its front start again and finish the expiry: no upload, part or
    part's file is left, the index and the files agree, and a completed object reads back exactly."""
    import threading

    s3 = gateway.client()
    s3.create_bucket(Bucket="crash")
    kept = os.urandom(3000)
    s3.put_object(Bucket="crash", Key="kept", Body=kept)
    for n in range(24):
        uid = s3.create_multipart_upload(Bucket="crash", Key=f"left/{n}")["UploadId"]
        for number in range(1, 2 + n % 2):
            s3.upload_part(Bucket="crash", Key=f"left/{n}", UploadId=uid, PartNumber=number, Body=os.urandom(20_000))
    uploads = index_and_files(gateway.node)[2]["uploads"]
    parts = {p["cap"] for u in uploads for p in u["parts"]}
    assert len(parts) == 36 and parts <= _stored_caps(gateway.node)
    # The node's own front expires them as it starts (its next round is minutes away): they must be past the
    # expiry by then, which is the clock's event.
    newest = max(u["created"] for u in uploads)
    eventually(lambda: time.time() > newest + 1.5, "the uploads to pass an expiry of a second", 10)

    def restart() -> threading.Thread | None:
        """The node again, its unfinished uploads expiring after a second, and the front, reconciling every second
        (`xsc s3 serve` reconciles before it serves: started on a thread, so that the kill can land meanwhile)."""
        gateway.front.stop()
        gateway.node.env["XSC_NODE_S3_UPLOAD_EXPIRY"] = "1s"
        gateway.node.start()
        if isinstance(gateway.front, InNodeFront):  # the node's own front reconciles as it starts
            return None
        gateway.front = FrontProcess(gateway.node.data_dir, extra=["--reconcile-interval", "1"])
        starting = threading.Thread(target=gateway.front.start)
        starting.start()
        return starting

    gateway.node.stop()
    starting = restart()
    eventually(lambda: not parts <= _stored_caps(gateway.node), "the expiry to remove a part's file", 120)
    gateway.node.kill()  # as the expiry removes the others
    if starting:
        starting.join()
    restart()
    eventually(lambda: not parts & _stored_caps(gateway.node) and _agreeing(gateway),
               "the expiry to end after the restart", 120)
    index = _agree(gateway)
    assert index["uploads"] == []
    s3 = gateway.client()
    assert s3.list_multipart_uploads(Bucket="crash").get("Uploads", []) == []
    assert s3.get_object(Bucket="crash", Key="kept")["Body"].read() == kept


@pytest.mark.parametrize("gateway", ["front", "in-node"], indirect=True)
def test_kill_9_during_a_delete_objects_of_many_small_objects(gateway) -> None:
    """Killed while one DeleteObjects removes 300 small objects' files (the node's own front removes them together,
    their synced writes per batch): after the restart each object is either there and reads back exactly or gone
    from the listing, the index and the files agree, and the store holds the shares of the objects left alone."""
    import threading

    s3 = gateway.client(max_pool_connections=16)
    s3.create_bucket(Bucket="crash")
    bodies = {f"d/{n}": os.urandom(200 + n) for n in range(300)}
    kept = {"kept": os.urandom(5000)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket="crash", Key=item[0], Body=item[1]),
                      [*bodies.items(), *kept.items()]))
    before = _stored_caps(gateway.node)
    deleting = threading.Thread(target=lambda: _ignore(lambda: s3.delete_objects(
        Bucket="crash", Delete={"Objects": [{"Key": key} for key in bodies], "Quiet": True})))
    deleting.start()
    eventually(lambda: _stored_caps(gateway.node) != before, "the delete's first files to leave the listing", 120)
    gateway.node.kill()
    deleting.join()
    _restart(gateway)
    _agree(gateway)
    s3 = gateway.client()
    listed = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash")
              for o in page.get("Contents", [])}
    assert "kept" in listed and listed <= {*bodies, *kept}
    for key in listed:
        assert s3.get_object(Bucket="crash", Key=key)["Body"].read() == {**bodies, **kept}[key], key
    import urllib.request

    def held() -> float:  # counted from the share records as the node started, and as it removes files
        metrics = urllib.request.Request(gateway.node.url + "/metrics",
                                         headers={"Authorization": f"Bearer {gateway.node.token}"})
        with urllib.request.urlopen(metrics) as response:
            return next(float(line.split()[1]) for line in response.read().decode().splitlines()
                        if line.startswith("xsc_storage_shares_held"))

    # The removals the kill cut short finish after the restart (StorageService.start), in the background.
    eventually(lambda: held() == 6 * len(listed), "the removals cut short to finish", 120)
