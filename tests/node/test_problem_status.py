"""Errors that carry their own HTTP status keep it (found by bench/api_fuzz.py: a bad S3 continuation
token was a 500 instead of the 400 its error names)."""

from __future__ import annotations

from xsc import errors
from xsc.node.problems import status_of


def test_an_s3_error_answers_with_its_own_status():
    assert status_of(errors.S3Error("bad token", s3_code="InvalidArgument", status=400)) == 400
    assert status_of(errors.S3Error("no", s3_code="AccessDenied")) == 403


async def test_a_bad_continuation_token_is_a_400_problem(node):
    response = await node.get("/v1/s3/buckets/photos/objects", params={"start": "not base64!"})
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == "s3-error" and "continuation token" in body["detail"]
