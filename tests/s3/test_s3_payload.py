"""A request body's checks (xsc/s3/payload.py): its digests taken beside the loop, in order, whatever the pieces; a
large body whose Content-MD5 is wrong refused and never stored, one whose Content-MD5 is right stored with that MD5
as its ETag, through `xsc s3 serve` and the node's own listener."""

from __future__ import annotations

import base64
import hashlib
import os
import random

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from botocore.exceptions import ClientError  # noqa: E402

from tests.support.s3 import code_of, store_files  # noqa: E402
from xsc.s3.payload import BATCH, Digests  # noqa: E402
from xsc.tasks import Workers  # noqa: E402

MiB = 1024 * 1024


@pytest.fixture
def workers():
    w = Workers(1, "test-digest")
    yield w
    w.shutdown()


async def test_digests_of_pieces_handed_to_the_thread_are_those_of_the_whole_body(workers) -> None:
    data, rng = os.urandom(5 * BATCH + 12345), random.Random(1)
    md5, sha, digests, at = hashlib.md5(), hashlib.sha256(), Digests(workers), 0
    while at < len(data):
        piece = data[at:at + rng.randrange(1, 300 * 1024)]
        await digests.add(sha, piece)
        await digests.add(md5, piece)
        at += len(piece)
    await digests.done()
    assert (md5.digest(), sha.digest()) == (hashlib.md5(data).digest(), hashlib.sha256(data).digest())


async def test_a_small_body_is_hashed_on_the_loop_as_it_is_done(workers) -> None:
    workers.shutdown()  # a hand-off to the thread would fail now
    md5, digests = hashlib.md5(), Digests(workers)
    await digests.add(md5, b"a small body")
    await digests.done()
    assert md5.digest() == hashlib.md5(b"a small body").digest()


@pytest.fixture(scope="module")
def gateway(both_gateways):
    return both_gateways


def _caps(gateway) -> set[str]:
    return {f["capability"] for f in store_files(gateway.node)}


def test_a_large_body_not_matching_its_content_md5_is_refused_and_stores_nothing(gateway, s3, bucket) -> None:
    data = os.urandom(3 * MiB + 5)
    wrong = base64.b64encode(hashlib.md5(data[:-1]).digest()).decode()
    before = _caps(gateway)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="lying", Body=data, ContentMD5=wrong)
    assert code_of(info) == ("BadDigest", 400)
    assert _caps(gateway) == before
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="lying")
    assert code_of(info)[1] == 404


def test_a_large_body_matching_its_content_md5_is_stored_with_its_md5_as_etag(gateway, s3, bucket) -> None:
    data = os.urandom(3 * MiB + 5)
    digest = hashlib.md5(data)
    s3.put_object(Bucket=bucket, Key="true", Body=data, ContentMD5=base64.b64encode(digest.digest()).decode())
    got = s3.get_object(Bucket=bucket, Key="true")
    assert got["ETag"] == f'"{digest.hexdigest()}"' and got["Body"].read() == data
