"""ListObjectsV2's continuation tokens through boto3, against a real node and its front: thousands of small keys paged
under prefixes and delimiters as S3 pages them, and a token refused as S3 refuses it (400 InvalidArgument, "The
continuation token provided is incorrect", ArgumentName continuation-token) when it is forged, altered, or given for
another bucket, prefix or delimiter."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")

from botocore.exceptions import ClientError  # noqa: E402

from tests.support.peers import api  # noqa: E402
from tests.support.s3 import code_of, listing_model  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # real processes and tools: slow on a loaded machine

# 2,600 keys of 1 byte: 20 prefixes of 10 folders of 13 keys (a delimiter rolls each folder up).
KEYS = [f"p{p:02d}/f{f}/k{k:02d}" for p in range(20) for f in range(10) for k in range(13)]


@pytest.fixture(scope="module")
def many(s3) -> str:
    s3.create_bucket(Bucket="tokens-many")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket="tokens-many", Key=key, Body=b"x"), KEYS))
    return "tokens-many"


@pytest.mark.parametrize("prefix, delimiter, size", [("", "", 1000), ("", "", 77), ("p03/", "", 9), ("", "/", 3),
                                                     ("p1", "/", 1), ("p07/", "/", 4), ("p07/f3/", "/", 5),
                                                     ("p1", "f", 2), ("nothing", "/", 10)])
def test_thousands_of_keys_page_by_their_tokens_as_s3_pages_them(s3, many, prefix, delimiter, size) -> None:
    contents, prefixes, pages = [], [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=many, Prefix=prefix, Delimiter=delimiter,
                                                             PaginationConfig={"PageSize": size}):
        pages += 1
        assert page["KeyCount"] <= size
        contents += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert (contents, prefixes) == listing_model(KEYS, prefix, delimiter)
    assert pages == max(1, -(-(len(contents) + len(prefixes)) // size))


def _refused(call) -> dict:
    with pytest.raises(ClientError) as info:
        call()
    assert code_of(info) == ("InvalidArgument", 400)
    error = info.value.response["Error"]
    assert error["Message"].startswith("The continuation token provided is incorrect"), error
    assert error["ArgumentName"] == "continuation-token", error
    return error


def test_a_token_goes_on_only_the_listing_that_gave_it(s3, many) -> None:
    first = s3.list_objects_v2(Bucket=many, Prefix="p02/", Delimiter="/", MaxKeys=3)
    token = first["NextContinuationToken"]
    again = [s3.list_objects_v2(Bucket=many, Prefix="p02/", Delimiter="/", MaxKeys=3, ContinuationToken=token)
             for _ in range(2)]  # stateless: as often as it is asked, the same next page
    assert [p["Prefix"] for p in again[0]["CommonPrefixes"]] == ["p02/f3/", "p02/f4/", "p02/f5/"]
    assert again[0]["CommonPrefixes"] == again[1]["CommonPrefixes"] and again[0]["ContinuationToken"] == token
    s3.create_bucket(Bucket="tokens-other")
    s3.put_object(Bucket="tokens-other", Key="p02/f9/k", Body=b"x")
    for other in ({"Bucket": "tokens-other", "Prefix": "p02/", "Delimiter": "/"},  # another bucket
                  {"Bucket": many, "Prefix": "p03/", "Delimiter": "/"},  # another prefix
                  {"Bucket": many, "Prefix": "p0", "Delimiter": "/"},  # a shorter one, whose keys it would skip
                  {"Bucket": many, "Prefix": "p02/", "Delimiter": "f"},  # another delimiter
                  {"Bucket": many, "Prefix": "p02/"}):  # none
        error = _refused(lambda: s3.list_objects_v2(MaxKeys=3, ContinuationToken=token, **other))
        assert "list again without it" in error["Message"], error


def test_a_forged_or_altered_token_is_refused(s3, many) -> None:
    token = s3.list_objects_v2(Bucket=many, MaxKeys=5)["NextContinuationToken"]
    raw = base64.urlsafe_b64decode(token)
    assert b"p00/f0/k04" not in raw[-16:]  # its last bytes are no key: a MAC
    forged = [base64.urlsafe_b64encode(b"p19/f9/k00\x00").decode(),  # a start key, as a token once was
              base64.urlsafe_b64encode(b"p19/f9/k00\x00" + raw[-16:]).decode(),  # another key, the MAC kept
              base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode(),  # one bit of its MAC changed
              token[:-4], "###", "x" * 2000]
    for bad in forged:
        _refused(lambda: s3.list_objects_v2(Bucket=many, MaxKeys=5, ContinuationToken=bad))
    assert len(s3.list_objects_v2(Bucket=many, MaxKeys=5, ContinuationToken=token)["Contents"]) == 5


def test_a_list_of_buckets_token_is_bound_to_its_prefix(s3) -> None:
    for name in ("tok-a-1", "tok-a-2", "tok-b-1", "tok-b-2"):
        s3.create_bucket(Bucket=name)
    token = s3.list_buckets(MaxBuckets=1, Prefix="tok-a-")["ContinuationToken"]
    assert [b["Name"] for b in s3.list_buckets(MaxBuckets=1, Prefix="tok-a-", ContinuationToken=token)["Buckets"]] \
        == ["tok-a-2"]
    for prefix in ("tok-b-", "tok-"):
        _refused(lambda: s3.list_buckets(MaxBuckets=1, Prefix=prefix, ContinuationToken=token))


def test_the_node_api_pages_by_tokens_bound_to_the_listing_and_refuses_others(gateway, many) -> None:
    """`start` and `next` of the node's own listing are tokens as the front's are: a plain position (what `start`
    was), an altered token and one of another prefix or delimiter are 400 problems; its own token resumes the listing."""
    path = f"/v1/s3/buckets/{many}/objects?prefix=p03/&max_keys=5"
    status, page = api(gateway.node, "GET", path)
    assert status == 200 and page["truncated"] and [k for k, _ in page["contents"]] == KEYS[3 * 130:3 * 130 + 5]
    status, more = api(gateway.node, "GET", f"{path}&start={quote(page['next'])}")
    assert status == 200 and [k for k, _ in more["contents"]] == KEYS[3 * 130 + 5:3 * 130 + 10]
    raw = base64.urlsafe_b64decode(page["next"])
    for bad, listed in [(base64.urlsafe_b64encode(b"p03/f9/k00\x00").decode(), path),  # a plain position
                        (base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode(), path),
                        (page["next"], f"/v1/s3/buckets/{many}/objects?prefix=p0&max_keys=5"),
                        (page["next"], f"{path}&delimiter=/")]:
        status, problem = api(gateway.node, "GET", f"{listed}&start={quote(bad)}")
        assert status == 400 and problem["code"] == "s3-error", (bad, problem)
        assert "continuation token" in problem["detail"], problem
