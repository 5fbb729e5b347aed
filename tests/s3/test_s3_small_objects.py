"""A small object stored and recorded in one request (`POST /v1/s3/buckets/{bucket}/objects`, what the S3 front
sends for a PutObject of at most SMALL_OBJECT bytes), and several in one (`POST /v1/s3/objects`, what it sends
under load): the bucket is checked before anything is stored, the S3 user pays for its file, each object of a
group is answered as if alone, and every refusal leaves no file behind."""

from __future__ import annotations

import hashlib

import pytest

from xsc import codec, keys
from xsc.node import DB
from xsc.storage import Capability
from xsc.buckets.core.names import MAX_RECORD, SMALL_OBJECT
from xsc.errors import NodeCreditExhausted
from xsc.node.appkeys import NODE
from xsc.s3.core import xml
from xsc.buckets.objects import MAX_GROUP_BYTES, MAX_GROUP_OBJECTS, SmallPut, group_body

from tests.support.writes import record_synced_writes

RECORD = {"etag": "e", "content_type": "text/plain", "metadata": {"colour": "blue"}, "headers": {}}


async def _put(node, bucket: str, key: str, body: bytes, user: str = "xsc", **params):
    response = await node.post(f"/v1/s3/buckets/{bucket}/objects", params={"key": key, "user": user, **params},
                               data=body, headers={"Content-Type": "application/octet-stream"})
    return response.status, await response.json()


async def _files(node) -> list[dict]:
    return (await (await node.get("/v1/store/files")).json())["files"]


async def _bucket(node, name: str, user: str = "xsc") -> None:
    assert (await node.put(f"/v1/s3/buckets/{name}", params={"user": user})).status == 201


async def test_a_small_object_is_stored_recorded_and_read_back(node) -> None:
    await _bucket(node, "small")
    data = b"x" * 1024
    status, answer = await _put(node, "small", "a/b.txt", codec.framed(RECORD, data), name="front-mark")
    assert status == 201 and answer["garbage"] == []
    record = await (await node.get("/v1/s3/buckets/small/object", params={"key": "a/b.txt"})).json()
    assert record["parts"] == [{"cap": answer["capability"], "size": 1024}]
    assert record["metadata"] == {"colour": "blue"} and record["content_type"] == "text/plain"
    assert await (await node.get(f"/v1/store/files/{answer['capability']}")).read() == data
    assert [f["name"] for f in await _files(node)] == ["front-mark"]
    status, again = await _put(node, "small", "a/b.txt", codec.framed(RECORD, b"y"))
    assert status == 201 and again["garbage"] == [answer["capability"]]  # the replaced object's file


async def test_the_node_s_own_small_object_is_recorded_in_the_write_that_publishes_its_file(node, monkeypatch) -> None:
    await _bucket(node, "one-write")
    synced = record_synced_writes(monkeypatch)
    status, answer = await _put(node, "one-write", "k", codec.framed(RECORD, b"data"))
    assert status == 201 and answer["garbage"] == []
    si = Capability.parse(answer["capability"]).storage_index
    assert [keys_ for keys_ in synced if keys.file(si) in keys_] == [keys_ for keys_ in synced
                                                                    if keys.object_key("one-write", "k") in keys_]
    assert node.app[NODE].s3_objects.records.groups == 0  # no write of its own for the record
    status, again = await _put(node, "one-write", "k", codec.framed(RECORD, b"more"))
    assert status == 201 and again["garbage"] == [answer["capability"]]
    assert node.app[DB].get(keys.object_garbage(answer["capability"])) is not None  # marked in the same write


async def test_a_small_object_whose_bucket_went_while_it_was_stored_is_refused_and_its_file_marked(node,
                                                                                               monkeypatch) -> None:
    await _bucket(node, "going")
    files, index = node.app[NODE].s3_objects.files, node.app[NODE].s3_objects.index
    put_many = files.put_many

    async def bucket_goes_first(*args, **kwargs):
        index.db.delete(keys.object_bucket("going"))  # deleted after the write check, before the file's write
        return await put_many(*args, **kwargs)

    monkeypatch.setattr(files, "put_many", bucket_goes_first)
    status, answer = await _put(node, "going", "k", codec.framed(RECORD, b"data"), name="mark-going")
    assert status == 404 and answer["code"] == "no-such-bucket"
    (stored,) = await _files(node)
    assert stored["name"] == "mark-going" and node.app[DB].get(keys.object_garbage(stored["capability"])) == b""


async def test_the_largest_small_object_fits_the_nodes_body_limit(node) -> None:
    await _bucket(node, "largest")
    data = hashlib.sha256(b"seed").digest() * (SMALL_OBJECT // 32) + b"z" * (SMALL_OBJECT % 32)
    status, answer = await _put(node, "largest", "k", codec.framed(RECORD, data))
    assert status == 201, answer
    assert await (await node.get(f"/v1/store/files/{answer['capability']}")).read() == data


@pytest.mark.parametrize("body, code", [
    (b"", "invalid-argument"),
    (b"\x00\x00\x00\x09not json!", "invalid-argument"),
    (b"\x00\x00\x00\x02[]", "invalid-argument"),
    ((MAX_RECORD + 1).to_bytes(4, "big") + b"{}", "invalid-argument"),
    (b"\x00\x00\x00\x05[[[[[" + b"data", "invalid-argument"),
    (codec.framed({**RECORD, "metadata": {"k": 1}}, b"data"), "invalid-argument"),
    (codec.framed({"content_type": "text/plain"}, b"data"), "invalid-argument"),  # no etag
])
async def test_a_body_that_is_not_a_small_object_is_400_and_stores_nothing(node, body, code) -> None:
    await _bucket(node, "bad")
    status, problem = await _put(node, "bad", "k", body)
    assert (status, problem["code"]) == (400, code), problem
    assert await _files(node) == []


async def test_a_body_over_the_limit_is_refused_from_its_length(node) -> None:
    await _bucket(node, "over")
    status, problem = await _put(node, "over", "k", b"\x00" * (4 + MAX_RECORD + SMALL_OBJECT + 1))
    assert status == 413 and problem["code"] == "payload-too-large"
    status, problem = await _put(node, "over", "k", codec.framed(RECORD, b"x" * (SMALL_OBJECT + 100)))
    assert status == 400 and "at most" in problem["detail"]  # within the body limit, but the object is too long
    assert await _files(node) == []


async def test_a_body_without_its_length_is_refused(node) -> None:
    await _bucket(node, "chunked")

    async def chunks():
        yield codec.framed(RECORD, b"data")

    response = await node.post("/v1/s3/buckets/chunked/objects", params={"key": "k"}, data=chunks())
    assert response.status == 400 and "Content-Length" in (await response.json())["detail"]
    assert await _files(node) == []


async def test_no_bucket_or_no_write_access_stores_nothing(node) -> None:
    status, problem = await _put(node, "missing", "k", codec.framed(RECORD, b"data"))
    assert status == 404 and problem["code"] == "no-such-bucket"
    await _bucket(node, "anas", user="ana")
    status, problem = await _put(node, "anas", "k", codec.framed(RECORD, b"data"), user="bob")
    assert status == 403
    assert await _files(node) == []


async def test_a_user_whose_account_cannot_pay_is_refused_and_its_file_removed(node) -> None:
    await _bucket(node, "broke", user="cleo")
    status, problem = await _put(node, "broke", "k", codec.framed(RECORD, b"d" * 4096), user="cleo")
    assert status == 402 and problem["code"] == "insufficient-credit", problem
    assert "xsc s3 fund cleo" in problem["detail"]
    assert await _files(node) == []
    response = await node.get("/v1/s3/buckets/broke/object", params={"key": "k", "user": "cleo"})
    assert response.status == 404


async def _fund(node, user: str, amount: int) -> tuple[int, dict]:
    response = await node.post(f"/v1/s3/accounts/{user}/fund", json={"amount": amount})
    return response.status, await response.json()


async def test_funding_keeps_the_credit_the_nodes_account_pays_every_puts_deals_with(node) -> None:
    """The node's account pays every put's deals, its users' too: funding that would leave it less than
    `ledger.low_balance` percent of its credit (10 of 100 credits) for them is refused, naming the most it may fund.
    A refused funding leaves the user unnoted: the node's users are those it funded (and owners, grantees)."""
    assert (await _fund(node, "ana", 5_000_000))[0] == 200
    status, problem = await _fund(node, "bob", 90_000_000)
    assert (status, problem["code"]) == (402, "insufficient-credit"), problem
    assert problem["hint"] == "fund at most 85.000000: xsc s3 fund bob 85.000000", problem
    assert "every put through the S3 front would be refused" in problem["detail"], problem
    assert (await _fund(node, "cid", 0))[0] == 400
    listed = await (await node.get("/v1/s3/accounts")).json()
    assert [u["user"] for u in listed["users"]] == ["ana"], listed
    assert (await _fund(node, "bob", 85_000_000))[0] == 200
    status, problem = await _fund(node, "bob", 1)
    assert status == 402 and "xsc config set ledger.credit_limit" in problem["hint"], problem


async def test_a_put_the_nodes_own_account_cannot_pay_for_says_what_its_operator_must_do(node) -> None:
    """Every put's deals are paid by the node's account, a user's too: once its credit is spent, the refusal is the
    node's (503 node-credit-exhausted, the fix named), not the user's, and nothing is stored."""
    assert (await _fund(node, "ana", 5_000_000))[0] == 200
    accounts = node.app[NODE].s3_accounts
    left = accounts.ledger.account_view(accounts.owner.public_key)["available"]
    await accounts.ledger.settle(accounts.owner, accounts.account("elsewhere"), left, {}, "spent elsewhere")
    for user in ("ana", "xsc"):
        await _bucket(node, f"spent-{user}", user=user)
        status, problem = await _put(node, f"spent-{user}", "k", codec.framed(RECORD, b"d" * 4096), user=user)
        assert (status, problem["code"]) == (503, "node-credit-exhausted"), problem
        assert "node's own account" in problem["detail"] and "ledger.credit_limit" in problem["detail"], problem
    assert await _files(node) == []
    assert xml.s3_code_of(NodeCreditExhausted("spent")) == ("AccountProblem", 403)  # S3's, and not retried


def _node_requests(gateway) -> dict[str, float]:
    """The node's answered requests by method (its /metrics, which anyone may read)."""
    import re
    import urllib.request

    text = urllib.request.urlopen(gateway.node.url + "/metrics").read().decode()
    counts: dict[str, float] = {}
    for method, value in re.findall(r'^xsc_http_requests_total\{method="(\w+)",status="\d+"\} (\S+)$', text, re.M):
        counts[method] = counts.get(method, 0) + float(value)
    return counts


@pytest.mark.slow
def test_a_small_put_object_through_the_front_is_one_request_of_the_nodes_and_a_large_one_streams(gateway) -> None:
    s3 = gateway.client()
    s3.create_bucket(Bucket="one-request")
    before = _node_requests(gateway)
    s3.put_object(Bucket="one-request", Key="small", Body=b"s" * 1024, Metadata={"k": "v"})
    after = _node_requests(gateway)
    changed = {m: after[m] - before.get(m, 0) for m in after if after[m] != before.get(m, 0)}
    assert changed == {"POST": 1, "GET": 1}  # the put, and the first reading of /metrics
    got = s3.get_object(Bucket="one-request", Key="small")
    assert got["Body"].read() == b"s" * 1024 and got["Metadata"] == {"k": "v"}
    assert got["ETag"] == '"' + hashlib.md5(b"s" * 1024).hexdigest() + '"'
    large = b"L" * (SMALL_OBJECT + 1)
    s3.put_object(Bucket="one-request", Key="large", Body=large)
    assert s3.get_object(Bucket="one-request", Key="large")["Body"].read() == large


async def test_a_record_nested_past_the_parsers_depth_is_400(node) -> None:
    await _bucket(node, "deep")
    head = b"[" * 60_000
    status, problem = await _put(node, "deep", "k", len(head).to_bytes(4, "big") + head + b"data")
    assert (status, problem["code"]) == (400, "invalid-argument")


# --- a group of small objects in one request (POST /v1/s3/objects: what the front sends under load) ----------
def _group(*objects: tuple[str, str, str, bytes]) -> bytes:
    return group_body([SmallPut(bucket, key, user, f"mark-{key}", RECORD, data) for bucket, key, user, data in objects])


async def _put_group(node, body: bytes) -> tuple[int, dict]:
    response = await node.post("/v1/s3/objects", data=body, headers={"Content-Type": "application/octet-stream"})
    return response.status, await response.json()


async def test_each_object_of_a_group_is_stored_recorded_and_answered_as_if_alone(node) -> None:
    await _bucket(node, "grouped")
    await _bucket(node, "anas-group", user="ana")
    status, answer = await _put_group(node, _group(("grouped", "one", "xsc", b"1" * 100),
                                                    ("missing", "two", "xsc", b"2"),
                                                    ("anas-group", "three", "bob", b"3"),
                                                    ("grouped", "four", "xsc", b"")))
    assert status == 200
    results = answer["results"]
    assert [r["status"] for r in results] == [201, 404, 403, 201]
    assert results[1]["problem"]["code"] == "no-such-bucket" and results[2]["problem"]["code"] == "forbidden"
    for key, result, data in (("one", results[0], b"1" * 100), ("four", results[3], b"")):
        record = await (await node.get("/v1/s3/buckets/grouped/object", params={"key": key})).json()
        assert record["parts"] == [{"cap": result["answer"]["capability"], "size": len(data)}]
        assert await (await node.get(f"/v1/store/files/{result['answer']['capability']}")).read() == data
    assert sorted(f["name"] for f in await _files(node)) == ["mark-four", "mark-one"]  # the refused stored nothing


async def test_a_group_reads_each_bucket_s_record_once_and_answers_each_refusal_alone(node, monkeypatch) -> None:
    await _bucket(node, "read-once")
    await _bucket(node, "bobs-once", user="bob")
    index = node.app[NODE].s3_objects.index
    asked: list[tuple[str, str | None, str]] = []
    allow = index.allow

    def counted(bucket: str, user: str | None, need: str) -> dict:
        asked.append((bucket, user, need))
        return allow(bucket, user, need)

    monkeypatch.setattr(index, "allow", counted)
    status, answer = await _put_group(node, _group(("read-once", "a", "xsc", b"a"), ("gone", "b", "xsc", b"b"),
                                                    ("read-once", "c", "xsc", b"c"), ("gone", "d", "xsc", b"d"),
                                                    ("bobs-once", "e", "ana", b"e"), ("read-once", "f", "xsc", b"f"),
                                                    ("bobs-once", "g", "bob", b"g")))
    assert status == 200
    # bob may write his bucket (checked once, for ana too), but his account holds nothing to pay with
    assert [r["status"] for r in answer["results"]] == [201, 404, 201, 404, 403, 201, 402]
    assert sorted(asked) == [("bobs-once", "ana", "write"), ("bobs-once", "bob", "write"), ("gone", "xsc", "write"),
                             ("read-once", "xsc", "write")]
    assert answer["results"][1]["problem"] == answer["results"][3]["problem"]  # each refused as if it came alone
    assert sorted(f["name"] for f in await _files(node)) == ["mark-a", "mark-c", "mark-f"]


async def test_a_fault_of_the_node_fails_only_its_object_of_a_group(node, monkeypatch) -> None:
    await _bucket(node, "faulty")
    gateway = node.app[NODE].s3_objects.files.gateway
    put = gateway.put

    async def failing(read, size, name, *args, **kwargs):
        if name == "mark-bad":
            raise RuntimeError("the disk said no")
        return await put(read, size, name, *args, **kwargs)

    monkeypatch.setattr(gateway, "put", failing)
    status, answer = await _put_group(node, _group(("faulty", "bad", "xsc", b"b"), ("faulty", "good", "xsc", b"g")))
    assert status == 200
    bad, good = answer["results"]
    assert bad["status"] == 500 and "see its log" in bad["problem"]["detail"], bad
    assert good["status"] == 201
    assert [f["name"] for f in await _files(node)] == ["mark-good"]


async def test_a_users_small_object_whose_grant_is_revoked_as_its_file_is_stored_is_refused_and_not_recorded(
        node, monkeypatch) -> None:
    """The node judges a user's access to the bucket before it stores a small object, and again in the write that
    records it: a grant revoked while the file was being stored refuses the object (403), its file marked garbage
    in the refusal's own write and named for the front to remove, and no object is there."""
    await _bucket(node, "race-ana", user="ana")
    assert (await node.put("/v1/s3/buckets/race-ana/grants/bob", json={"access": "write"})).status == 200
    assert (await node.post("/v1/s3/accounts/bob/fund", json={"amount": 10_000_000})).status == 200
    index = node.app[NODE].s3_objects.index
    gateway = node.app[NODE].s3_objects.files.gateway
    put = gateway.put

    async def revoked_meanwhile(read, size, name, *args, **kwargs):
        index.grant("race-ana", "bob", None)  # as the operator's `xsc s3 revoke race-ana bob` lands
        return await put(read, size, name, *args, **kwargs)

    monkeypatch.setattr(gateway, "put", revoked_meanwhile)
    status, problem = await _put(node, "race-ana", "late", codec.framed(RECORD, b"bob's"), user="bob")
    assert status == 403 and "may not write the bucket 'race-ana'" in problem["detail"], problem
    (cap,) = problem["garbage"]
    assert (await node.get("/v1/s3/buckets/race-ana/object", params={"key": "late"})).status == 404
    assert cap in index.garbage()


def _framed_head(head) -> bytes:
    return codec.framed(head, b"")


@pytest.mark.parametrize("body", [
    b"",
    b"\x00\x00\x00\x02[]",
    _framed_head({"objects": []}),
    _framed_head({"objects": [], "more": 1}),
    _group(*[("grp", f"k{i}", "xsc", b"") for i in range(MAX_GROUP_OBJECTS + 1)]),
    _framed_head({"objects": [{"bucket": "grp", "key": "k", "user": "xsc", "record": RECORD, "size": 0}]}),  # no name
    _framed_head({"objects": [{"bucket": "grp", "key": "k", "user": "xsc", "name": None, "record": RECORD,
                               "size": -1}]}),
    _framed_head({"objects": [{"bucket": "grp", "key": "k", "user": "xsc", "name": None, "record": RECORD,
                               "size": 5}]}),  # more than came
    _group(("grp", "k", "xsc", b"data")) + b"extra",  # more came than the objects hold
    _framed_head({"objects": [{"bucket": "grp", "key": "k", "user": 7, "name": None, "record": RECORD, "size": 0}]}),
    _framed_head({"objects": [{"bucket": "grp", "key": "k", "user": "xsc", "name": None, "record": [], "size": 0}]}),
    _framed_head({"objects": [{"bucket": "grp", "key": "", "user": "xsc", "name": None, "record": RECORD,
                               "size": 0}]}),
    _framed_head({"objects": [{"bucket": "grp", "key": "k", "user": "xsc", "name": None,
                               "record": {**RECORD, "metadata": {"m": "x" * MAX_RECORD}}, "size": 0}]}),
])
async def test_a_group_that_is_not_one_is_400_and_stores_nothing(node, body) -> None:
    await _bucket(node, "grp")
    status, problem = await _put_group(node, body)
    assert (status, problem["code"]) == (400, "invalid-argument"), problem
    assert await _files(node) == []


async def test_a_group_over_the_limit_is_refused_from_its_length_or_as_it_is_read(node) -> None:
    await _bucket(node, "big-group")
    status, problem = await _put_group(node, b"\x00" * (MAX_GROUP_BYTES + 1))
    assert status == 413 and problem["code"] == "payload-too-large"

    async def chunks():  # no Content-Length
        yield b"\x00" * (MAX_GROUP_BYTES + 1)

    response = await node.post("/v1/s3/objects", data=chunks())
    assert response.status == 413, await response.text()
    assert await _files(node) == []


async def test_each_object_of_a_group_counts_against_the_users_rate(node_factory) -> None:
    node = await node_factory(node={"user_rate_limit": 1})  # a burst of 2 requests
    await _bucket(node, "rated")
    status, problem = await _put_group(node, _group(*[("rated", f"k{i}", "xsc", b"x") for i in range(8)]))
    assert status == 429 and problem["code"] == "quota-exceeded", problem
    assert (await node.app[NODE].storage.files_view(None))["files"] == []  # (its API would be 429 too now)


@pytest.mark.slow
def test_small_put_objects_at_once_share_the_nodes_requests_and_each_is_answered_alone(gateway) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s3 = gateway.client(max_pool_connections=16)
    s3.create_bucket(Bucket="together")
    before = _node_requests(gateway).get("POST", 0)
    bodies = {f"k{i}": hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(64)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket="together", Key=key, Body=bodies[key]), bodies))
    posts = _node_requests(gateway)["POST"] - before
    assert posts < len(bodies), posts  # some went together
    for key, body in bodies.items():
        got = s3.get_object(Bucket="together", Key=key)
        assert got["Body"].read() == body and got["ETag"] == '"' + hashlib.md5(body).hexdigest() + '"'
    with ThreadPoolExecutor(16) as pool:  # one refused among them: it alone fails
        outcomes = list(pool.map(lambda key: _outcome(s3, "missing-bucket" if key == "k7" else "together", key),
                                 list(bodies)[:16]))
    assert outcomes == ["ok"] * 7 + ["NoSuchBucket"] + ["ok"] * 8


def _outcome(s3, bucket: str, key: str) -> str:
    from botocore.exceptions import ClientError

    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"again")
    except ClientError as err:
        return err.response["Error"]["Code"]
    return "ok"


async def test_a_users_objects_of_a_group_are_paid_each_its_own_and_refused_alone_past_its_balance(node) -> None:
    data = b"p" * 100_000
    await _bucket(node, "measure", user="cal")
    assert (await node.post("/v1/s3/accounts/cal/fund", json={"amount": 10_000_000})).status == 200
    assert (await _put(node, "measure", "k", codec.framed(RECORD, data), user="cal"))[0] == 201
    cost = 10_000_000 - (await (await node.get("/v1/s3/accounts/cal")).json())["balance"]  # one such object's
    assert cost > 1
    await _bucket(node, "paying", user="dee")
    funded = 2 * cost + cost // 2  # two objects, and half of a third
    assert (await node.post("/v1/s3/accounts/dee/fund", json={"amount": funded})).status == 200
    status, answer = await _put_group(node, _group(*[("paying", f"k{i}", "dee", data) for i in range(3)]))
    assert status == 200
    assert [r["status"] for r in answer["results"]] == [201, 201, 402], answer
    assert "xsc s3 fund dee" in answer["results"][2]["problem"]["detail"]
    assert (await (await node.get("/v1/s3/accounts/dee")).json())["balance"] == cost // 2
    stored = {f["name"] for f in await _files(node)}
    assert {"mark-k0", "mark-k1"} <= stored and "mark-k2" not in stored  # the refused object's file is removed
    accounts = node.app[NODE].s3_accounts
    entries = await accounts.ledger.history.entries(accounts.account("dee").public_key, 100)
    assert sorted(e["amount"] for e in entries if e["job"].startswith("s3:put:")) == [cost, cost]  # each its own
