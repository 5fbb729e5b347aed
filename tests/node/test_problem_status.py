"""Errors that carry their own HTTP status keep it (found by bench/api_fuzz.py: a bad S3 continuation
token was a 500 instead of the 400 its error names)."""

from __future__ import annotations

from xsc import errors
from xsc.client.sync import error_from_problem
from xsc.node.problems import problem_from_error, status_of
from xsc.node.appkeys import NODE


def test_an_s3_error_answers_with_its_own_status():
    assert status_of(errors.S3Error("bad token", s3_code="InvalidArgument", status=400)) == 400
    assert status_of(errors.S3Error("no", s3_code="AccessDenied")) == 403


def test_a_node_stopping_is_an_error_of_its_own_503_node_stopping_on_the_wire_and_back():
    """Storage refuses work with it as compute does: it is no compute error, nor a compute-busy."""
    stopping = errors.NodeStopping("this node is stopping: it takes no new work", hint="place it on another provider")
    assert type(stopping).__mro__[1:] == (errors.XscError, Exception, BaseException, object)
    answer = problem_from_error(stopping)
    assert (status_of(stopping), answer.status) == (503, 503)
    back = error_from_problem(answer.status, answer.body)
    assert type(back) is errors.NodeStopping and back.code == "node-stopping" and back.hint == stopping.hint


async def test_a_bad_continuation_token_is_a_400_problem(node):
    response = await node.get("/v1/s3/buckets/photos/objects", params={"start": "not base64!"})
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == "s3-error" and "continuation token" in body["detail"]


async def test_deeply_nested_json_is_a_400_problem_and_the_node_keeps_serving(node) -> None:
    """100,000 nested arrays (a 500 before: the parser's recursion) on the user API and on a signed peer route."""
    from xsc.identity import Identity, sign_request

    from tests.support.attacks import DEEP_JSON as deep

    for path in ("/v1/market/recognize", "/v1/peers"):
        response = await node.post(path, data=deep, headers={"Content-Type": "application/json"})
        problem = await response.json()
        assert response.status == 400 and problem["status"] == 400 and "nest" in problem["detail"], problem
    headers = {**sign_request(Identity.generate(), "POST", "/v1/peer/market", deep,
                              receiver=node.app[NODE].peers.identity.id), "Content-Type": "application/json"}
    response = await node.post("/v1/peer/market", data=deep, headers=headers)
    problem = await response.json()
    assert response.status == 400 and "nest" in problem["detail"], problem
    response = await node.get("/health")
    assert response.status == 200
    response = await node.post("/v1/store/files", data=b"still serving" * 100)
    assert response.status == 201, await response.text()


async def test_a_timestamp_header_in_other_digits_is_a_400_problem(node) -> None:
    """`²` is a digit to str.isdigit() and not to int(): a bad request (400), never a 500 or a 401."""
    from xsc.identity import HEADER_TIMESTAMP, Identity, sign_request

    body = b'{"nonce": "' + b"ab" * 16 + b'"}'
    for stamp in ("²", "１２３", "12²"):
        headers = {**sign_request(Identity.generate(), "POST", "/v1/peer/challenge", body,
                                  receiver=node.app[NODE].peers.identity.id), HEADER_TIMESTAMP: stamp,
                   "Content-Type": "application/json"}
        response = await node.post("/v1/peer/challenge", data=body, headers=headers)
        problem = await response.json()
        assert response.status == 400 and problem["code"] == "malformed-header", problem
        assert "ASCII digits" in problem["detail"]
    assert (await node.get("/health")).status == 200


async def test_the_log_names_a_capability_in_a_failed_requests_path_by_its_prefix_only(node, monkeypatch,
                                                                                       caplog) -> None:
    """A capability reads its file: the node's log, which an operator pastes into a bug report, shows its first 24
    characters, as every other line that names a file does."""
    import logging
    import os

    import plyvel

    response = await node.post("/v1/store/files", data=os.urandom(1000))
    cap = (await response.json())["capability"]

    async def broken(cap):
        raise plyvel.CorruptionError(b"Corruption: bad block")

    monkeypatch.setattr(node.app[NODE].storage, "check", broken)
    with caplog.at_level(logging.INFO, logger="xsc.node.problems"):
        answer = await node.get(f"/v1/store/files/{cap}/check")
    assert answer.status == 500
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "xsc.node.problems")
    assert f"GET /v1/store/files/{cap[:24]}…/check" in logged and cap not in logged, logged
